package nat

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

// udpClient is a loopback socket for talking to a server by hand.
type udpClient struct {
	t    testing.TB
	conn net.PacketConn
}

func newUDPClient(t testing.TB) *udpClient {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &udpClient{t: t, conn: c}
}

func (c *udpClient) addr() netip.AddrPort { return addrPortOf(c.conn.LocalAddr()) }

func (c *udpClient) send(dst netip.AddrPort, pkt []byte) {
	c.t.Helper()
	if _, err := c.conn.WriteTo(pkt, udpAddr(dst)); err != nil {
		c.t.Fatal(err)
	}
}

// recv waits up to d for a datagram; ok is false on timeout.
func (c *udpClient) recv(d time.Duration) (b []byte, from netip.AddrPort, ok bool) {
	c.t.Helper()
	buf := make([]byte, 2048)
	_ = c.conn.SetReadDeadline(time.Now().Add(d))
	n, a, err := c.conn.ReadFrom(buf)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return nil, netip.AddrPort{}, false
		}
		c.t.Fatal(err)
	}
	return buf[:n], addrPortOf(a), true
}

func request(change uint32, extra ...stun.AttrType) ([]byte, [stun.TransactionIDSize]byte) {
	var m stun.Message
	tx := stun.NewTransactionID()
	encodeBindingRequest(&m, bindingRequest{tx: tx, change: change, hasChange: change != 0, unknown: extra})
	return append([]byte(nil), m.Raw...), tx
}

func twoIPServer(t testing.TB) *Server {
	return startServer(t, ServerConfig{
		Primary:   netip.AddrPortFrom(loopback1, 0),
		Alternate: netip.AddrPortFrom(loopback2, 0),
	})
}

func TestServerChangeRequest(t *testing.T) {
	s := twoIPServer(t)
	a := s.Addrs()
	if !s.CanChangeIP() || !s.CanChangePort() {
		t.Fatalf("two-IP server: change IP %v, port %v", s.CanChangeIP(), s.CanChangePort())
	}
	if a.ChangeIP.Port() != a.Primary.Port() || a.ChangeBoth.Port() != a.ChangePort.Port() ||
		a.ChangePort.Addr() != loopback1 || a.ChangeBoth.Addr() != loopback2 {
		t.Fatalf("addresses do not form the RFC 5780 square: %+v", a)
	}
	tests := []struct {
		name   string
		to     netip.AddrPort
		change uint32
		from   netip.AddrPort // expected source of the answer
		other  netip.AddrPort // expected OTHER-ADDRESS
	}{
		{"plain", a.Primary, 0, a.Primary, a.ChangeBoth},
		{"change port", a.Primary, changePortFlag, a.ChangePort, a.ChangeBoth},
		{"change IP", a.Primary, changeIPFlag, a.ChangeIP, a.ChangeBoth},
		{"change both", a.Primary, changeIPFlag | changePortFlag, a.ChangeBoth, a.ChangeBoth},
		{"to alternate, change both", a.ChangeBoth, changeIPFlag | changePortFlag, a.Primary, a.Primary},
		{"to IP2:P1, change port", a.ChangeIP, changePortFlag, a.ChangeBoth, a.ChangePort},
		{"to IP1:P2, plain", a.ChangePort, 0, a.ChangePort, a.ChangeIP},
	}
	c := newUDPClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pkt, tx := request(tc.change)
			c.send(tc.to, pkt)
			b, from, ok := c.recv(2 * time.Second)
			if !ok {
				t.Fatal("no answer")
			}
			var m stun.Message
			r, err := parseBindingResponse(&m, b)
			if err != nil {
				t.Fatal(err)
			}
			if !r.success || r.tx != tx {
				t.Fatalf("got success=%v tx match=%v code=%d", r.success, r.tx == tx, r.code)
			}
			if from != tc.from || r.origin != tc.from {
				t.Errorf("answer from %s with RESPONSE-ORIGIN %s, want %s", from, r.origin, tc.from)
			}
			if r.mapped != c.addr() {
				t.Errorf("XOR-MAPPED-ADDRESS %s, want %s", r.mapped, c.addr())
			}
			if r.other != tc.other {
				t.Errorf("OTHER-ADDRESS %s, want %s", r.other, tc.other)
			}
		})
	}
}

func TestServerRefusals(t *testing.T) {
	oneIP := startServer(t, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	plain := startServer(t, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0), BindingOnly: true})
	if oneIP.CanChangeIP() || !oneIP.CanChangePort() || plain.CanChangePort() {
		t.Fatalf("capabilities wrong: one-IP ip=%v port=%v, plain port=%v", oneIP.CanChangeIP(), oneIP.CanChangePort(), plain.CanChangePort())
	}
	tests := []struct {
		name        string
		srv         *Server
		change      uint32
		extra       []stun.AttrType
		wantCode    int
		wantUnknown []stun.AttrType
		wantOther   netip.AddrPort
	}{
		{"one IP: change port works", oneIP, changePortFlag, nil, 0, nil, oneIP.Addrs().ChangePort},
		{"one IP: plain names IP1:P2", oneIP, 0, nil, 0, nil, oneIP.Addrs().ChangePort},
		{"one IP: change IP refused", oneIP, changeIPFlag, nil, codeUnknownAttr, []stun.AttrType{stun.AttrChangeRequest}, netip.AddrPort{}},
		{"plain: no OTHER-ADDRESS", plain, 0, nil, 0, nil, netip.AddrPort{}},
		{"plain: change port refused", plain, changePortFlag, nil, codeUnknownAttr, []stun.AttrType{stun.AttrChangeRequest}, netip.AddrPort{}},
		{"unknown required attribute", oneIP, 0, []stun.AttrType{0x7ABC, stun.AttrResponsePort}, codeUnknownAttr, []stun.AttrType{0x7ABC, stun.AttrResponsePort}, netip.AddrPort{}},
	}
	c := newUDPClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pkt, tx := request(tc.change, tc.extra...)
			c.send(tc.srv.Addrs().Primary, pkt)
			b, _, ok := c.recv(2 * time.Second)
			if !ok {
				t.Fatal("no answer")
			}
			var m stun.Message
			r, err := parseBindingResponse(&m, b)
			if err != nil {
				t.Fatal(err)
			}
			if r.tx != tx {
				t.Fatal("transaction ID not echoed")
			}
			if tc.wantCode == 0 {
				if !r.success {
					t.Fatalf("error %d %s, want success", r.code, r.reason)
				}
				if r.other != tc.wantOther {
					t.Errorf("OTHER-ADDRESS %s, want %s", r.other, tc.wantOther)
				}
				return
			}
			if r.success || r.code != tc.wantCode {
				t.Fatalf("success=%v code=%d, want error %d", r.success, r.code, tc.wantCode)
			}
			if len(r.unknown) != len(tc.wantUnknown) {
				t.Fatalf("UNKNOWN-ATTRIBUTES %v, want %v", r.unknown, tc.wantUnknown)
			}
			for i := range r.unknown {
				if r.unknown[i] != tc.wantUnknown[i] {
					t.Fatalf("UNKNOWN-ATTRIBUTES %v, want %v", r.unknown, tc.wantUnknown)
				}
			}
		})
	}
}

// TestServerDropsBadPackets sends junk and checks each is counted, gets no
// answer, and leaves the server answering.
func TestServerDropsBadPackets(t *testing.T) {
	s := startServer(t, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	good, _ := request(0)
	withFP := func(mut func([]byte)) []byte {
		b := append([]byte(nil), good...)
		mut(b)
		return b
	}
	badChange := func() []byte {
		var m stun.Message
		m.Type = stun.BindingRequest
		m.TransactionID = stun.NewTransactionID()
		m.WriteHeader()
		m.Add(stun.AttrChangeRequest, []byte{0, 0, 0, 4, 0, 0, 0, 0})
		return append([]byte(nil), m.Raw...)
	}
	fpNotLast := func() []byte {
		var m stun.Message
		m.Type = stun.BindingRequest
		m.TransactionID = stun.NewTransactionID()
		m.WriteHeader()
		_ = stun.Fingerprint.AddTo(&m)
		_ = stun.NewSoftware("x").AddTo(&m)
		return append([]byte(nil), m.Raw...)
	}
	tests := []struct {
		name    string
		pkt     []byte
		ignored bool // well-formed STUN that needs no answer
	}{
		{"empty", []byte{}, false},
		{"one byte", []byte{0}, false},
		{"header only, bad cookie", make([]byte, 20), false},
		{"not stun", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), false},
		{"rtp-like leading bits", withFP(func(b []byte) { b[0] |= 0x80 }), false},
		{"bad fingerprint", withFP(func(b []byte) { b[len(b)-1] ^= 0xFF }), false},
		{"length beyond datagram", withFP(func(b []byte) { binary.BigEndian.PutUint16(b[2:], 200) }), false},
		{"trailing bytes", append(append([]byte(nil), good...), 0, 0, 0, 0), false},
		{"length not multiple of 4", withFP(func(b []byte) { binary.BigEndian.PutUint16(b[2:], uint16(len(b)-20-1)) }), false},
		{"truncated", good[:len(good)-3], false},
		{"CHANGE-REQUEST of 8 bytes", badChange(), false},
		{"FINGERPRINT not last", fpNotLast(), false},
		{"oversize datagram", make([]byte, 1600), false},
		{"binding indication", func() []byte {
			var m stun.Message
			encodeBindingRequest(&m, bindingRequest{tx: stun.NewTransactionID(), indication: true})
			return append([]byte(nil), m.Raw...)
		}(), true},
		{"binding response", func() []byte {
			var m stun.Message
			_ = encodeBindingResponse(&m, bindingResponse{success: true, mapped: netip.MustParseAddrPort("192.0.2.1:1")})
			return append([]byte(nil), m.Raw...)
		}(), true},
		{"allocate request", func() []byte {
			m := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest), stun.Fingerprint)
			return m.Raw
		}(), true},
	}
	c := newUDPClient(t)
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Stats()
			c.send(s.Addrs().Primary, tc.pkt)
			// The server reads in order: once the good request is answered
			// the junk before it has been handled.
			pkt, tx := request(0)
			c.send(s.Addrs().Primary, pkt)
			b, _, ok := c.recv(2 * time.Second)
			if !ok {
				t.Fatal("server stopped answering")
			}
			var m stun.Message
			r, err := parseBindingResponse(&m, b)
			if err != nil || r.tx != tx {
				t.Fatalf("first answer is not for the good request (err %v): the junk was answered", err)
			}
			after := s.Stats()
			wantBad, wantIgn := uint64(1), uint64(0)
			if tc.ignored {
				wantBad, wantIgn = 0, 1
			}
			if after.BadPackets-before.BadPackets != wantBad || after.Ignored-before.Ignored != wantIgn {
				t.Errorf("bad +%d ignored +%d, want +%d +%d", after.BadPackets-before.BadPackets, after.Ignored-before.Ignored, wantBad, wantIgn)
			}
			if after.Requests-before.Requests != 1 || after.Responses-before.Responses != 1 {
				t.Errorf("requests +%d responses +%d, want +1 +1", after.Requests-before.Requests, after.Responses-before.Responses)
			}
		})
	}
}

func TestServerConfigErrors(t *testing.T) {
	v6 := netip.MustParseAddr("::1")
	tests := []struct {
		name string
		cfg  ServerConfig
	}{
		{"no primary", ServerConfig{}},
		{"same ports", ServerConfig{Primary: netip.AddrPortFrom(loopback1, 40001), Alternate: netip.AddrPortFrom(netip.Addr{}, 40001)}},
		{"mixed families", ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0), Alternate: netip.AddrPortFrom(v6, 0)}},
		{"wildcard with change-IP", ServerConfig{Primary: netip.AddrPortFrom(netip.IPv4Unspecified(), 0), Alternate: netip.AddrPortFrom(loopback2, 0)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := NewServer(tc.cfg)
			if err == nil {
				_ = s.Close()
				t.Fatal("NewServer accepted a bad config")
			}
			if !errors.Is(err, ErrBadConfig) {
				t.Fatalf("error %v is not ErrBadConfig", err)
			}
		})
	}
}

func listenUDP(t testing.TB, addr string) net.PacketConn {
	t.Helper()
	c, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestServerAdoptsConns(t *testing.T) {
	p := listenUDP(t, "127.0.0.1:0")
	pp := listenUDP(t, "127.0.0.1:0")
	port := func(c net.PacketConn) uint16 { return addrPortOf(c.LocalAddr()).Port() }
	ip := listenUDP(t, netip.AddrPortFrom(loopback2, port(p)).String())
	both := listenUDP(t, netip.AddrPortFrom(loopback2, port(pp)).String())
	s := startServer(t, ServerConfig{Conns: ServerConns{Primary: p, ChangePort: pp, ChangeIP: ip, ChangeBoth: both}})
	if !s.CanChangeIP() || s.Addrs().ChangeBoth != addrPortOf(both.LocalAddr()) {
		t.Fatalf("adopted conns not used: %+v", s.Addrs())
	}
	c := newUDPClient(t)
	pkt, _ := request(changeIPFlag | changePortFlag)
	c.send(s.Addrs().Primary, pkt)
	if _, from, ok := c.recv(2 * time.Second); !ok || from != s.Addrs().ChangeBoth {
		t.Fatalf("change-both answer ok=%v from %s, want %s", ok, from, s.Addrs().ChangeBoth)
	}

	// Inconsistent conns are refused, and closed.
	a := listenUDP(t, "127.0.0.1:0")
	b := listenUDP(t, "127.0.0.2:0") // change-port conn on another IP
	if _, err := NewServer(ServerConfig{Conns: ServerConns{Primary: a, ChangePort: b}}); !errors.Is(err, ErrBadConfig) {
		t.Fatalf("inconsistent conns: err %v, want ErrBadConfig", err)
	}
	if _, err := a.WriteTo([]byte{1}, udpAddr(netip.AddrPortFrom(loopback1, 9))); !errors.Is(err, net.ErrClosed) {
		t.Errorf("refused conn not closed: %v", err)
	}
}

func TestServerLifecycle(t *testing.T) {
	s, err := NewServer(ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Two concurrent Runs: exactly one is refused at once.
	done := make(chan error, 2)
	go func() { done <- s.Run(ctx) }()
	go func() { done <- s.Run(ctx) }()
	select {
	case err := <-done:
		if !errors.Is(err, ErrRunning) {
			t.Fatalf("second Run: %v, want ErrRunning", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("neither Run was refused")
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after cancel: %v", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not stop on cancel")
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Run after Close: %v, want ErrClosed", err)
	}
}

func TestServerCloseBeforeRun(t *testing.T) {
	s, err := NewServer(ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal("second Close:", err)
	}
}

// TestServerHandleAllocs keeps the per-request path lean.
func TestServerHandleAllocs(t *testing.T) {
	s, err := NewServer(ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	in := s.socks[0][0]
	pkt, _ := request(0)
	src := netip.MustParseAddrPort("203.0.113.7:40000")
	var h handler
	s.handle(&h, in, pkt, src) // warm the buffers
	allocs := testing.AllocsPerRun(200, func() {
		if _, resp := s.handle(&h, in, pkt, src); resp == nil {
			t.Fatal("no response")
		}
	})
	// Decoding and encoding reuse the handler's messages; pion's attribute
	// encoders keep their scratch slices on the stack.
	if allocs > 2 {
		t.Errorf("handle allocates %.0f times per request, want <= 2", allocs)
	}
	t.Logf("allocs per request: %.0f", allocs)
}
