package nat

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
)

// TestDiscoverLoopback runs Discover on real sockets on 127.0.0.1, where
// there is no NAT, against each kind of server.
func TestDiscoverLoopback(t *testing.T) {
	twoIP := twoIPServer(t)
	oneIP := startServer(t, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	plain := startServer(t, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0), BindingOnly: true})

	tests := []struct {
		name          string
		srv           *Server
		listen        string
		wantFiltering proto.Behavior
		wantNotes     bool
		changeIP      bool
		changePort    bool
	}{
		{"two IPs", twoIP, "127.0.0.1:0", proto.BehaviorNone, false, true, true},
		{"two IPs, wildcard socket", twoIP, "0.0.0.0:0", proto.BehaviorNone, false, true, true},
		{"one IP: filtering EIF or ADF", oneIP, "127.0.0.1:0", proto.BehaviorUnknown, true, false, true},
		{"binding only", plain, "127.0.0.1:0", proto.BehaviorUnknown, true, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, err := Probe(context.Background(), fastClient(DiscoverConfig{
				Server:     tc.srv.Addrs().Primary.String(),
				ListenAddr: tc.listen,
			}))
			if err != nil {
				t.Fatal(err)
			}
			r := res.Report
			if r.Mapping != proto.BehaviorNone || r.Type != proto.NATNone {
				t.Errorf("mapping %q type %q, want none", r.Mapping, r.Type)
			}
			if r.Filtering != tc.wantFiltering {
				t.Errorf("filtering %q, want %q", r.Filtering, tc.wantFiltering)
			}
			if r.PublicAddr != r.LocalAddr || !strings.HasPrefix(r.PublicAddr, "127.0.0.1:") {
				t.Errorf("public %s local %s, want the same 127.0.0.1 address", r.PublicAddr, r.LocalAddr)
			}
			if r.Hairpin != "yes" || r.UDPBlocked {
				t.Errorf("hairpin %q blocked %v, want yes false", r.Hairpin, r.UDPBlocked)
			}
			if (len(res.Notes) > 0) != tc.wantNotes {
				t.Errorf("notes %q, want notes: %v", res.Notes, tc.wantNotes)
			}
			if res.ServerChangeIP != tc.changeIP || res.ServerChangePort != tc.changePort {
				t.Errorf("server change IP/port %v/%v, want %v/%v", res.ServerChangeIP, res.ServerChangePort, tc.changeIP, tc.changePort)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("report does not validate: %v", err)
			}
		})
	}
}

// TestDiscoverUDPBlocked checks both kinds of silence: a socket that never
// answers and a port with nothing behind it.
func TestDiscoverUDPBlocked(t *testing.T) {
	hole := listenUDP(t, "127.0.0.1:0")
	t.Cleanup(func() { _ = hole.Close() })
	closed := listenUDP(t, "127.0.0.1:0")
	closedAddr := addrPortOf(closed.LocalAddr())
	_ = closed.Close()

	for _, tc := range []struct {
		name string
		srv  netip.AddrPort
	}{
		{"silent server", addrPortOf(hole.LocalAddr())},
		{"server down", closedAddr},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			cfg := fastClient(DiscoverConfig{Server: tc.srv.String(), ListenAddr: "127.0.0.1:0", MaxTransmits: 3})
			r, err := Discover(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if !r.UDPBlocked || r.Type != proto.NATUDPBlocked || r.PublicAddr != "" {
				t.Errorf("got %+v, want UDP blocked", r)
			}
			if took := time.Since(start); took > 4*cfg.Timeout {
				t.Errorf("took %s, want about one Timeout (%s)", took, cfg.Timeout)
			}
		})
	}
	// The silent server got the retransmissions of RFC 5389 section 7.2.1,
	// bounded by MaxTransmits: sends at 0, 20 and 60 ms, then silence until
	// the 250 ms timeout.
	n := 0
	buf := make([]byte, 1500)
	for {
		_ = hole.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		if _, _, err := hole.ReadFrom(buf); err != nil {
			break
		}
		n++
	}
	if n != 3 {
		t.Errorf("silent server got %d transmissions, want 3", n)
	}
}

func TestDiscoverConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  DiscoverConfig
		want error
	}{
		{"no server", DiscoverConfig{}, ErrBadConfig},
		{"port zero", DiscoverConfig{Server: "127.0.0.1:0"}, ErrBadConfig},
		{"bad port", DiscoverConfig{Server: "127.0.0.1:99999"}, ErrBadConfig},
		{"bad host", DiscoverConfig{Server: "a b:3478"}, ErrBadConfig},
		{"negative timeout", DiscoverConfig{Server: "127.0.0.1:3478", Timeout: -1}, ErrBadConfig},
		{"unresolvable", DiscoverConfig{Server: "stun.invalid:3478", Resolve: func(context.Context, string) ([]netip.Addr, error) {
			return nil, errors.New("no such host")
		}}, ErrResolve},
		{"resolves to nothing", DiscoverConfig{Server: "stun.example:3478", Resolve: func(context.Context, string) ([]netip.Addr, error) {
			return nil, nil
		}}, ErrResolve},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Discover(context.Background(), tc.cfg); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestResolveServer(t *testing.T) {
	resolve := func(_ context.Context, h string) ([]netip.Addr, error) {
		if h != "stun.test" {
			return nil, errors.New("unexpected host " + h)
		}
		return []netip.Addr{netip.MustParseAddr("::1"), netip.MustParseAddr("127.0.0.9")}, nil
	}
	for _, tc := range []struct{ in, want string }{
		{"127.0.0.1:3478", "127.0.0.1:3478"},
		{"127.0.0.1", "127.0.0.1:3478"},
		{"[::1]:5000", "[::1]:5000"},
		{"[::ffff:127.0.0.1]:5000", "127.0.0.1:5000"},
		{"stun:127.0.0.1:19302", "127.0.0.1:19302"},
		{"stun.test:3479", "127.0.0.9:3479"},
		{"stun:stun.test", "127.0.0.9:3478"},
	} {
		got, err := resolveServer(context.Background(), tc.in, resolve)
		if err != nil || got.String() != tc.want {
			t.Errorf("resolveServer(%q) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestDiscoverCancel checks that cancelling ctx ends a probe stuck waiting
// for answers, and that a caller's socket is left usable.
func TestDiscoverCancel(t *testing.T) {
	hole := listenUDP(t, "127.0.0.1:0")
	defer hole.Close()
	conn := listenUDP(t, "127.0.0.1:0")
	defer conn.Close()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := Discover(ctx, DiscoverConfig{Server: hole.LocalAddr().String(), Conn: conn, RTO: time.Second, Timeout: time.Minute})
		errc <- err
	}()
	// Wait for the first request to reach the silent server: Discover is
	// then waiting for an answer that never comes.
	_ = hole.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, _, err := hole.ReadFrom(make([]byte, 1500)); err != nil {
		t.Fatal(err)
	}
	cancel()
	select {
	case err := <-errc:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("err %v, want context.Canceled", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Discover did not return after cancel")
	}
	// The caller's socket still works and has no stale deadline.
	if _, err := conn.WriteTo([]byte("x"), conn.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 16)
	if _, _, err := conn.ReadFrom(buf); err != nil {
		t.Fatalf("caller's socket unusable after Discover: %v", err)
	}
}

// TestDiscoverIgnoresStrayPackets feeds the probing socket junk and
// foreign STUN messages while it waits; they must not confuse it.
func TestDiscoverIgnoresStrayPackets(t *testing.T) {
	srv := twoIPServer(t)
	conn := listenUDP(t, "127.0.0.1:0")
	defer conn.Close()
	spam := listenUDP(t, "127.0.0.1:0")
	defer spam.Close()
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		stray, _ := request(0)
		junk := [][]byte{[]byte("hello"), make([]byte, 20), stray}
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = spam.WriteTo(junk[i%len(junk)], conn.LocalAddr())
			time.Sleep(time.Millisecond)
		}
	}()
	r, err := Discover(context.Background(), fastClient(DiscoverConfig{Server: srv.Addrs().Primary.String(), Conn: conn}))
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	if r.Type != proto.NATNone || r.Filtering != proto.BehaviorNone {
		t.Fatalf("got %+v", r)
	}
}
