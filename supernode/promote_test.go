package supernode_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestPromotion covers the loopback decisions: a reachable candidate is
// promoted with its measured figures; one whose advertised address does
// not answer, one that is too slow, and one advertising a private address
// are refused, each with its reason (the NAT-lab test adds real NATs).
func TestPromotion(t *testing.T) {
	cases := []struct {
		name   string
		sig    func(*signal.SupernodeConfig)
		sn     func(*supernode.Config)
		want   proto.SupernodeState
		reason string
	}{
		{name: "public candidate", want: proto.SupernodePromoted, reason: "reachable from an address it never contacted"},
		{
			name: "nothing answers at the advertised address",
			// 127.0.0.2 is loopback too, but nothing listens there.
			sn:   func(c *supernode.Config) { c.PublicAddr = netip.MustParseAddr("127.0.0.2") },
			want: proto.SupernodeRefused, reason: "unreachable: no QUIC answer at 127.0.0.2:",
		},
		{
			name: "too slow",
			sig:  func(c *signal.SupernodeConfig) { c.MinMbps = 1e5 },
			want: proto.SupernodeRefused, reason: "below the 100000.0 Mbps minimum",
		},
		{
			name: "private address",
			sig:  func(c *signal.SupernodeConfig) { c.AllowAddrs = nil },
			want: proto.SupernodeRefused, reason: "is not public",
		},
		{
			name: "uptime threshold",
			sig:  func(c *signal.SupernodeConfig) { c.MinUptime = time.Hour },
			want: proto.SupernodeWaiting, reason: "promotion after 1h0m0s of uptime",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sig := loopbackSignal(t, tc.sig)
			var cfg supernode.Config
			if tc.sn != nil {
				tc.sn(&cfg)
			}
			var mu sync.Mutex
			var printed []supernode.Decision
			cfg.OnDecision = func(d supernode.Decision) { mu.Lock(); printed = append(printed, d); mu.Unlock() }
			sn := supernodetest.Start(t, sig.URL, cfg)
			st := sn.WaitState(t, tc.want, 10*time.Second)
			if !strings.Contains(st.Reason, tc.reason) {
				t.Fatalf("reason %q, want it to contain %q", st.Reason, tc.reason)
			}
			t.Logf("%s: %s", st.State, st.Reason)
			// The server's view agrees, and the operator saw the decision.
			info := sig.Supernodes()
			if len(info) != 1 || info[0].State != tc.want || info[0].Reason != st.Reason {
				t.Fatalf("server view %+v", info)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(printed) == 0 || printed[len(printed)-1].Reason != st.Reason {
				t.Fatalf("OnDecision saw %v", printed)
			}
			if tc.want == proto.SupernodePromoted {
				if st.History[len(st.History)-1].MeasuredMbps < 1 || !st.Accepting {
					t.Fatalf("promotion without figures or not accepting: %+v", st)
				}
			}
			// The server exports the decision for Prometheus.
			reg := prometheus.NewRegistry()
			reg.MustRegister(sig.SupernodeCollector())
			mfs, err := reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, mf := range mfs {
				for _, m := range mf.GetMetric() {
					if mf.GetName() == "parley_signal_supernodes" && m.GetLabel()[0].GetValue() == string(tc.want) {
						found = m.GetGauge().GetValue() == 1
					}
				}
			}
			if !found {
				t.Fatalf("parley_signal_supernodes{state=%q} is not 1", tc.want)
			}
		})
	}
}

// TestDemotion: a promoted supernode is demoted within seconds when it
// stops (its connection closes), when its heartbeats stop arriving, and
// when it reports overload; its users get a new list without it.
func TestDemotion(t *testing.T) {
	t.Run("stopped", func(t *testing.T) {
		sig := loopbackSignal(t, nil)
		a := supernodetest.Start(t, sig.URL, supernode.Config{Name: "sna"})
		b := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snb"})
		a.WaitState(t, proto.SupernodePromoted, 10*time.Second)
		b.WaitState(t, proto.SupernodePromoted, 10*time.Second)
		u := signIn(t, sig.URL, "alice")
		if l := u.list(2); len(l.Supernodes) != 2 {
			t.Fatalf("list %+v", l)
		}
		start := time.Now()
		a.Stop()
		var moved *proto.SupernodeList
		// A list answering an earlier request may come first; the one
		// that matters says why sna went.
		waitFor(t, 5*time.Second, "a new list without sna, with the reason", func() bool {
			select {
			case l := <-u.lists:
				if len(l.Supernodes) == 1 && l.Supernodes[0].ID == "snb" && strings.Contains(l.Reason, "sna demoted") {
					moved = l
					return true
				}
			default:
			}
			return false
		})
		t.Logf("stopped supernode: users moved after %s: %q", time.Since(start).Round(time.Millisecond), moved.Reason)
		if !strings.Contains(moved.Reason, "sna demoted: draining: the operator is stopping it") {
			t.Fatalf("reason %q", moved.Reason)
		}
	})
	t.Run("missed heartbeats", func(t *testing.T) {
		sig := loopbackSignal(t, nil)
		var mute muteDialer
		sn := supernodetest.Start(t, sig.URL, supernode.Config{Dial: mute.dial})
		sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
		start := time.Now()
		mute.set(true) // heartbeats vanish; the connection stays open
		waitFor(t, 5*time.Second, "demotion", func() bool {
			i := sig.Supernodes()
			return len(i) == 1 && i[0].State == proto.SupernodeDemoted
		})
		i := sig.Supernodes()[0]
		t.Logf("silent supernode demoted after %s: %s", time.Since(start).Round(time.Millisecond), i.Reason)
		if !strings.Contains(i.Reason, "missed heartbeats: none for") {
			t.Fatalf("reason %q", i.Reason)
		}
	})
	t.Run("overloaded", func(t *testing.T) {
		sig := loopbackSignal(t, nil)
		sn := supernodetest.Start(t, sig.URL, supernode.Config{MaxSessions: 1})
		sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
		u := signIn(t, sig.URL, "alice")
		info := u.list(1).Supernodes[0]
		// One real allocation fills the supernode; its next heartbeat says so.
		_, relay := allocate(t, sn, info)
		st := sn.WaitState(t, proto.SupernodeDemoted, 5*time.Second)
		if !strings.Contains(st.Reason, "overloaded: 1 of 1 sessions") {
			t.Fatalf("reason %q", st.Reason)
		}
		// It keeps beating while demoted: when the session ends, the
		// server sees the load fall and promotes it again.
		relay.Close()
		st = sn.WaitState(t, proto.SupernodePromoted, 5*time.Second)
		if !strings.Contains(st.Reason, "load back to 0 of 1 sessions") {
			t.Fatalf("promoted again with reason %q", st.Reason)
		}
	})
}

// muteDialer dials normally but can make the connection swallow writes.
type muteDialer struct {
	mu    sync.Mutex // guards muted
	muted bool
}

func (m *muteDialer) set(v bool) { m.mu.Lock(); m.muted = v; m.mu.Unlock() }

func (m *muteDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	return &muteConn{Conn: c, m: m}, nil
}

type muteConn struct {
	net.Conn
	m *muteDialer
}

func (c *muteConn) Write(b []byte) (int, error) {
	c.m.mu.Lock()
	muted := c.m.muted
	c.m.mu.Unlock()
	if muted {
		return len(b), nil
	}
	return c.Conn.Write(b)
}

// TestReconnectKeepsCredentials: a supernode whose signaling connection
// drops is demoted, reconnects, is probed and promoted again with the
// same TURN secret, so credentials handed out before still work.
func TestReconnectKeepsCredentials(t *testing.T) {
	sig := loopbackSignal(t, nil)
	var kd killDialer
	sn := supernodetest.Start(t, sig.URL, supernode.Config{Dial: kd.dial})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	before := signIn(t, sig.URL, "alice").list(1).Supernodes[0]
	promotions := len(sn.Status().History)

	kd.kill()
	waitFor(t, 10*time.Second, "promoted again after the reconnect", func() bool {
		st := sn.Status()
		return len(st.History) > promotions+1 && st.State == proto.SupernodePromoted && st.Accepting
	})
	// Old credentials and token still open a session.
	allocate(t, sn, before)
}

// killDialer dials normally and can close every connection it made.
type killDialer struct {
	mu    sync.Mutex // guards conns
	conns []net.Conn
}

func (k *killDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err == nil {
		k.mu.Lock()
		k.conns = append(k.conns, c)
		k.mu.Unlock()
	}
	return c, err
}

func (k *killDialer) kill() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, c := range k.conns {
		c.Close()
	}
}

// TestRegisterChecks: the server refuses registrations whose addresses
// are on several IPs (it would probe third parties), and answers a
// registration repeated during or just after a check with rate_limited.
func TestRegisterChecks(t *testing.T) {
	sig := loopbackSignal(t, nil)
	fp := strings.Repeat("ab", 32)
	u := signIn(t, sig.URL, "cand")
	u.send(proto.TypeSupernodeRegister, "r1", &proto.SupernodeRegister{QUIC: "127.0.0.1:4433", TURNUDP: "127.0.0.2:3478", Fingerprint: fp})
	var st *proto.SupernodeStatus
	select {
	case st = <-u.statuses:
	case <-time.After(5 * time.Second):
		t.Fatal("no status")
	}
	if st.State != proto.SupernodeRefused || !strings.Contains(st.Reason, "different IPs (127.0.0.1 and 127.0.0.2)") {
		t.Fatalf("status %+v", st)
	}
	u.send(proto.TypeSupernodeRegister, "r2", &proto.SupernodeRegister{QUIC: "127.0.0.1:4433", Fingerprint: fp})
	select {
	case e := <-u.errs:
		if e.Code != proto.CodeRateLimited {
			t.Fatalf("second registration: %v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("second registration within the interval was not refused")
	}
}

// TestRecheckFailure: a promoted supernode whose QUIC port stops
// answering (a router lost its port forward) is demoted at the next
// re-check, with the probe's reason.
func TestRecheckFailure(t *testing.T) {
	sig := loopbackSignal(t, func(c *signal.SupernodeConfig) {
		c.Recheck = 300 * time.Millisecond
		c.ProbeTimeout = 500 * time.Millisecond
	})
	var bh blackhole
	sn := supernodetest.Start(t, sig.URL, supernode.Config{PacketListener: &bh})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	bh.set(true)
	st := sn.WaitState(t, proto.SupernodeDemoted, 10*time.Second)
	if !strings.Contains(st.Reason, "re-check failed: unreachable: no QUIC answer") {
		t.Fatalf("reason %q", st.Reason)
	}
}

// blackhole opens UDP sockets that can be made to drop every packet
// they receive, as a router that lost its port forward would.
type blackhole struct {
	mu sync.Mutex // guards on
	on bool
}

func (b *blackhole) set(v bool) { b.mu.Lock(); b.on = v; b.mu.Unlock() }

func (b *blackhole) dropping() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.on
}

func (b *blackhole) ListenPacket(network, address string) (net.PacketConn, error) {
	pc, err := net.ListenPacket(network, address) //nolint:noctx // bind only
	if err != nil {
		return nil, err
	}
	return &blackholeConn{PacketConn: pc, b: b}, nil
}

type blackholeConn struct {
	net.PacketConn
	b *blackhole
}

func (c *blackholeConn) ReadFrom(p []byte) (int, net.Addr, error) {
	for {
		n, a, err := c.PacketConn.ReadFrom(p)
		if err != nil || !c.b.dropping() {
			return n, a, err
		}
	}
}
