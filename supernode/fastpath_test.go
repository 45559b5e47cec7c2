package supernode_test

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"github.com/quic-go/quic-go"
)

// allocateQUIC makes an allocation through a relay stream whose
// ChannelData rides QUIC datagrams (what client.Client does).
func allocateQUIC(t testing.TB, info proto.SupernodeInfo) net.PacketConn {
	t.Helper()
	relay, perr := tryAllocateQUIC(t, info)
	if perr != nil {
		t.Fatalf("relay stream refused: %v", perr)
	}
	return relay
}

// tryAllocateQUIC is allocateQUIC returning the supernode's refusal.
func tryAllocateQUIC(t testing.TB, info proto.SupernodeInfo) (net.PacketConn, *proto.Error) {
	t.Helper()
	ap, _ := proto.ParseRelayAddr(info.QUIC)
	conn := quicDialWith(t, ap, info.Fingerprint, &quic.Config{EnableDatagrams: true})
	mux := relayconn.NewMux(conn, nil)
	t.Cleanup(func() { conn.CloseWithError(0, ""); <-mux.Done() }) // before quicDial's own clean-up
	r, st := hello(t, conn, &proto.RelayHello{Op: proto.RelayOpRelay, Token: info.Token, Datagrams: true})
	if !r.OK {
		return nil, r.Error
	}
	if !r.Datagrams {
		t.Fatalf("relay stream without datagrams: %+v", r)
	}
	rc := relayconn.New(st, mux, nil, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, net.TCPAddrFromAddrPort(ap))
	return turnAllocate(t, turn.NewSTUNConn(rc), info.QUIC, info.TURNUsername, info.TURNPassword), nil
}

// turnAllocate runs a pion TURN client over conn and makes one allocation.
func turnAllocate(t testing.TB, conn net.PacketConn, server, user, pass string) net.PacketConn {
	t.Helper()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: server, STUNServerAddr: server,
		Username: user, Password: pass, Conn: conn, LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { relay.Close() })
	return relay
}

// TestStreamFastPath: two QUIC clients relayed by one supernode exchange
// packets both ways over datagrams, and the supernode's fast path (not
// pion) carried them.
func TestStreamFastPath(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{AllowPeers: supernodetest.Loopback})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	a := allocateQUIC(t, signIn(t, sig.URL, "alice").list(1).Supernodes[0])
	b := allocateQUIC(t, signIn(t, sig.URL, "bob").list(1).Supernodes[0])
	exchange(t, a, b, 50)
	exchange(t, b, a, 50)
	if st := sn.Stats(); st.DatagramsIn < 50 || st.DatagramsOut < 50 {
		t.Fatalf("datagrams in %d out %d: the fast path did not carry the traffic", st.DatagramsIn, st.DatagramsOut)
	}
}

// exchange sends n packets from a to b's relayed address and waits for
// them (the first ones set up permissions and channels; to gives from a
// permission first).
func exchange(t testing.TB, from, to net.PacketConn, n int) {
	t.Helper()
	to.WriteTo([]byte{0}, from.LocalAddr())
	got := make(chan []byte, n)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			to.SetReadDeadline(time.Now().Add(3 * time.Second))
			k, _, err := to.ReadFrom(buf)
			if err != nil {
				return
			}
			select {
			case got <- append([]byte(nil), buf[:k]...):
			default:
			}
		}
	}()
	defer func() { to.SetReadDeadline(time.Now()); <-done }()
	want := bytes.Repeat([]byte{0xab}, 161) // not a multiple of 4: ChannelData padding
	deadline := time.After(10 * time.Second)
	recv := 0
	for sent := 0; recv < n; sent++ {
		from.WriteTo(want, to.LocalAddr())
		select {
		case p := <-got:
			switch {
			case len(p) == 1: // a permission-opening packet
			case !bytes.Equal(p, want):
				t.Fatalf("received %x", p)
			default:
				recv++
			}
		case <-time.After(20 * time.Millisecond):
		case <-deadline:
			t.Fatalf("%d of %d packets arrived (%d sent)", recv, n, sent)
		}
	}
}

// allocateUDP makes an allocation over the TURN UDP listener with a
// signed-in user's browser credentials (the browser path).
func allocateUDP(t testing.TB, sn *supernodetest.Supernode, u *user) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return turnAllocate(t, pc, sn.Addrs().TURNUDP.String(), u.ice[0].Username, u.ice[0].Credential)
}

// TestTURNUDPFastPath: browsers' TURN UDP clients relayed by one
// supernode, to each other and to a QUIC client, both ways: the data
// plane (not pion) carries ChannelData once channels are bound.
func TestTURNUDPFastPath(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{AllowPeers: supernodetest.Loopback})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	if !sn.Stats().FastPath {
		t.Fatal("the TURN UDP data plane is off on Linux")
	}
	a := allocateUDP(t, sn, signIn(t, sig.URL, "alice"))
	b := allocateUDP(t, sn, signIn(t, sig.URL, "bob"))
	q := allocateQUIC(t, signIn(t, sig.URL, "carol").list(1).Supernodes[0])
	exchange(t, a, b, 50)
	exchange(t, b, a, 50)
	exchange(t, a, q, 50)
	exchange(t, q, a, 50)
	if st := sn.Stats(); st.FastUDP < 200 || st.SlowDrops != 0 {
		t.Fatalf("the data plane forwarded %d packets (%d dropped before pion): %+v", st.FastUDP, st.SlowDrops, st)
	}
}
