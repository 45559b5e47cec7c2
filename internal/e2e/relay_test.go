package e2e

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

// The supernode scenario: the matrix again, with a supernode on the lab's
// internet. Pairs STUN alone connects still go direct; the rest (symmetric
// against port-restricted or symmetric, anything with UDP blocked) relay
// through the supernode — over QUIC streams, or TURN over TLS on TCP 443
// from the UDP-blocked home.
var viaSupernode = scenario{name: "supernode", setup: setupSupernode, expect: expectWithRelay}

func expectWithRelay(a, b natlab.NATKind) outcome {
	if expectSTUNOnly(a, b) == noPath {
		return relay
	}
	return direct
}

// TestRelayCallMatrix is the call matrix with a supernode. Run with -v to
// see it; -args -matrix.out=FILE writes it as markdown.
func TestRelayCallMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab call matrix")
	}
	runMatrix(t, viaSupernode)
}

// setupSupernode starts the scenario's signaling server (see
// startRelaySignal) and one supernode on its own public host, waits for
// its promotion and points every client's QUIC socket into its home.
func setupSupernode(t *testing.T, w *world) []peerOpts {
	startRelaySignal(t, w)
	host := w.lab.AddPublicHost("sn")
	sn := startLabSupernode(t, w, host, "sn1", host.Addrs[0])
	st := sn.WaitState(t, proto.SupernodePromoted, 30*time.Second)
	t.Logf("sn1 promoted: %s", st.Reason)
	t.Cleanup(func() {
		s := sn.Stats()
		t.Logf("sn1 after the matrix: %d relay streams, %d allocations, %d bytes relayed (%d datagrams in, %d out), %d peer permissions refused (LAN candidates), %d TURN auth failures",
			s.RelayStreams, s.Allocations, s.BytesRelayed, s.DatagramsIn, s.DatagramsOut, s.PeerDenied, s.TURNAuthFail)
	})
	return []peerOpts{relayInHome}
}

// relayInHome opens a lab client's QUIC sockets (to supernodes) in its home.
func relayInHome(home *natlab.Home, cfg *client.Config) {
	cfg.Relay.ListenPacket = home.Client.ListenPacket
}

// startRelaySignal replaces w's signaling server with one whose supernode
// probes run inside the lab: the probe's sockets live in the public host's
// namespace (a probe from the test process would leave the lab) and leave
// from its first address, while this server listens on its second, so a
// candidate never contacted the probe's address. It listens on TCP 443,
// which the UDP-blocked home passes. Clients started afterwards use it.
func startRelaySignal(t testing.TB, w *world, mods ...func(*signal.Config)) {
	t.Helper()
	ip1, ip2 := w.pub.Addrs[0], w.pub.Addrs[1]
	urls := []string{w.iceURL}
	cfg := signal.Config{
		ICEServers: func(string) []proto.ICEServer { return []proto.ICEServer{{URLs: urls}} },
		Supernodes: signal.SupernodeConfig{
			ListenPacket: w.pub.ListenPacket,
			Dial:         w.pub.DialContext,
			ProbeFrom:    ip1,
			ProbeTimeout: 2 * time.Second,
			Heartbeat:    time.Second,
			RetryAfter:   time.Hour,
		},
	}
	for _, m := range mods {
		m(&cfg)
	}
	sig, err := signal.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := netip.AddrPortFrom(ip2, 443)
	ln, err := w.pub.Listen("tcp", addr.String())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- sig.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, signal.ErrClosed) {
			t.Errorf("signal: %v", err)
		}
	})
	w.sig, w.sigURL = sig, "ws://"+addr.String()+"/ws"
}

// startLabSupernode runs a supernode inside host's namespace, listening on
// every address (QUIC on UDP 443, TURN on 3478 UDP/TCP and TLS on TCP 443)
// and advertising public.
func startLabSupernode(t testing.TB, w *world, host *natlab.Host, name string, public netip.Addr) *supernodetest.Supernode {
	t.Helper()
	return supernodetest.Start(t, w.sigURL, supernode.Config{
		Name:           name,
		PublicAddr:     public,
		ListenQUIC:     "0.0.0.0:443",
		ListenTURNUDP:  "0.0.0.0:3478",
		ListenTURNTCP:  "0.0.0.0:3478",
		ListenTURNTLS:  "0.0.0.0:443",
		PacketListener: host,
		Listen:         host.Listen,
		Dial:           host.DialContext,
	})
}

// TestLabPromotion: in the NAT lab, a supernode on the public internet is
// promoted; one behind a port-restricted or a symmetric NAT (no port
// mapping) is refused because the server's unsolicited probe never
// arrives, and the reason says so. Then relayed calls name the supernode
// (QUIC from a symmetric home, TLS on 443 from the UDP-blocked home), and
// when the supernode stops it is demoted within seconds and its users are
// told to move.
func TestLabPromotion(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	w := newWorld(t)
	startRelaySignal(t, w)
	pubHost := w.lab.AddPublicHost("snpub")
	pr := w.lab.AddHome("snpr", natlab.PortRestricted)
	sy := w.lab.AddHome("snsy", natlab.Symmetric)

	good := startLabSupernode(t, w, pubHost, "snpub", pubHost.Addrs[0])
	// Behind a NAT the operator can only claim the router's address.
	bad1 := startLabSupernode(t, w, pr.Client, "snpr", pr.WAN)
	bad2 := startLabSupernode(t, w, sy.Client, "snsy", sy.WAN)
	st := good.WaitState(t, proto.SupernodePromoted, 30*time.Second)
	t.Logf("public: %s: %s", st.State, st.Reason)
	for _, c := range []struct {
		sn   *supernodetest.Supernode
		home *natlab.Home
	}{{bad1, pr}, {bad2, sy}} {
		st := c.sn.WaitState(t, proto.SupernodeRefused, 30*time.Second)
		t.Logf("%s: %s: %s", c.home, st.State, st.Reason)
		if !strings.Contains(st.Reason, "unreachable: no QUIC answer at "+c.home.WAN.String()+":443 to an unsolicited probe from "+w.pub.Addrs[0].String()) {
			t.Errorf("%s: reason %q", c.home, st.Reason)
		}
	}

	// Relayed calls through the promoted one, reported by name.
	hs := w.lab.AddHome("csy", natlab.Symmetric)
	hb := w.lab.AddHome("cub", natlab.UDPBlocked)
	alice := w.startPeer(t, hs, "alice", true, relayInHome)
	bob := w.startPeer(t, hb, "bob", true, relayInHome)
	for _, p := range []struct {
		p         *peer
		transport string
	}{{alice, "quic"}, {bob, "tls"}} {
		p.p.wait(t, 30*time.Second, "NAT report", isNATDone)
		ev := p.p.wait(t, 30*time.Second, "relay via "+p.transport, func(e client.Event) bool {
			r, ok := e.(client.RelayEvent)
			return ok && r.Supernode == "snpub" && r.Transport == p.transport && (r.Warm || p.transport == "tls")
		}).ev.(client.RelayEvent)
		t.Logf("%s: relay %s via %s, rtt %s (%s)", p.p.name, ev.Transport, ev.Supernode, ev.RTT, ev.Reason)
	}
	alice.wait(t, 15*time.Second, "sees bob", isOnline(bob.name))
	ctx := context.Background()
	if err := alice.Call(ctx, bob.name); err != nil {
		t.Fatal(err)
	}
	ce := alice.wait(t, 30*time.Second, "call settles", callSettled(bob.name)).ev.(client.CallEvent)
	if ce.State != client.CallConnected || ce.Path != "relay" || ce.Via != "snpub" {
		t.Fatalf("call %+v, want connected, relay via snpub", ce)
	}
	for _, p := range []*peer{alice, bob} {
		other := bob.name
		if p == bob {
			other = alice.name
		}
		s := p.wait(t, 15*time.Second, "relayed audio", audioFrom(other, 25)).ev.(client.StatsEvent)
		if s.Path != "relay" || s.Via != "snpub" {
			t.Errorf("%s stats: path %q via %q", p.name, s.Path, s.Via)
		}
	}

	// A second supernode, then stop the first: the server demotes it at
	// once and moves its users to the other.
	spare := w.lab.AddPublicHost("snspare")
	sp := startLabSupernode(t, w, spare, "snspare", spare.Addrs[0])
	sp.WaitState(t, proto.SupernodePromoted, 30*time.Second)
	since := alice.ev.Len()
	t0 := time.Now()
	good.Stop()
	moved := alice.ev.WaitSince(t, since, 10*time.Second, "moved to snspare", func(s stamped) bool {
		r, ok := s.ev.(client.RelayEvent)
		return ok && r.Supernode == "snspare" && strings.Contains(r.Reason, "snpub demoted")
	})
	t.Logf("stopped snpub: alice moved after %s: %s", moved.at.Sub(t0).Round(time.Millisecond), moved.ev.(client.RelayEvent).Reason)
	if d := moved.at.Sub(t0); d > 5*time.Second {
		t.Errorf("moving users took %s", d)
	}
}
