package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

func TestICEListURL(t *testing.T) {
	tests := []struct{ in, want, err string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080/api/ice", ""},
		{"http://127.0.0.1:8080/", "http://127.0.0.1:8080/api/ice", ""},
		{"ws://127.0.0.1:8080/ws", "http://127.0.0.1:8080/api/ice", ""},
		{"wss://parley.example/ws?x=1#f", "https://parley.example/api/ice", ""},
		{"127.0.0.1:9", "http://127.0.0.1:9/api/ice", ""},
		{"[::1]:8080", "http://[::1]:8080/api/ice", ""},
		{"ftp://x/", "", "scheme"},
		{"http://", "", "no host"},
		{"http://a b/", "", "--server"},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := iceListURL(tc.in)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("iceListURL(%q) = %q, %v; want error with %q", tc.in, got, err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("iceListURL(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
			}
		})
	}
}

func TestPlanSTUN(t *testing.T) {
	ap := netip.MustParseAddrPort
	port := func(p uint16) netip.AddrPort { return netip.AddrPortFrom(netip.Addr{}, p) }
	tests := []struct {
		name     string
		listen   string
		flags    stunFlags
		primary  netip.AddrPort
		alt      netip.AddrPort
		urlHost  string
		wildcard bool
		err      string
	}{
		{name: "default from listen", listen: "127.0.0.1:8080", primary: ap("127.0.0.1:3478"), alt: port(3479), urlHost: "127.0.0.1"},
		{name: "listen port 0 picks STUN ports", listen: "127.0.0.1:0", primary: ap("127.0.0.1:0"), alt: port(0), urlHost: "127.0.0.1"},
		{name: "name resolved", listen: "localhost:8080", primary: ap("127.0.0.1:3478"), alt: port(3479), urlHost: "127.0.0.1"},
		{name: "wildcard listen", listen: ":8080", primary: ap("0.0.0.0:3478"), alt: port(3479), wildcard: true},
		{name: "wildcard with public host", listen: "0.0.0.0:8080", flags: stunFlags{publicHost: "parley.example"},
			primary: ap("0.0.0.0:3478"), alt: port(3479), urlHost: "parley.example", wildcard: true},
		{name: "second IP", listen: "127.0.0.1:8080", flags: stunFlags{addr: "127.0.0.1:5000", alt: "127.0.0.2"},
			primary: ap("127.0.0.1:5000"), alt: ap("127.0.0.2:5001"), urlHost: "127.0.0.1"},
		{name: "second IP and port", listen: "127.0.0.1:8080", flags: stunFlags{alt: "127.0.0.2:6000"},
			primary: ap("127.0.0.1:3478"), alt: ap("127.0.0.2:6000"), urlHost: "127.0.0.1"},
		{name: "alternate port only", listen: "127.0.0.1:8080", flags: stunFlags{alt: ":6000"},
			primary: ap("127.0.0.1:3478"), alt: port(6000), urlHost: "127.0.0.1"},
		{name: "ipv6", listen: "[::1]:8080", primary: ap("[::1]:3478"), alt: port(3479), urlHost: "::1"},
		{name: "bad listen", listen: "8080", err: "--listen"},
		{name: "bad stun", listen: "127.0.0.1:8080", flags: stunFlags{addr: "nope"}, err: "--stun"},
		{name: "bad stun port", listen: "127.0.0.1:8080", flags: stunFlags{addr: "127.0.0.1:99999"}, err: "bad port"},
		{name: "bad alt port", listen: "127.0.0.1:8080", flags: stunFlags{alt: "127.0.0.2:x"}, err: "bad port"},
		{name: "no room for alt port", listen: "127.0.0.1:8080", flags: stunFlags{addr: "127.0.0.1:65535"}, err: "no room"},
		{name: "wildcard cannot change IP", listen: "0.0.0.0:8080", flags: stunFlags{alt: "127.0.0.2"}, err: "specific"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.flags
			p, err := planSTUN(context.Background(), &f, tc.listen)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("planSTUN = %+v, %v; want error with %q", p, err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.cfg.Primary != tc.primary || p.cfg.Alternate != tc.alt || p.urlHost != tc.urlHost || p.wildcard != tc.wildcard {
				t.Errorf("plan primary %v alt %v host %q wildcard %v; want %v %v %q %v",
					p.cfg.Primary, p.cfg.Alternate, p.urlHost, p.wildcard, tc.primary, tc.alt, tc.urlHost, tc.wildcard)
			}
		})
	}
}

func TestSTUNURL(t *testing.T) {
	for _, tc := range []struct {
		host string
		port uint16
		want string
	}{
		{"203.0.113.2", 3478, "stun:203.0.113.2:3478"},
		{"2001:db8::1", 3478, "stun:[2001:db8::1]:3478"},
		{"parley.example", 5000, "stun:parley.example:5000"},
	} {
		if got := stunURL(tc.host, tc.port); got != tc.want {
			t.Errorf("stunURL(%q, %d) = %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
}

// TestSTUNServiceLifecycle starts the service as `parley serve` does and
// checks what it hands to clients, then that --no-stun hands out nothing.
func TestSTUNServiceLifecycle(t *testing.T) {
	log := newTestLogger(t)
	svc, err := startSTUN(context.Background(), &stunFlags{alt: "127.0.0.2"}, "127.0.0.1:0", netip.Addr{}, log, nil)
	if err != nil {
		t.Fatal(err)
	}
	a := svc.srv.Addrs()
	if !a.ChangeIP.IsValid() || a.Primary.Port() == 0 || a.ChangeIP.Addr() != netip.MustParseAddr("127.0.0.2") {
		t.Errorf("addrs %+v, want two IPs", a)
	}
	ice := svc.iceServers()("alice")
	if len(ice) != 1 || len(ice[0].URLs) != 1 || ice[0].URLs[0] != stunURL("127.0.0.1", a.Primary.Port()) {
		t.Errorf("ice servers %+v", ice)
	}
	r, err := nat.Discover(context.Background(), nat.DiscoverConfig{Server: ice[0].URLs[0], Timeout: 250e6, RTO: 20e6})
	if err != nil || r.Type != proto.NATNone {
		t.Errorf("discover through the service: %+v, %v", r, err)
	}
	if err := svc.close(); err != nil {
		t.Errorf("close: %v", err)
	}
	off, err := startSTUN(context.Background(), &stunFlags{off: true}, "127.0.0.1:0", netip.Addr{}, log, nil)
	if err != nil || off != nil || off.iceServers() != nil || off.close() != nil {
		t.Errorf("--no-stun: %v %v", off, err)
	}
}

// startLoopbackServer runs a signaling server whose ICE servers name a
// two-IP STUN service on 127.0.0.1/127.0.0.2, as `parley serve` wires it.
func startLoopbackServer(t *testing.T, withSTUN bool) *signaltest.Server {
	t.Helper()
	cfg := signal.Config{}
	if withSTUN {
		svc, err := startSTUN(context.Background(), &stunFlags{alt: "127.0.0.2"}, "127.0.0.1:0", netip.Addr{}, newTestLogger(t), nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.close() })
		cfg.ICEServers = svc.iceServers()
	}
	return signaltest.Start(t, cfg)
}

func TestNATCommandLoopback(t *testing.T) {
	srv := startLoopbackServer(t, true)
	noSTUN := startLoopbackServer(t, false)
	notParley := httptest.NewServer(http.NotFoundHandler())
	defer notParley.Close()
	tests := []struct {
		name string
		args []string
		want []string // substrings of the output
		err  string
	}{
		{"text", []string{"--server", srv.HTTP, "--no-portmap", "--timeout", "250ms"},
			[]string{"NAT type:", "none - no NAT", "port mapping: not tried"}, ""},
		{"websocket URL", []string{"--server", srv.URL, "--json", "--no-portmap", "--timeout", "250ms"},
			[]string{`"type":"none"`, `"server_change_ip":true`}, ""},
		{"explicit stun", []string{"--server", "http://127.0.0.1:1", "--stun", strings.TrimPrefix(fetchOrFail(t, srv.HTTP), "stun:"), "--json", "--no-portmap", "--timeout", "250ms"},
			[]string{`"type":"none"`}, ""},
		{"server without STUN", []string{"--server", noSTUN.HTTP}, nil, "no STUN server"},
		{"not a parley server", []string{"--server", notParley.URL}, nil, "is it a Parley server"},
		{"bad timeout", []string{"--server", srv.HTTP, "--timeout", "0s"}, nil, "--timeout"},
		{"stray argument", []string{"--server", srv.HTTP, "extra"}, nil, "unexpected"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := runNATTo(context.Background(), tc.args, &out)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err %v, want %q; output:\n%s", err, tc.err, out.String())
				}
				return
			}
			if err != nil {
				t.Fatalf("runNAT: %v", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			if strings.Contains(strings.Join(tc.args, " "), "--json") {
				var o map[string]any
				if err := json.Unmarshal(out.Bytes(), &o); err != nil {
					t.Errorf("not one JSON object: %v\n%s", err, out.String())
				}
			}
		})
	}
}

func fetchOrFail(t *testing.T, server string) string {
	t.Helper()
	u, err := fetchSTUN(context.Background(), server, nil)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func newTestLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.DiscardHandler)
}
