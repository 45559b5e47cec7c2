package relaybench

import (
	"context"
	"crypto/ed25519"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * 10 * time.Microsecond) // 10 µs .. 10 ms
	}
	q := h.quantiles(0.5, 0.99)
	for i, want := range []time.Duration{5 * time.Millisecond, 9900 * time.Microsecond} {
		if d := q[i] - want; d < -want/50 || d > want/50 {
			t.Errorf("quantile %d: %s, want %s ±2%%", i, q[i], want)
		}
	}
}

// drive sets up n flows through t's path and sends 50 pps each for d,
// returning the generator after the stragglers.
func drive(t *testing.T, tg *target, path string, n int, d time.Duration) *generator {
	t.Helper()
	g, err := newGenerator(tg, path, n, 160)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.close)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.setup(ctx); err != nil {
		t.Fatalf("set-up: %v", err)
	}
	g.measure.Store(0)
	g.paced(ctx, 50, d)
	if g.sent.Load() == 0 {
		t.Fatal("nothing sent")
	}
	testutil.Eventually(t, 5*time.Second, "every packet delivered", func() bool { return g.recv.Load() >= g.sent.Load() })
	return g
}

// TestGeneratorThroughForwarder: the generator and the batched forwarder
// agree on every packet, both ways.
func TestGeneratorThroughForwarder(t *testing.T) {
	f, err := NewForwarder(netip.MustParseAddrPort("127.0.0.1:0"), 20)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done; f.Close() })
	g := drive(t, &target{name: "forwarder", forwarder: true, udp: f.Addr(), relays: f.RelayAddrs()}, PathUDP, 20, time.Second)
	if g.hist.quantiles(0.5)[0] == 0 {
		t.Fatalf("sent %d, received %d, no latency recorded", g.sent.Load(), g.recv.Load())
	}
}

// TestGeneratorThroughSupernode: the generator's TURN client allocates and
// binds channels on a real supernode over TURN UDP, TCP, TLS and QUIC, and
// every packet comes through both ways.
func TestGeneratorThroughSupernode(t *testing.T) {
	_, tokenKey, _ := ed25519.GenerateKey(nil)
	sig := signaltest.Start(t, signal.Config{Supernodes: signal.SupernodeConfig{
		TokenKey: tokenKey, AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes: 64 << 10, MinMbps: 1, ProbeTimeout: time.Second,
	}})
	sn := supernodetest.Start(t, sig.URL, supernode.Config{AllowPeers: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	_, key, _ := ed25519.GenerateKey(nil)
	ws, _, err := sigdial.SignIn(context.Background(), sigdial.Options{URL: sig.URL, Agent: "test", Auth: func(ch string) *proto.Auth {
		return proto.SignAuth(key, ch, "benchuser")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	sigdial.Write(ws, proto.TypeRelayRequest, "rr", &proto.RelayRequest{})
	var sn0 proto.SupernodeInfo
	for sn0.ID == "" {
		env, err := sigdial.Read(ws)
		if err != nil {
			t.Fatal(err)
		}
		if l, err := proto.DecodeBody[*proto.SupernodeList](env); err == nil && env.Type == proto.TypeSupernodes && len(l.Supernodes) > 0 {
			sn0 = l.Supernodes[0]
		}
	}
	a := sn.Addrs()
	tg := &target{name: "parley", udp: a.TURNUDP, tcp: a.TURNTCP, tls: a.TURNTLS, quic: a.QUIC,
		fp: sn0.Fingerprint, token: sn0.Token, user: sn0.TURNUsername, pass: sn0.TURNPassword}
	for _, path := range []string{PathUDP, PathTCP, PathTLS, PathQUIC} {
		t.Run(path, func(t *testing.T) {
			drive(t, tg, path, 4, 500*time.Millisecond)
		})
	}
	if st := sn.Stats(); st.FastUDP == 0 || st.DatagramsIn == 0 || st.DatagramsOut == 0 {
		t.Fatalf("the fast paths carried nothing: %+v", st)
	}
}
