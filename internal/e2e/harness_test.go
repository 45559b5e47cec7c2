package e2e

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
)

// noPathWithin bounds how long a call without a path may take to end, with
// the ICE settings the binaries use (client.PathConfig's zero value: a link
// with no working pair gives up 6 s after its checks start): issue 9 asks
// for a clear end within 10 s.
const noPathWithin = 10 * time.Second

// clientLog sends every lab client's log (debug level) to stderr.
var clientLog = flag.Bool("client.log", false, "log lab clients at debug level to stderr")

// world is one lab internet with Parley's services on a public host:
// signaling on TCP 443 (so a UDP-blocked home that passes only TCP 443
// reaches it) and an RFC 5780 STUN server on IP1:3478, IP1:3479, IP2:3478
// and IP2:3479.
type world struct {
	lab    *natlab.Lab
	pub    *natlab.Host
	sig    *signal.Server
	sigURL string
	stun   *nat.Server
	iceURL string // stun:IP1:3478
}

// newWorld builds the lab and starts the services; everything stops at
// the end of the test.
func newWorld(t testing.TB) *world {
	t.Helper()
	lab := natlab.New(t, natlab.Config{})
	pub := lab.AddPublicHost("sig")
	ip1, ip2 := pub.Addrs[0], pub.Addrs[1]
	w := &world{lab: lab, pub: pub}

	stun, err := nat.NewServer(nat.ServerConfig{
		Primary:   netip.AddrPortFrom(ip1, nat.DefaultSTUNPort),
		Alternate: netip.AddrPortFrom(ip2, nat.DefaultSTUNPort+1),
		Listener:  pub, // sockets inside the public host's namespace
	})
	if err != nil {
		t.Fatal(err)
	}
	w.stun = stun
	w.iceURL = "stun:" + stun.Addrs().Primary.String()
	stunDone := make(chan error, 1)
	go func() { stunDone <- stun.Run(context.Background()) }()
	t.Cleanup(func() {
		stun.Close()
		if err := <-stunDone; err != nil && !errors.Is(err, nat.ErrClosed) {
			t.Errorf("stun: %v", err)
		}
	})

	urls := []string{w.iceURL}
	sig, err := signal.New(signal.Config{
		ICEServers: func(string) []proto.ICEServer { return []proto.ICEServer{{URLs: urls}} },
	})
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(ip1, 443)
	ln, err := pub.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	w.sig, w.sigURL = sig, "ws://"+addr.String()+"/ws"
	ctx, cancel := context.WithCancel(context.Background())
	sigDone := make(chan error, 1)
	go func() { sigDone <- sig.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-sigDone; err != nil && !errors.Is(err, signal.ErrClosed) {
			t.Errorf("signal: %v", err)
		}
	})
	return w
}

// labICE is the setting engine of a client inside home: pion's sockets and
// interfaces are the home client namespace's, UDP over IPv4 only (pion's
// active ICE-TCP would dial outside Net), no mDNS. Timeouts and acceptance
// waits stay the client's own, so the lab measures what users get.
func labICE(home *natlab.Home) func(*webrtc.SettingEngine) {
	return func(se *webrtc.SettingEngine) {
		se.SetNet(home.Client.Net())
		se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
		se.SetNetworkTypes([]webrtc.NetworkType{webrtc.NetworkTypeUDP4})
	}
}

// stamped is a client event with the time it was read.
type stamped struct {
	at time.Time
	ev client.Event
}

// peer is a running client in a home.
type peer struct {
	*client.Client
	name string
	home *natlab.Home
	ev   *testutil.Recorder[stamped]
	stop func() // ends the client (also done when the test ends)
}

// peerOpts adjust a lab client's config before it starts; a relay scenario
// adds its ICE servers or proxy dialer here.
type peerOpts func(home *natlab.Home, cfg *client.Config)

// startPeer runs a client signed in from inside home: its WebSocket is
// dialed in the home's namespace, its ICE runs there, and it discovers its
// NAT through the same namespace. It stops when the test ends.
func (w *world) startPeer(t *testing.T, home *natlab.Home, name string, discover bool, opts ...peerOpts) *peer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := client.Config{
		Server:        w.sigURL,
		Name:          name,
		Key:           key,
		Dial:          home.Client.DialContext,
		SettingEngine: labICE(home),
		AutoAnswer:    true,
		StatsInterval: 250 * time.Millisecond,
		ReconnectMin:  100 * time.Millisecond,
		ReconnectMax:  time.Second,
	}
	if discover {
		cfg.DiscoverNAT = &client.NATDiscovery{
			Listener: home.Client.Net(),
			RTO:      50 * time.Millisecond,
			Timeout:  400 * time.Millisecond,
		}
	}
	for _, o := range opts {
		o(home, &cfg)
	}
	if *clientLog {
		cfg.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return launchPeer(t, home, name, cfg)
}

// launchPeer builds a client from cfg, records its events with their
// arrival time, and runs it until the test ends.
func launchPeer(tb testing.TB, home *natlab.Home, name string, cfg client.Config) *peer {
	tb.Helper()
	c, err := client.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	ch := make(chan stamped, 64)
	p := &peer{Client: c, name: name, home: home, ev: testutil.Record(ch)}
	go func() {
		defer close(ch)
		for ev := range c.Events() {
			ch <- stamped{time.Now(), ev}
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			tb.Errorf("%s: Run: %v", name, err)
		}
	}()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				tb.Errorf("%s: Run did not return", name)
			}
		})
	}
	tb.Cleanup(p.stop)
	return p
}

// wait returns the first event (from the start) that match accepts.
func (p *peer) wait(t *testing.T, d time.Duration, what string, match func(client.Event) bool) stamped {
	t.Helper()
	return p.ev.Wait(t, d, p.name+": "+what, func(s stamped) bool { return match(s.ev) })
}

func isOnline(name string) func(client.Event) bool {
	return func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == name && p.Status == proto.StatusOnline
	}
}

func isNATDone(e client.Event) bool {
	n, ok := e.(client.NATEvent)
	return ok && (n.Sent || n.Err != nil)
}

// callSettled matches the call with peer reaching connected or ended.
func callSettled(with string) func(client.Event) bool {
	return func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.With == with && (c.State == client.CallConnected || c.State == client.CallEnded)
	}
}

// audioFrom matches stats showing at least n RTP packets received from peer.
func audioFrom(with string, n uint32) func(client.Event) bool {
	return func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == with && s.RTPPacketsReceived >= n
	}
}
