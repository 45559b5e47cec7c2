package supernode

import (
	"encoding/binary"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/internal/udpbatch"
)

// plane is a data plane over real loopback sockets, without pion: one
// UDP client allocation with one channel to a peer, driven by hand.
type plane struct {
	s      *Server
	d      *dataplane
	rc     *relayConn
	client *udpbatch.Conn // the TURN client's socket
	peer   *udpbatch.Conn
	in     *udpbatch.Batch // the test's reads
}

const testChannel = 0x4001

func newPlane(t testing.TB, blocking bool) *plane {
	t.Helper()
	lo := netip.MustParseAddrPort("127.0.0.1:0")
	s := &Server{cfg: Config{MaxSessionKbps: 1e9, MaxRelayMbps: 1e6}}
	lis, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo))
	if err != nil {
		t.Fatal(err)
	}
	d := newDataplane(s, lis, blocking)
	if d == nil {
		t.Skip("no data plane on this platform") // Linux has one; elsewhere pion does everything
	}
	s.dp = d
	t.Cleanup(func() { d.close(); d.lis.Close() })
	pc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo))
	if err != nil {
		t.Fatal(err)
	}
	rc := newRelayConn(s, viaUDP, pc)
	rc.sock, _ = udpbatch.Detach(pc)
	rc.pc, rc.uc = nil, nil
	rc.slow = make(chan slowPacket, 16)
	if err := d.addRelay(rc); err != nil {
		t.Fatal(err)
	}
	s.relays.add(rc.port, rc)
	t.Cleanup(func() { rc.Close() })
	p := &plane{s: s, d: d, rc: rc, in: udpbatch.NewBatch(64, 2048, 0, false)}
	for _, c := range []**udpbatch.Conn{&p.client, &p.peer} {
		if *c, err = udpbatch.Listen(lo); err != nil {
			t.Fatal(err)
		}
		(*c).SetBuffers(4<<20, 4<<20)
		t.Cleanup(func() { (*c).Close() })
	}
	d.setClient(p.client.LocalAddr(), rc)
	rc.setChannel(testChannel, p.peer.LocalAddr(), true)
	return p
}

// drain reads what c has (waiting briefly for the first), returning the count.
func (p *plane) drain(t testing.TB, c *udpbatch.Conn, want int) int {
	got := 0
	for deadline := time.Now().Add(2 * time.Second); got < want && time.Now().Before(deadline); {
		n, err := c.ReadBatch(p.in)
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	return got
}

// round sends k ChannelData messages client -> peer and k datagrams
// peer -> client through the data plane and reads them at the far ends.
func (p *plane) round(t testing.TB, out *udpbatch.Batch, k int, chk bool) {
	now := time.Now()
	for i := range k {
		out.Msgs[i].Addr = p.d.lis.LocalAddr()
	}
	p.client.WriteBatch(out, k)
	p.d.fromClients(now)
	if got := p.drain(t, p.peer, k); chk && got != k {
		t.Fatalf("client -> peer: %d of %d", got, k)
	}
	for i := range k {
		out.Msgs[i].Addr = p.rc.sock.LocalAddr()
	}
	p.peer.WriteBatch(out, k) // the peer sends the same bytes as plain datagrams
	for left := k; left > 0; {
		before := p.d.nout
		p.d.fromPeers(p.rc, now)
		left -= p.d.nout - before
		if p.d.nout == before {
			break
		}
	}
	p.d.flush()
	if got := p.drain(t, p.client, k); chk && got != k {
		t.Fatalf("peer -> client: %d of %d", got, k)
	}
}

func channelData(n int) []byte {
	b := make([]byte, 4+n)
	binary.BigEndian.PutUint16(b, testChannel)
	binary.BigEndian.PutUint16(b[2:], uint16(n))
	return b
}

// TestDataPlaneForwardsAndPads: ChannelData reaches the peer as its
// payload; a peer's datagram reaches the client as padded ChannelData.
func TestDataPlaneForwardsAndPads(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(map[bool]string{false: "go-poller", true: "blocking"}[blocking], func(t *testing.T) { testForwardsAndPads(t, blocking) })
	}
}

func testForwardsAndPads(t *testing.T, blocking bool) {
	p := newPlane(t, blocking)
	msg := channelData(161)
	msg[10] = 0xaa
	out := udpbatch.NewBatch(1, 0, 0, false)
	out.Msgs[0] = udpbatch.Msg{Buf: msg, Addr: p.d.lis.LocalAddr()}
	p.client.WriteBatch(out, 1)
	p.d.fromClients(time.Now())
	if n := p.drain(t, p.peer, 1); n != 1 || p.in.Msgs[0].N != 161 || p.in.Msgs[0].Buf[6] != 0xaa {
		t.Fatalf("peer got %d datagrams, first %d bytes", n, p.in.Msgs[0].N)
	}
	p.peer.WriteTo(msg[4:], p.rc.sock.LocalAddr())
	p.d.fromPeers(p.rc, time.Now())
	p.d.flush()
	if n := p.drain(t, p.client, 1); n != 1 {
		t.Fatal("client got nothing")
	}
	got := p.in.Msgs[0].Payload(0)
	if len(got) != 4+164 || binary.BigEndian.Uint16(got) != testChannel || binary.BigEndian.Uint16(got[2:]) != 161 || got[6+4] != 0xaa || got[165] != 0 {
		t.Fatalf("client got %d bytes: % x", len(got), got[:8])
	}
	if p.s.stats.fastUDP.Load() != 0 { // counted by run(), not by the pieces
		t.Fatal("unexpected count")
	}
}

// TestDataPlaneLoop: the loop itself, waiting in Go's poller or blocked
// on its own thread, forwards both ways and stops when closed.
func TestDataPlaneLoop(t *testing.T) {
	for _, blocking := range []bool{false, true} {
		t.Run(map[bool]string{false: "go-poller", true: "blocking"}[blocking], func(t *testing.T) {
			p := newPlane(t, blocking)
			go p.d.run()
			out := udpbatch.NewBatch(1, 0, 0, false)
			out.Msgs[0] = udpbatch.Msg{Buf: channelData(100), Addr: p.d.lis.LocalAddr()}
			p.client.WriteBatch(out, 1)
			if n := p.drain(t, p.peer, 1); n != 1 {
				t.Fatal("the peer got nothing")
			}
			p.peer.WriteTo(make([]byte, 100), p.rc.sock.LocalAddr())
			if n := p.drain(t, p.client, 1); n != 1 {
				t.Fatal("the client got nothing")
			}
			testutil.Eventually(t, 5*time.Second, "both counted", func() bool { return p.s.stats.fastUDP.Load() == 2 })
			p.d.close()
			select {
			case <-p.d.done:
			case <-time.After(5 * time.Second):
				t.Fatal("the loop did not stop")
			}
		})
	}
}

// TestFastPathOwnAddressOnlyRelayPorts: a channel to this supernode's own
// address carries packets only to its live relay ports (the
// CVE-2020-26262 class, on the fast path).
func TestFastPathOwnAddressOnlyRelayPorts(t *testing.T) {
	p := newPlane(t, false)
	ch := p.rc.chans.Load().byNum[testChannel]
	own := *ch
	own.ownOnly = true
	p.rc.sendToPeer([]byte("not a relay port"), &own, time.Now())
	if p.s.stats.deniedPackets.Load() != 1 {
		t.Fatalf("DeniedPackets %d", p.s.stats.deniedPackets.Load())
	}
	p.s.relays.add(p.peer.LocalAddr().Port(), &relayConn{}) // now it is a relay port
	p.rc.sendToPeer([]byte("relay port"), &own, time.Now())
	if n := p.drain(t, p.peer, 1); n != 1 || string(p.in.Msgs[0].Payload(0)) != "relay port" {
		t.Fatalf("peer got %d datagrams, first %q", n, p.in.Msgs[0].Payload(0))
	}
}

// TestDataPlaneAllocs: a round of the data plane both ways allocates
// nothing.
func TestDataPlaneAllocs(t *testing.T) {
	p := newPlane(t, false)
	out := udpbatch.NewBatch(32, 0, 0, false)
	for i := range out.Msgs {
		out.Msgs[i].Buf = channelData(160)
	}
	p.round(t, out, 32, true)
	if n := testing.AllocsPerRun(100, func() { p.round(t, out, 32, false) }); n != 0 {
		t.Fatalf("%.1f allocations per round of 64 packets", n)
	}
}

// BenchmarkDataPlane: the data plane's cost per relayed packet, both
// directions in rounds of 32 (the test's own sends and reads included:
// the figure is an upper bound).
func BenchmarkDataPlane(b *testing.B) {
	p := newPlane(b, false)
	out := udpbatch.NewBatch(32, 0, 0, false)
	for i := range out.Msgs {
		out.Msgs[i].Buf = channelData(160)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += 64 {
		p.round(b, out, 32, false)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pkt")
}
