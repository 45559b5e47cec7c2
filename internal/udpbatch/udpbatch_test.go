//go:build linux

package udpbatch

import (
	"bytes"
	"fmt"
	"net"
	"net/netip"
	"testing"
	"time"
)

var lo = netip.MustParseAddrPort("127.0.0.1:0")

func listen(t testing.TB, ap netip.AddrPort) *Conn {
	t.Helper()
	c, err := Listen(ap)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// waitTag waits on p until tag is reported.
func waitTag(t testing.TB, p *Poller, tag uint32) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		for {
			tags, err := p.Wait()
			if err != nil {
				done <- err
				return
			}
			for _, x := range tags {
				if x == tag {
					done <- nil
					return
				}
			}
		}
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("tag %d never ready", tag)
	}
}

// pollers are both kinds, for table-driven tests.
var pollers = []struct {
	name string
	new  func(int) (*Poller, error)
}{{"go-poller", NewPoller}, {"blocking", NewBlockingPoller}}

func TestBatchRoundTrip(t *testing.T) {
	for _, pk := range pollers {
		t.Run(pk.name, func(t *testing.T) { testBatchRoundTrip(t, pk.new) })
	}
}

func testBatchRoundTrip(t *testing.T, newPoller func(int) (*Poller, error)) {
	a, b := listen(t, lo), listen(t, lo)
	p, err := newPoller(16)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.Add(b, 7); err != nil {
		t.Fatal(err)
	}
	out := NewBatch(8, 64, 0, false)
	for i := range out.Msgs {
		out.Msgs[i].Buf = []byte(fmt.Sprintf("datagram %d", i))
		out.Msgs[i].Addr = b.LocalAddr()
	}
	if n, err := a.WriteBatch(out, 8); n != 8 || err != nil {
		t.Fatalf("WriteBatch: %d, %v", n, err)
	}
	waitTag(t, p, 7)
	in := NewBatch(16, 64, 4, false)
	n, err := b.ReadBatch(in)
	if err != nil || n != 8 {
		t.Fatalf("ReadBatch: %d, %v", n, err)
	}
	for i := 0; i < n; i++ {
		m := &in.Msgs[i]
		if got := string(m.Payload(in.Headroom)); got != fmt.Sprintf("datagram %d", i) || m.Addr != a.LocalAddr() {
			t.Fatalf("message %d: %q from %s", i, got, m.Addr)
		}
	}
	if n, err := b.ReadBatch(in); n != 0 || err != nil {
		t.Fatalf("empty socket: %d, %v", n, err)
	}
	if err := p.Remove(b); err != nil {
		t.Fatal(err)
	}
}

func TestDetachKeepsTheSocket(t *testing.T) {
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(lo))
	if err != nil {
		t.Fatal(err)
	}
	want := uc.LocalAddr().(*net.UDPAddr).AddrPort()
	c, err := Detach(uc)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.LocalAddr() != want {
		t.Fatalf("local %s, want %s", c.LocalAddr(), want)
	}
	if _, _, err := uc.ReadFromUDP(make([]byte, 1)); err == nil {
		t.Fatal("the original conn still reads")
	}
	a := listen(t, lo)
	if err := a.WriteTo([]byte("hi"), want); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, from, ok, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if string(buf[:n]) != "hi" || from != a.LocalAddr() {
				t.Fatalf("%q from %s", buf[:n], from)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nothing arrived")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := Detach(struct{ net.PacketConn }{}); err == nil {
		t.Fatal("Detach of a non-socket succeeded")
	}
}

// TestPktinfo: one socket bound to the wildcard speaks for many loopback
// addresses (the bench's generator does this for thousands of flows).
func TestPktinfo(t *testing.T) {
	gen := listen(t, netip.MustParseAddrPort("0.0.0.0:0"))
	if err := gen.EnablePktinfo(); err != nil {
		t.Fatal(err)
	}
	peer := listen(t, lo)
	out := NewBatch(2, 16, 0, true)
	for i, src := range []string{"127.0.0.5", "127.0.0.6"} {
		out.Msgs[i] = Msg{Buf: []byte(src), Addr: peer.LocalAddr(), Local: netip.MustParseAddr(src)}
	}
	if n, err := gen.WriteBatch(out, 2); n != 2 || err != nil {
		t.Fatalf("WriteBatch: %d %v", n, err)
	}
	in := NewBatch(4, 16, 0, false)
	got := map[string]netip.AddrPort{}
	deadline := time.Now().Add(5 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		n, err := peer.ReadBatch(in)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			got[string(in.Msgs[i].Payload(0))] = in.Msgs[i].Addr
		}
		time.Sleep(time.Millisecond)
	}
	for _, src := range []string{"127.0.0.5", "127.0.0.6"} {
		if a := got[src]; a.Addr() != netip.MustParseAddr(src) || a.Port() != gen.LocalAddr().Port() {
			t.Fatalf("datagram sent from %s arrived from %s", src, a)
		}
	}
	// And back: the wildcard socket learns which address each was sent to,
	// and when the kernel got it.
	if err := gen.EnableTimestamps(); err != nil {
		t.Fatal(err)
	}
	before := time.Now().UnixNano()
	peer.WriteTo([]byte("x"), netip.AddrPortFrom(netip.MustParseAddr("127.0.0.9"), gen.LocalAddr().Port()))
	rin := NewBatch(4, 16, 0, true)
	for time.Now().Before(deadline) {
		n, err := gen.ReadBatch(rin)
		if err != nil {
			t.Fatal(err)
		}
		if n > 0 {
			if rin.Msgs[0].Local != netip.MustParseAddr("127.0.0.9") {
				t.Fatalf("local address %s, want 127.0.0.9", rin.Msgs[0].Local)
			}
			if ts := rin.Msgs[0].Time; ts < before || ts > time.Now().UnixNano() {
				t.Fatalf("receive time %d outside [%d, now]", ts, before)
			}
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("reply never arrived")
}

func TestCloseWakesWait(t *testing.T) {
	for _, pk := range pollers {
		t.Run(pk.name, func(t *testing.T) {
			p, err := pk.new(4)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { _, err := p.Wait(); done <- err }()
			time.Sleep(10 * time.Millisecond) // let it park (the test holds either way)
			p.Close()
			select {
			case err := <-done:
				if err != ErrClosed {
					t.Fatalf("Wait after Close: %v", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Wait did not return after Close")
			}
			if err := p.Add(listen(t, lo), 1); err != ErrClosed {
				t.Fatalf("Add after Close: %v", err)
			}
			p.Close() // twice is fine
		})
	}
	c := listen(t, lo)
	c.Close()
	if err := c.WriteTo([]byte("x"), lo); err != ErrClosed {
		t.Fatalf("WriteTo after Close: %v", err)
	}
}

// TestReadWriteBatchAllocs: the per-packet calls allocate nothing.
func TestReadWriteBatchAllocs(t *testing.T) {
	a, b := listen(t, lo), listen(t, lo)
	b.SetBuffers(4<<20, 0)
	p, err := NewPoller(16)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.Add(b, 1)
	out := NewBatch(16, 200, 0, false)
	for i := range out.Msgs {
		out.Msgs[i].Buf = out.Msgs[i].Buf[:200]
		out.Msgs[i].Addr = b.LocalAddr()
	}
	in := NewBatch(16, 256, 4, false)
	payload := bytes.Repeat([]byte{1}, 160)
	allocs := testing.AllocsPerRun(200, func() {
		a.WriteBatch(out, 16)
		a.WriteTo(payload, b.LocalAddr())
		p.Wait()
		for {
			n, _ := b.ReadBatch(in)
			if n < len(in.Msgs) {
				break
			}
		}
	})
	if allocs != 0 {
		t.Fatalf("%.1f allocations per round", allocs)
	}
}

func BenchmarkBatchLoopback(b *testing.B) {
	for _, n := range []int{1, 32} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			src, dst := listen(b, lo), listen(b, lo)
			dst.SetBuffers(8<<20, 0)
			out := NewBatch(n, 160, 0, false)
			for i := range out.Msgs {
				out.Msgs[i].Buf = out.Msgs[i].Buf[:160]
				out.Msgs[i].Addr = dst.LocalAddr()
			}
			in := NewBatch(n, 256, 0, false)
			b.ReportAllocs()
			b.ResetTimer()
			got := 0
			for i := 0; i < b.N; i += n {
				src.WriteBatch(out, n)
				for {
					k, _ := dst.ReadBatch(in)
					got += k
					if k < n {
						break
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pkt")
		})
	}
}
