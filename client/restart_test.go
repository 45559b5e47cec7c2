package client

import (
	"context"
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/pion/webrtc/v4"
)

// runTestClient runs a client with cfg (a fresh key) until the test ends
// and records its events.
func runTestClient(t *testing.T, cfg Config) (*Client, *testutil.Recorder[Event]) {
	t.Helper()
	_, cfg.Key, _ = ed25519.GenerateKey(nil)
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ev := testutil.Record(c.Events())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return c, ev
}

// TestRestartRequest: an answerer whose path died while the offerer's
// traffic still arrived asks for an ICE restart (proto.TypeRestart); the
// offerer restarts once, not again within restartSpacing, and the link
// comes back.
func TestRestartRequest(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice, aev := runTestClient(t, Config{Server: srv.URL, Name: "alice", SettingEngine: LoopbackOnly})
	bob, _ := runTestClient(t, Config{Server: srv.URL, Name: "bob", SettingEngine: LoopbackOnly})
	ctx := context.Background()
	aev.Wait(t, 10*time.Second, "bob online", func(e Event) bool { p, ok := e.(PresenceEvent); return ok && p.Name == "bob" && p.Online() })
	if _, err := alice.Send(ctx, "bob", "hello"); err != nil { // opens the link: alice offers
		t.Fatal(err)
	}
	aev.Wait(t, 10*time.Second, "link open", func(e Event) bool { l, ok := e.(LinkEvent); return ok && l.State == "open" })
	restarted := func() (at time.Time, connected bool) {
		alice.do(ctx, func() error {
			if l := alice.links["bob"]; l != nil {
				at, connected = l.restartedAt, l.state == webrtc.PeerConnectionStateConnected && l.remoteSet && l.lostAt.IsZero()
			}
			return nil
		})
		return at, connected
	}
	ask := func() {
		bob.do(ctx, func() error {
			return bob.sendSig(proto.TypeRestart, "alice", &proto.Restart{Session: bob.links["alice"].session})
		})
	}
	ask()
	var first time.Time
	testutil.Eventually(t, 10*time.Second, "alice restarted and is connected again", func() bool {
		at, ok := restarted()
		first = at
		return !at.IsZero() && ok
	})
	ask() // within restartSpacing: ignored
	// Bob's next word through the server reaches alice after it: by the
	// time she sees him away, she has handled the request.
	if err := bob.SetStatus(ctx, proto.StatusAway); err != nil {
		t.Fatal(err)
	}
	aev.Wait(t, 10*time.Second, "bob away", func(e Event) bool {
		p, ok := e.(PresenceEvent)
		return ok && p.Name == "bob" && p.Status == proto.StatusAway
	})
	if at, _ := restarted(); !at.Equal(first) {
		t.Fatalf("alice restarted again %s after the first, on a request within %s", at.Sub(first), restartSpacing)
	}
}
