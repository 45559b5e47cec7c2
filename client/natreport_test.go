package client_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// startSTUN runs a two-IP RFC 5780 STUN server on 127.0.0.1 and 127.0.0.2.
func startSTUN(t *testing.T) *nat.Server {
	t.Helper()
	srv, err := nat.NewServer(nat.ServerConfig{
		Primary:   netip.MustParseAddrPort("127.0.0.1:0"),
		Alternate: netip.MustParseAddrPort("127.0.0.2:0"),
	})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-done; err != nil {
			t.Errorf("stun: %v", err)
		}
	})
	return srv
}

func stunICE(srv *nat.Server) func(string) []proto.ICEServer {
	url := "stun:" + srv.Addrs().Primary.String()
	return func(string) []proto.ICEServer {
		return []proto.ICEServer{{URLs: []string{"turn:127.0.0.1:9?transport=udp"}}, {URLs: []string{url}}}
	}
}

func natSent(e client.Event) bool {
	n, ok := e.(client.NATEvent)
	return ok && (n.Sent || n.Err != nil)
}

// fast keeps filtered probes short on loopback.
func fast(d client.NATDiscovery) *client.NATDiscovery {
	d.RTO, d.Timeout = 20*time.Millisecond, 250*time.Millisecond
	return &d
}

// dropper dials the signaling server and can cut the current connection.
type dropper struct {
	mu    sync.Mutex // guards the fields below
	conns []net.Conn
	dials int
}

func (d *dropper) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dials++
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *dropper) drop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.Close()
	}
	d.conns = nil
}

// TestNATDiscoveryReported: the client probes the STUN server named in the
// welcome (skipping the turn: URL), the server stores the report, and after
// a signaling reconnect the report is resent from cache within MaxAge or
// probed again after it.
func TestNATDiscoveryReported(t *testing.T) {
	tests := []struct {
		name       string
		maxAge     time.Duration
		probeAgain bool
	}{
		{"fresh report resent", time.Hour, false},
		{"stale report probed again", time.Nanosecond, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			stun := startSTUN(t)
			srv := signaltest.Start(t, signal.Config{ICEServers: stunICE(stun)})
			d := &dropper{}
			alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
				c.DiscoverNAT = fast(client.NATDiscovery{MaxAge: tc.maxAge})
				c.Dial = d.dial
			})
			ev := alice.ev.Wait(t, wait, "NAT report", natSent).(client.NATEvent)
			if ev.Err != nil || !ev.Sent || ev.Report == nil || ev.Elapsed <= 0 {
				t.Fatalf("NAT event %+v", ev)
			}
			r := ev.Report
			// Loopback has no NAT: mapped == local, nothing filters.
			if r.Type != proto.NATNone || r.Mapping != proto.BehaviorNone || r.UDPBlocked || r.PublicAddr == "" ||
				netip.MustParseAddrPort(r.PublicAddr).Port() != netip.MustParseAddrPort(r.LocalAddr).Port() {
				t.Errorf("report %+v, want type none with a public address", r)
			}
			stored, ok := srv.NATReport("alice")
			if !ok || *stored != *r {
				t.Errorf("server stored %+v (%v), want %+v", stored, ok, r)
			}
			got, err := alice.NATReport(context.Background())
			if err != nil || got == nil || *got != *r {
				t.Errorf("Client.NATReport = %+v, %v", got, err)
			}
			requests := stun.Stats().Requests

			mark := alice.ev.Len()
			d.drop()
			alice.ev.WaitSince(t, mark, wait, "ready again", func(e client.Event) bool {
				r, ok := e.(client.ReadyEvent)
				return ok && r.Reconnect
			})
			ev2 := alice.ev.WaitSince(t, mark, wait, "report after reconnect", natSent).(client.NATEvent)
			if ev2.Err != nil || !ev2.Sent || ev2.Report.Type != proto.NATNone {
				t.Fatalf("second NAT event %+v", ev2)
			}
			if again := stun.Stats().Requests > requests; again != tc.probeAgain {
				t.Errorf("probed again = %v, want %v", again, tc.probeAgain)
			}
			waitUntil(t, "server has the report again", func() bool {
				_, ok := srv.NATReport("alice")
				return ok
			})
			d.mu.Lock()
			dials := d.dials
			d.mu.Unlock()
			if dials < 2 {
				t.Errorf("Config.Dial used %d times, want 2", dials)
			}
		})
	}
}

// TestNATDiscoveryNoSTUN: with no stun: URL anywhere the client says so.
func TestNATDiscoveryNoSTUN(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.DiscoverNAT = fast(client.NATDiscovery{})
	})
	ev := alice.ev.Wait(t, wait, "NAT event", natSent).(client.NATEvent)
	if !errors.Is(ev.Err, client.ErrNoSTUN) || ev.Report != nil {
		t.Fatalf("NAT event %+v, want ErrNoSTUN", ev)
	}
	if _, ok := srv.NATReport("alice"); ok {
		t.Error("server has a report")
	}
}

// TestNATDiscoveryServerDown: a configured STUN server that never answers
// means "UDP blocked" (RFC 5780 gives no way to tell the two apart), and
// that is reported, not an error.
func TestNATDiscoveryServerDown(t *testing.T) {
	hole, err := net.ListenPacket("udp4", "127.0.0.1:0") // reads nothing, answers nothing
	if err != nil {
		t.Fatal(err)
	}
	defer hole.Close()
	srv := signaltest.Start(t, signal.Config{})
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.DiscoverNAT = fast(client.NATDiscovery{Server: hole.LocalAddr().String()})
	})
	ev := alice.ev.Wait(t, wait, "NAT event", natSent).(client.NATEvent)
	if ev.Err != nil || ev.Report == nil || !ev.Report.UDPBlocked || ev.Report.Type != proto.NATUDPBlocked {
		t.Fatalf("NAT event %+v, want a udp-blocked report", ev)
	}
}

// pmpGateway is a minimal NAT-PMP (RFC 6886) responder on 127.0.0.1 that
// grants every mapping at external port 1024 + internal%50000.
func pmpGateway(t *testing.T) (port uint16, mapped func() []uint32) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var lifetimes []uint32
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			b := buf[:n]
			var resp []byte
			switch {
			case n == 2 && b[0] == 0 && b[1] == 0: // section 3.2: external address
				resp = []byte{0, 128, 0, 0, 0, 0, 0, 1, 198, 51, 100, 77}
			case n == 12 && b[0] == 0 && b[1] == 1: // section 3.3: map UDP
				internal := binary.BigEndian.Uint16(b[4:6])
				life := binary.BigEndian.Uint32(b[8:12])
				mu.Lock()
				lifetimes = append(lifetimes, life)
				mu.Unlock()
				resp = make([]byte, 16)
				resp[1] = 129
				binary.BigEndian.PutUint32(resp[4:8], 1)
				binary.BigEndian.PutUint16(resp[8:10], internal)
				if life != 0 {
					binary.BigEndian.PutUint16(resp[10:12], 1024+internal%50000)
				}
				binary.BigEndian.PutUint32(resp[12:16], life)
			default:
				continue
			}
			pc.WriteTo(resp, from)
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return uint16(pc.LocalAddr().(*net.UDPAddr).Port), func() []uint32 {
		mu.Lock()
		defer mu.Unlock()
		return append([]uint32(nil), lifetimes...)
	}
}

// TestNATDiscoveryPortMapping: with PortMapping the report names the
// protocol that granted a mapping, and the mapping is released at once.
func TestNATDiscoveryPortMapping(t *testing.T) {
	stun := startSTUN(t)
	gwPort, mapped := pmpGateway(t)
	srv := signaltest.Start(t, signal.Config{ICEServers: stunICE(stun)})
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.DiscoverNAT = fast(client.NATDiscovery{
			PortMapping: true,
			MapPort: nat.MapPortConfig{
				Gateway:     func() (netip.Addr, error) { return netip.MustParseAddr("127.0.0.1"), nil },
				PMPPort:     gwPort,
				DisableUPnP: true, DisablePCP: true,
				RTO: 20 * time.Millisecond, Timeout: 300 * time.Millisecond,
			},
		})
	})
	ev := alice.ev.Wait(t, wait, "NAT report", natSent).(client.NATEvent)
	if ev.Err != nil || ev.Report == nil {
		t.Fatalf("NAT event %+v", ev)
	}
	local := netip.MustParseAddrPort(ev.Report.LocalAddr)
	want := netip.AddrPortFrom(netip.MustParseAddr("198.51.100.77"), 1024+local.Port()%50000).String()
	if ev.Report.PortMapping != "nat-pmp" || ev.Report.MappedAddr != want {
		t.Errorf("report %+v, want nat-pmp mapping to %s", ev.Report, want)
	}
	if l := mapped(); len(l) != 2 || l[0] == 0 || l[1] != 0 {
		t.Errorf("mapping lifetimes asked %v, want a lease then a release (0)", l)
	}
}
