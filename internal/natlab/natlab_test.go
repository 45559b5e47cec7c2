package natlab

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// udpPeer is a UDP socket in some namespace whose incoming packets are
// collected on a channel.
type udpPeer struct {
	pc net.PacketConn
	in chan udpMsg
}

type udpMsg struct {
	data string
	from netip.AddrPort
}

func listenUDP(t *testing.T, h *Host, addr string) *udpPeer {
	t.Helper()
	pc, err := h.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatalf("listen on %s: %v", h, err)
	}
	p := &udpPeer{pc: pc, in: make(chan udpMsg, 64)}
	serveUDP(t, pc, func(b []byte, from *net.UDPAddr) {
		select {
		case p.in <- udpMsg{string(b), from.AddrPort()}:
		default: // test is not reading; drop
		}
	})
	return p
}

// serveUDP calls handle for each packet pc receives (the buffer is reused
// after handle returns) until the test ends, then closes pc.
func serveUDP(t *testing.T, pc net.PacketConn, handle func(b []byte, from *net.UDPAddr)) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			handle(buf[:n], from.(*net.UDPAddr))
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
}

func (p *udpPeer) addr() netip.AddrPort {
	return p.pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (p *udpPeer) send(t *testing.T, to netip.AddrPort, msg string) {
	t.Helper()
	if _, err := p.pc.WriteTo([]byte(msg), net.UDPAddrFromAddrPort(to)); err != nil {
		t.Fatalf("send %q to %v: %v", msg, to, err)
	}
}

// expect waits up to d for a packet whose payload is msg and returns it.
func (p *udpPeer) expect(msg string, d time.Duration) (udpMsg, bool) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	for {
		select {
		case m := <-p.in:
			if m.data == msg {
				return m, true
			}
		case <-timer.C:
			return udpMsg{}, false
		}
	}
}

// sendUntil sends msg to `to` every 50 ms until dst has it or d passes.
// Repeating makes the positive cases robust; the negative ones still see
// several packets that must all be filtered.
func sendUntil(t *testing.T, src *udpPeer, to netip.AddrPort, dst *udpPeer, msg string, d time.Duration) (udpMsg, bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		src.send(t, to, msg)
		if m, ok := dst.expect(msg, 50*time.Millisecond); ok {
			return m, true
		}
	}
	return udpMsg{}, false
}

const (
	positiveWait = 2 * time.Second
	negativeWait = 400 * time.Millisecond
)

// TestNATKinds checks each NAT kind against RFC 4787: mapping behaviour
// (section 4.1) by comparing the external address:port two servers see,
// filtering behaviour (section 5) by sending unsolicited packets from
// another port and another host, and the UDP-blocked firewall.
func TestNATKinds(t *testing.T) {
	type want struct {
		udp           bool // UDP to the internet works at all
		natted        bool // traffic leaves from the router's address
		eim           bool // same mapping for every destination (RFC 4787 4.1)
		fromOtherPort bool // known address, new port passes (EIF or ADF)
		fromOtherHost bool // a never-contacted host passes (EIF)
		tcp443, tcp80 bool // TCP connects
	}
	cases := []struct {
		kind NATKind
		want want
	}{
		{None, want{udp: true, eim: true, fromOtherPort: true, fromOtherHost: true, tcp443: true, tcp80: true}},
		{FullCone, want{udp: true, natted: true, eim: true, fromOtherPort: true, fromOtherHost: true, tcp443: true, tcp80: true}},
		{Restricted, want{udp: true, natted: true, eim: true, fromOtherPort: true, tcp443: true, tcp80: true}},
		{PortRestricted, want{udp: true, natted: true, eim: true, tcp443: true, tcp80: true}},
		{Symmetric, want{udp: true, natted: true, tcp443: true, tcp80: true}},
		{UDPBlocked, want{natted: true, tcp443: true}},
	}
	if len(cases) != len(Kinds) {
		t.Fatalf("%d cases for %d kinds", len(cases), len(Kinds))
	}

	start := time.Now()
	lab := New(t, Config{})
	a := lab.AddPublicHost("a")
	b := lab.AddPublicHost("b")
	homes := map[NATKind]*Home{}
	for _, c := range cases {
		homes[c.kind] = lab.AddHome(fmt.Sprintf("h%d", int(c.kind)), c.kind)
	}
	t.Logf("bring-up of 2 hosts + %d homes (%d namespaces): %v", len(cases), len(lab.Namespaces()), time.Since(start))

	// TCP servers on a: 443 and 80, answering with the peer address.
	for _, port := range []int{443, 80} {
		ln, err := a.Listen("tcp4", fmt.Sprintf("%s:%d", a.Addr(), port))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				fmt.Fprintf(c, "%s\n", c.RemoteAddr())
				c.Close()
			}
		}()
	}

	for _, c := range cases {
		t.Run(c.kind.String(), func(t *testing.T) {
			t.Parallel()
			home, w := homes[c.kind], c.want
			if got := home.Kind; got != c.kind {
				t.Fatalf("home kind %v, want %v", got, c.kind)
			}
			client := listenUDP(t, home.Client, ":0")
			a1 := listenUDP(t, a, a.Addr().String()+":0")
			a2 := listenUDP(t, a, a.Addr().String()+":0")
			b1 := listenUDP(t, b, b.Addr().String()+":0")

			// Outbound to a1: the mapped address a1 sees.
			seenA1, ok := sendUntil(t, client, a1.addr(), a1, "hello-a1", positiveWait)
			if ok != w.udp {
				t.Fatalf("UDP client->a1 arrived=%v, want %v", ok, w.udp)
			}
			if w.udp {
				mapped := seenA1.from
				wantAddr := home.Client.Addr()
				if w.natted {
					wantAddr = home.WAN
				}
				if mapped.Addr() != wantAddr {
					t.Errorf("a1 saw %v, want address %v", mapped, wantAddr)
				}
				if !w.natted && mapped.Port() != client.addr().Port() {
					t.Errorf("no NAT but port changed: local %v, seen %v", client.addr(), mapped)
				}
				// The reply to the mapping always comes back (conntrack).
				if _, ok := sendUntil(t, a1, mapped, client, "reply-a1", positiveWait); !ok {
					t.Fatalf("reply a1->%v did not reach the client", mapped)
				}
				// Filtering (RFC 4787 section 5), before the client has
				// sent anything to a2 or b1.
				wait := func(want bool) time.Duration {
					if want {
						return positiveWait
					}
					return negativeWait
				}
				_, got := sendUntil(t, a2, mapped, client, "unsolicited-a2", wait(w.fromOtherPort))
				if got != w.fromOtherPort {
					t.Errorf("unsolicited from same host, other port (%v): delivered=%v, want %v", a2.addr(), got, w.fromOtherPort)
				}
				_, got = sendUntil(t, b1, mapped, client, "unsolicited-b1", wait(w.fromOtherHost))
				if got != w.fromOtherHost {
					t.Errorf("unsolicited from other host (%v): delivered=%v, want %v", b1.addr(), got, w.fromOtherHost)
				}
				// Mapping (RFC 4787 section 4.1): same socket, new destinations.
				seenA2, ok := sendUntil(t, client, a2.addr(), a2, "hello-a2", positiveWait)
				if !ok {
					t.Fatalf("client->a2 lost")
				}
				seenB1, ok := sendUntil(t, client, b1.addr(), b1, "hello-b1", positiveWait)
				if !ok {
					t.Fatalf("client->b1 lost")
				}
				same := seenA2.from == mapped && seenB1.from == mapped
				if same != w.eim {
					t.Errorf("mappings a1=%v a2=%v b1=%v: endpoint-independent=%v, want %v", mapped, seenA2.from, seenB1.from, same, w.eim)
				}
				if !w.eim && seenA2.from == mapped {
					t.Errorf("symmetric NAT reused mapping %v for a new port on the same host", mapped)
				}
			} else {
				// Nothing must leak: a1 saw nothing and the client gets no answer.
				if m, ok := a1.expect("hello-a1", 100*time.Millisecond); ok {
					t.Errorf("blocked UDP still reached a1 from %v", m.from)
				}
			}

			for _, tc := range []struct {
				port int
				want bool
			}{{443, w.tcp443}, {80, w.tcp80}} {
				ctx, cancel := context.WithTimeout(context.Background(), time.Second)
				line, err := tcpHello(ctx, home.Client, netip.AddrPortFrom(a.Addr(), uint16(tc.port)))
				cancel()
				if (err == nil) != tc.want {
					t.Errorf("TCP to a:%d: err=%v, want success=%v", tc.port, err, tc.want)
				}
				if err == nil && w.natted && !strings.HasPrefix(line, home.WAN.String()+":") {
					t.Errorf("TCP to a:%d seen from %q, want %v", tc.port, line, home.WAN)
				}
			}
		})
	}
}

// tcpHello dials to from h and returns the server's first line.
func tcpHello(ctx context.Context, h *Host, to netip.AddrPort) (string, error) {
	c, err := h.DialContext(ctx, "tcp4", to.String())
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	buf := make([]byte, 128)
	n, err := c.Read(buf)
	if err != nil {
		return "", err
	}
	return string(bytes.TrimSpace(buf[:n])), nil
}

// TestRouterDropsUnsolicited checks that a NAT router's WAN answers
// nothing: a UDP probe to a closed port on it gets no ICMP error (which a
// connected socket would report as ECONNREFUSED).
func TestRouterDropsUnsolicited(t *testing.T) {
	lab := New(t, Config{})
	s := lab.AddPublicHost("s")
	home := lab.AddHome("h", PortRestricted)
	c, err := s.DialContext(context.Background(), "udp4", netip.AddrPortFrom(home.WAN, 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	buf := make([]byte, 64)
	for i := 0; i < 3; i++ {
		if _, err := c.Write([]byte("probe")); err != nil {
			t.Fatalf("write %d: %v (ICMP error came back?)", i, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(150 * time.Millisecond))
		_, err := c.Read(buf)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read %d: %v, want a timeout (silent drop)", i, err)
		}
	}
	// Control: the same probe to a public host's closed port is refused,
	// so the silence above is the router's doing.
	c2, err := home.Client.DialContext(context.Background(), "udp4", netip.AddrPortFrom(s.Addr(), 9).String())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	refused := false
	for i := 0; i < 10 && !refused; i++ {
		_, _ = c2.Write([]byte("probe"))
		_ = c2.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		_, err := c2.Read(buf)
		refused = err != nil && strings.Contains(err.Error(), "refused")
	}
	if !refused {
		t.Errorf("control probe to a closed port on a public host was not refused")
	}
}
