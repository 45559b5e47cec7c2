package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

type peer struct {
	*client.Client
	ev   *testutil.Recorder[client.Event]
	stop func()
	done chan struct{}
	err  error // what Run returned, once done is closed
}

func startClient(t testing.TB, url, name string, key ed25519.PrivateKey, mod func(*client.Config)) *peer {
	t.Helper()
	if key == nil {
		_, key, _ = ed25519.GenerateKey(nil)
	}
	cfg := client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	if mod != nil {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{Client: c, ev: testutil.Record(c.Events()), done: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		defer close(p.done)
		if err := c.Run(ctx); err != nil && !errors.Is(err, client.ErrCannotSignIn) {
			t.Errorf("%s: Run: %v", name, err)
		} else {
			p.err = err
		}
	}()
	p.stop = func() { cancel(); <-p.done }
	t.Cleanup(func() {
		cancel()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return", name)
		}
	})
	return p
}

func online(name string) func(client.Event) bool {
	return func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == name && p.Status == proto.StatusOnline
	}
}

func offline(name string) func(client.Event) bool {
	return func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == name && p.Status == proto.StatusOffline
	}
}

func callState(with string, st client.CallState) func(client.Event) bool {
	return func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.With == with && c.State == st
	}
}

func message(from, text string) func(client.Event) bool {
	return func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == from && m.Text == text
	}
}

func delivered(id string) func(client.Event) bool {
	return func(e client.Event) bool {
		d, ok := e.(client.DeliveredEvent)
		return ok && d.ID == id
	}
}

const wait = 15 * time.Second

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, wait, what, cond)
}

func TestChatAndCallEndToEnd(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	out := filepath.Join(t.TempDir(), "bob-heard.ogg")
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.AudioSource = func(string) (audio.Source, error) { return audio.Open("tone") }
		c.DisplayName = "Alice Martin"
	})
	bob := startClient(t, srv.URL, "bob", nil, func(c *client.Config) {
		c.AutoAnswer = false
		c.AudioSink = func(string) (client.AudioSink, error) { return audio.NewOggSink(out, 2) }
	})
	ctx := context.Background()
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	bob.ev.Wait(t, wait, "bob sees alice", online("alice"))

	// A message each way, delivered and acknowledged exactly once.
	id1, err := alice.Send(ctx, "bob", "hi bob")
	if err != nil {
		t.Fatal(err)
	}
	hi := bob.ev.Wait(t, wait, "bob gets hi", message("alice", "hi bob")).(client.MessageEvent)
	alice.ev.Wait(t, wait, "alice sees delivered", delivered(id1))
	id2, _ := bob.Send(ctx, "alice", "hi alice")
	hi2 := alice.ev.Wait(t, wait, "alice gets hi", message("bob", "hi alice")).(client.MessageEvent)
	// Display names travel with messages, separate from the handle.
	if hi.Display != "Alice Martin" || hi2.Display != "" {
		t.Errorf("display names %q (alice's) and %q (bob has none), want \"Alice Martin\" and none", hi.Display, hi2.Display)
	}
	bob.ev.Wait(t, wait, "bob sees delivered", delivered(id2))

	// The link comes up; later messages go over the data channel.
	deadline := time.Now().Add(wait)
	var direct client.MessageEvent
	for i := 0; time.Now().Before(deadline); i++ {
		text := "direct?" + string(rune('a'+i%26))
		id, _ := alice.Send(ctx, "bob", text)
		m := bob.ev.Wait(t, wait, "bob gets "+text, message("alice", text)).(client.MessageEvent)
		alice.ev.Wait(t, wait, "delivered "+text, delivered(id))
		if m.Path == "direct" {
			direct = m
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if direct.Path != "direct" {
		t.Fatal("chat never moved to the data channel")
	}
	if direct.Display != "Alice Martin" {
		t.Errorf("display name over the data channel %q, want \"Alice Martin\"", direct.Display)
	}
	if err := alice.SetDisplayName(" Alice"); err == nil {
		t.Error("SetDisplayName took a leading space")
	}
	if err := alice.SetDisplayName("Alice M."); err != nil {
		t.Fatal(err)
	}
	alice.Send(ctx, "bob", "renamed")
	if m := bob.ev.Wait(t, wait, "bob gets renamed", message("alice", "renamed")).(client.MessageEvent); m.Display != "Alice M." {
		t.Errorf("display name after SetDisplayName %q, want \"Alice M.\"", m.Display)
	}

	// A call: ringing, answered, connected on a direct path, RTP both ways.
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "bob rings", callState("alice", client.CallRinging))
	if err := bob.Answer(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	ca := alice.ev.Wait(t, wait, "alice connected", callState("bob", client.CallConnected)).(client.CallEvent)
	cb := bob.ev.Wait(t, wait, "bob connected", callState("alice", client.CallConnected)).(client.CallEvent)
	if ca.Path != "direct" || cb.Path != "direct" {
		t.Fatalf("paths %q %q, want direct", ca.Path, cb.Path)
	}
	flowing := func(with string) func(client.Event) bool {
		return func(e client.Event) bool {
			s, ok := e.(client.StatsEvent)
			return ok && s.With == with && s.RTPPacketsSent > 20 && s.RTPPacketsReceived > 20
		}
	}
	alice.ev.Wait(t, wait, "alice stats show RTP both ways", flowing("bob"))
	bob.ev.Wait(t, wait, "bob stats show RTP both ways", flowing("alice"))

	// Hang-up ends it on both sides.
	if err := alice.Hangup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	alice.ev.Wait(t, wait, "alice ended", callState("bob", client.CallEnded))
	bob.ev.Wait(t, wait, "bob ended", callState("alice", client.CallEnded))

	// What bob heard is a valid Ogg/Opus file of alice's tone.
	heard, err := audio.Open(out)
	if err != nil {
		t.Fatalf("bob's recording: %v", err)
	}
	if n := heard.(*audio.Loop).Len(); n < 20 {
		t.Fatalf("bob's recording has %d packets", n)
	}

	// Exactly once: each message produced one message event and one receipt.
	if n := bob.ev.Count(message("alice", "hi bob")); n != 1 {
		t.Errorf("bob got hi %d times", n)
	}
	if n := alice.ev.Count(delivered(id1)); n != 1 {
		t.Errorf("alice saw %d receipts for %s", n, id1)
	}
}

func TestDeclineAndOffline(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := startClient(t, srv.URL, "alice", nil, nil)
	bob := startClient(t, srv.URL, "bob", nil, nil)
	ctx := context.Background()
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob.ev.Wait(t, wait, "bob rings", callState("alice", client.CallRinging))
	if err := bob.Decline(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	e := alice.ev.Wait(t, wait, "alice sees decline", callState("bob", client.CallEnded)).(client.CallEvent)
	if e.Reason != "declined by bob" {
		t.Fatalf("reason %q", e.Reason)
	}
	if err := alice.Call(ctx, "carol"); err != client.ErrUnknownPeer {
		t.Fatalf("call to a name nobody has: %v, want ErrUnknownPeer (not_found, not offline)", err)
	}
	if err := alice.Call(ctx, "alice"); err != client.ErrSelf {
		t.Fatalf("call to self: %v", err)
	}
	bob.stop()
	alice.ev.Wait(t, wait, "alice sees bob leave", offline("bob"))
	if err := alice.Call(ctx, "bob"); err != client.ErrNotOnline {
		t.Fatalf("call to someone offline: %v", err)
	}
	id, err := alice.Send(ctx, "bob", "are you there")
	if err != nil {
		t.Fatal(err)
	}
	// Bob is offline: the message is sealed to the key presence showed
	// and left with the server (offline.go).
	alice.ev.Wait(t, wait, "stored for offline bob", func(e client.Event) bool {
		x, ok := e.(client.StoredEvent)
		return ok && x.ID == id && x.To == "bob"
	})
	// Nobody named carol was ever seen: not_found, in words.
	id, _ = alice.Send(ctx, "carol", "hello?")
	alice.ev.Wait(t, wait, "not found", func(e client.Event) bool {
		x, ok := e.(client.ErrorEvent)
		return ok && x.Ref == id && x.Err.Code == proto.CodeNotFound
	})
}

func TestReconnectAfterServerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) (stop func()) {
		srv, err := signal.New(signal.Config{})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(ctx, ln); close(done) }()
		return func() { cancel(); <-done }
	}
	stop := serve(ln)
	url := "ws://" + addr + "/ws"
	alice := startClient(t, url, "alice", nil, nil)
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bob := startClient(t, url, "bob", bobKey, nil)
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))

	// The server goes away and comes back on the same address: both
	// clients sign in again by themselves.
	marks := []int{alice.ev.Len(), bob.ev.Len()}
	stop()
	alice.ev.Wait(t, wait, "alice disconnected", func(e client.Event) bool { _, ok := e.(client.DisconnectedEvent); return ok })
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	stop = serve(ln2)
	defer stop()
	for i, p := range []*peer{alice, bob} {
		p.ev.WaitSince(t, marks[i], wait, "ready again", func(e client.Event) bool { r, ok := e.(client.ReadyEvent); return ok && r.Reconnect })
	}
	// Presence is re-synced from the welcome: alice is online for bob.
	waitUntil(t, "bob lists alice online", func() bool {
		ps, _ := bob.Presence(context.Background())
		for _, p := range ps {
			if p.Name == "alice" && p.Online() {
				return true
			}
		}
		return false
	})
	id, _ := alice.Send(context.Background(), "bob", "after restart")
	bob.ev.Wait(t, wait, "bob gets message", message("alice", "after restart"))
	alice.ev.Wait(t, wait, "delivered", delivered(id))

	// Bob quits and a new bob process with the same key comes back online.
	mark := alice.ev.Len()
	bob.stop()
	alice.ev.WaitSince(t, mark, wait, "bob offline", offline("bob"))
	startClient(t, url, "bob", bobKey, nil)
	alice.ev.WaitSince(t, mark, wait, "bob online again", online("bob"))
}

func TestNameTakenStopsClient(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	startClient(t, srv.URL, "alice", nil, nil).ev.Wait(t, wait, "ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	imposter := startClient(t, srv.URL, "alice", nil, nil)
	imposter.ev.Wait(t, wait, "name_taken", func(e client.Event) bool {
		x, ok := e.(client.ErrorEvent)
		return ok && x.Err.Code == proto.CodeNameTaken
	})
	select {
	case <-imposter.done:
	case <-time.After(wait):
		t.Fatal("imposter's Run did not stop")
	}
	// Run says why, in words, with the server's code.
	if !errors.Is(imposter.err, client.ErrCannotSignIn) || proto.CodeOf(imposter.err) != proto.CodeNameTaken || !strings.Contains(imposter.err.Error(), "belongs to another key") {
		t.Errorf("Run returned %v", imposter.err)
	}
}

// TestOutboxSurvivesRestart: a message a previous run queued but saw no
// receipt for (the process died) goes out at the next start under its id
// and its number, is shown once even when it arrived the first time, and
// leaves the outbox at its receipt.
func TestOutboxSurvivesRestart(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	bob := startClient(t, srv.URL, "bob", nil, nil)
	_, aliceKey, _ := ed25519.GenerateKey(nil)
	// Run 2 has a second profile copy that queued the same message (the
	// receipt of run 1 never reached it): bob still shows it once.
	for run := 0; run < 2; run++ {
		db, err := history.Open(filepath.Join(t.TempDir(), "alice.db"))
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if err := db.Queue(&client.OutMessage{ID: "kept-id-1", To: "bob", Text: "from before the restart", Time: 42}); err != nil {
			t.Fatal(err)
		}
		alice := startClient(t, srv.URL, "alice", aliceKey, func(c *client.Config) { c.Outbox, c.Store = db, db })
		alice.ev.Wait(t, wait, "receipt", delivered("kept-id-1"))
		if un, _ := db.Unsent(); len(un) != 0 {
			t.Fatalf("run %d: still in the outbox after its receipt: %+v", run, un)
		}
		alice.stop()
	}
	got := bob.ev.Wait(t, wait, "bob gets it", message("alice", "from before the restart")).(client.MessageEvent)
	if got.ID != "kept-id-1" || got.Time != 42 || got.Seq != 1 {
		t.Fatalf("message %+v", got)
	}
	if n := bob.ev.Count(message("alice", "from before the restart")); n != 1 {
		t.Fatalf("bob was shown the message %d times", n)
	}
}

// TestContactsScopedPresence: a client hears about its contacts, the
// people it adds, and whoever messages it (before the message); not about
// others; and can page through the server's directory.
func TestContactsScopedPresence(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	ready := func(p *peer) {
		p.ev.Wait(t, wait, p.Name()+" ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	}
	bob := startClient(t, srv.URL, "bob", nil, nil)
	carol := startClient(t, srv.URL, "carol", nil, nil)
	ready(bob)
	ready(carol)
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) {
		c.Contacts = []string{"bob"}
		c.OnlineDirectory = -1 // contacts only
	})
	alice.ev.Wait(t, wait, "bob online", online("bob"))
	ctx := context.Background()
	if err := alice.AddContacts(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	alice.ev.Wait(t, wait, "carol's presence after AddContacts", online("carol"))
	dave := startClient(t, srv.URL, "dave", nil, nil)
	ready(dave)
	if _, err := dave.Send(ctx, "alice", "hi from a stranger"); err != nil {
		t.Fatal(err)
	}
	alice.ev.Wait(t, wait, "dave's message", message("dave", "hi from a stranger"))
	evs := alice.ev.All()
	sawDave := false
	for _, e := range evs {
		if online("dave")(e) {
			sawDave = true
		}
		if message("dave", "hi from a stranger")(e) && !sawDave {
			t.Fatal("dave's message came before his presence")
		}
	}
	page, err := alice.Directory(ctx, proto.DirectoryQuery{Prefix: "ca"})
	if err != nil || len(page.Entries) != 1 || page.Entries[0].Name != "carol" || !page.Entries[0].Online() {
		t.Fatalf("directory %+v %v", page, err)
	}
	// Everyone else online is not heard of: a client following the
	// directory (the default) is.
	erin := startClient(t, srv.URL, "erin", nil, nil)
	erin.ev.Wait(t, wait, "erin hears bob from the directory", online("bob"))
	if alice.ev.Count(online("erin")) != 0 {
		t.Fatal("alice heard of erin, who is none of her contacts")
	}
}
