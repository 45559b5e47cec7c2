package tui

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/proto"
)

// fakeClient records what the UI asks of the client.
type fakeClient struct {
	db    *history.DB // the outbox Send queues in, as the real client's Config.Outbox
	mu    sync.Mutex
	calls []string
	n     int
	ev    chan client.Event
}

func (f *fakeClient) rec(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}
func (f *fakeClient) Events() <-chan client.Event { return f.ev }
func (f *fakeClient) Send(_ context.Context, peer, text string) (string, error) {
	f.mu.Lock()
	f.n++
	id := fmt.Sprint("id", f.n)
	f.mu.Unlock()
	f.rec("send " + peer + " " + text)
	if f.db != nil {
		if err := f.db.Queue(&client.OutMessage{ID: id, To: peer, Text: text, Time: time.Now().UnixMilli()}); err != nil {
			return "", err
		}
	}
	return id, nil
}
func (f *fakeClient) Call(_ context.Context, p string) error { f.rec("call " + p); return nil }
func (f *fakeClient) AddContacts(_ context.Context, names ...string) error {
	f.rec("add " + strings.Join(names, " "))
	return nil
}
func (f *fakeClient) Presence(context.Context) ([]proto.Presence, error) { return nil, nil }
func (f *fakeClient) Answer(_ context.Context, p string) error           { f.rec("answer " + p); return nil }
func (f *fakeClient) Decline(_ context.Context, p string) error          { f.rec("decline " + p); return nil }
func (f *fakeClient) Hangup(_ context.Context, p string) error           { f.rec("hangup " + p); return nil }
func (f *fakeClient) SetMuted(_ context.Context, p string, on bool) error {
	f.rec(fmt.Sprintf("muted %s %v", p, on))
	return nil
}
func (f *fakeClient) SetStatus(_ context.Context, st proto.Status) error {
	f.rec("status " + string(st))
	return nil
}
func (f *fakeClient) SendFile(_ context.Context, p, path string) (string, error) {
	f.rec("sendfile " + p + " " + path)
	return "f1", nil
}
func (f *fakeClient) AcceptFile(_ context.Context, id string) error {
	f.rec("acceptfile " + id)
	return nil
}
func (f *fakeClient) DeclineFile(_ context.Context, id, _ string) error {
	f.rec("declinefile " + id)
	return nil
}
func (f *fakeClient) MarkRead(_ context.Context, p string, ids ...string) error {
	f.rec("read " + p + " " + strings.Join(ids, ","))
	return nil
}
func (f *fakeClient) SetTyping(_ context.Context, p string, on bool) error {
	f.rec(fmt.Sprint("typing ", p, " ", on))
	return nil
}

func (f *fakeClient) did(s string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, c := range f.calls {
		if c == s {
			return true
		}
	}
	return false
}

func newTestModel(t *testing.T) (*model, *fakeClient, *history.DB) {
	t.Helper()
	db, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	pub, _, _ := ed25519.GenerateKey(nil)
	fc := &fakeClient{db: db, ev: make(chan client.Event)}
	t.Cleanup(func() { close(fc.ev) }) // ends the goroutines waiting for events
	m := newModel(context.Background(), Config{Client: fc, History: db, Name: "alice", Key: pub, Muted: new(atomic.Bool), Out: io.Discard})
	return m, fc, db
}

// run feeds msg to the model and runs the commands it returns (one level
// of batches), feeding their messages back, as the bubbletea loop would.
func run(m *model, msg tea.Msg) {
	_, cmd := m.Update(msg)
	runCmd(m, cmd, 0)
}

func runCmd(m *model, cmd tea.Cmd, depth int) {
	if cmd == nil || depth > 3 {
		return
	}
	// Commands that wait (the next client event, the 1 s tick) are left
	// behind after a moment, as the real loop would still be waiting.
	ch := make(chan tea.Msg, 1)
	go func() { ch <- cmd() }()
	var got tea.Msg
	select {
	case got = <-ch:
	case <-time.After(200 * time.Millisecond): // a Send that fsyncs its outbox may take a while under load
		return
	}
	switch msg := got.(type) {
	case tea.BatchMsg:
		for _, c := range msg {
			runCmd(m, c, depth+1)
		}
	case sentMsg, doneMsg:
		_, next := m.Update(msg)
		runCmd(m, next, depth+1)
	}
}

func typeText(m *model, s string) {
	for _, r := range s {
		run(m, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
	}
	run(m, tea.KeyMsg{Type: tea.KeyEnter})
}

// checkFrame asserts the view is exactly w x h cells.
func checkFrame(t *testing.T, m *model, w, h int) string {
	t.Helper()
	v := m.View()
	lines := strings.Split(v, "\n")
	if len(lines) != h {
		t.Fatalf("%dx%d: %d lines", w, h, len(lines))
	}
	for i, l := range lines {
		if n := lipgloss.Width(l); n != w {
			t.Fatalf("%dx%d: line %d is %d cells: %q", w, h, i, n, l)
		}
	}
	return v
}

func TestViewFitsEverySize(t *testing.T) {
	m, _, _ := newTestModel(t)
	typeText(m, "/add bob")
	for i := 0; i < 40; i++ {
		m.db.SaveIncoming(client.MessageEvent{From: "bob", ID: fmt.Sprint("m", i), Text: strings.Repeat("word ", i%30+1)})
	}
	m.reloadMessages()
	sizes := []struct{ w, h int }{{80, 24}, {120, 40}, {60, 15}, {80, 24}}
	for _, s := range sizes {
		run(m, tea.WindowSizeMsg{Width: s.w, Height: s.h})
		for _, overlay := range []string{"", "help", "verify"} {
			m.overlay, m.verifyWith = overlay, "bob"
			checkFrame(t, m, s.w, s.h)
		}
	}
}

func TestRingingVisibleWhileScrolled(t *testing.T) {
	m, fc, _ := newTestModel(t)
	run(m, tea.WindowSizeMsg{Width: 80, Height: 24})
	typeText(m, "/add bob")
	for i := 0; i < 60; i++ {
		m.db.SaveIncoming(client.MessageEvent{From: "bob", ID: fmt.Sprint("m", i), Text: fmt.Sprint("line ", i)})
	}
	m.reloadMessages()
	run(m, tea.KeyMsg{Type: tea.KeyPgUp})
	run(m, tea.KeyMsg{Type: tea.KeyPgUp})
	v := checkFrame(t, m, 80, 24)
	if strings.Contains(v, "line 59") || !strings.Contains(v, "more lines below") {
		t.Fatalf("not scrolled:\n%s", v)
	}
	run(m, eventMsg{client.CallEvent{With: "bob", Call: "c1", State: client.CallRinging, Direction: "incoming"}})
	v = checkFrame(t, m, 80, 24)
	if !strings.Contains(strings.Split(v, "\n")[1], "bob is calling") {
		t.Fatalf("ringing banner not on top:\n%s", v)
	}
	typeText(m, "/answer")
	if !fc.did("answer bob") {
		t.Fatalf("not answered: %v", fc.calls)
	}
	run(m, tea.KeyMsg{Type: tea.KeyEnd})
	if v := m.View(); !strings.Contains(v, "line 59") {
		t.Fatalf("End did not return to the newest:\n%s", v)
	}
}

func TestTicksAndKeyChange(t *testing.T) {
	m, fc, db := newTestModel(t)
	run(m, tea.WindowSizeMsg{Width: 80, Height: 24})
	k1, _, _ := ed25519.GenerateKey(nil)
	k2, _, _ := ed25519.GenerateKey(nil)
	b64 := base64.StdEncoding.EncodeToString
	run(m, eventMsg{client.PresenceEvent{Presence: proto.Presence{Name: "bob", Status: proto.StatusOnline, PublicKey: b64(k1)}}})
	typeText(m, "/add bob")
	if c, _ := db.Contact("bob"); c.Key != b64(k1) {
		t.Fatalf("key not pinned on /add: %+v", c)
	}
	if !fc.did("add bob") {
		t.Fatalf("the server was not asked for bob's presence: %v", fc.calls)
	}
	typeText(m, "hi bob")
	if !fc.did("send bob hi bob") {
		t.Fatalf("not sent: %v", fc.calls)
	}
	steps := []struct {
		ev   client.Event
		want string
	}{
		{nil, "me: hi bob ·"},
		{client.DeliveredEvent{ID: "id1", To: "bob"}, "me: hi bob ✓✓"},
		{client.StoredEvent{ID: "id1", To: "bob"}, "me: hi bob ✓✓"}, // never backwards
		{client.ReadEvent{ID: "id1", By: "bob"}, "me: hi bob ✓✓ read"},
		{client.TypingEvent{From: "bob", Typing: true}, "bob is typing…"},
	}
	for _, s := range steps {
		if s.ev != nil {
			run(m, eventMsg{s.ev})
		}
		if v := m.View(); !strings.Contains(v, s.want) {
			t.Fatalf("after %T want %q:\n%s", s.ev, s.want, v)
		}
	}
	// A new key: loud, and sending and calling are refused until /accept.
	run(m, eventMsg{client.PresenceEvent{Presence: proto.Presence{Name: "bob", Status: proto.StatusAway, PublicKey: b64(k2)}}})
	v := m.View()
	if !strings.Contains(v, "KEY CHANGED") {
		t.Fatalf("no alarm:\n%s", v)
	}
	typeText(m, "still you?")
	typeText(m, "/call bob")
	if fc.did("send bob still you?") || fc.did("call bob") {
		t.Fatalf("sent to a changed key: %v", fc.calls)
	}
	typeText(m, "/accept bob")
	typeText(m, "ok then")
	if !fc.did("send bob ok then") {
		t.Fatalf("not sent after accept: %v", fc.calls)
	}
	// Input history: Up recalls the last line.
	run(m, tea.KeyMsg{Type: tea.KeyUp})
	if string(m.input) != "ok then" {
		t.Fatalf("history recall %q", string(m.input))
	}
}

// TestUnsentNoticeAtStart: messages the last session handed over without
// a receipt are the client's to send again (its outbox is the history);
// the screen says so and sends nothing itself.
func TestUnsentNoticeAtStart(t *testing.T) {
	db, err := history.Open(filepath.Join(t.TempDir(), "h.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Queue(&client.OutMessage{ID: "m1", To: "bob", Text: "still there?", Time: 1}); err != nil {
		t.Fatal(err)
	}
	pub, _, _ := ed25519.GenerateKey(nil)
	fc := &fakeClient{ev: make(chan client.Event)}
	defer close(fc.ev)
	m := newModel(context.Background(), Config{Client: fc, History: db, Name: "alice", Key: pub, Muted: new(atomic.Bool), Out: io.Discard})
	if len(fc.calls) != 0 {
		t.Fatalf("the screen sent on its own: %v", fc.calls)
	}
	if !strings.Contains(m.notice, "1 message(s) from the last session are being sent again") {
		t.Fatalf("notice %q", m.notice)
	}
}

// TestCallEndedNotice: a call that found no network path ends with the
// client's reason on screen, in words (issue 9, item 4).
func TestCallEndedNotice(t *testing.T) {
	m, fc, _ := newTestModel(t)
	run(m, tea.WindowSizeMsg{Width: 100, Height: 24})
	typeText(m, "/add bob")
	typeText(m, "/call")
	if !fc.did("call bob") {
		t.Fatalf("not called: %v", fc.calls)
	}
	run(m, eventMsg{client.CallEvent{With: "bob", Call: "c1", State: client.CallRinging, Direction: "outgoing"}})
	reason := "no network path: the connection to bob failed (NATs or firewalls block a direct path and no relay was usable)"
	run(m, eventMsg{client.CallEvent{With: "bob", Call: "c1", State: client.CallEnded, Direction: "outgoing", Reason: reason}})
	v := checkFrame(t, m, 100, 24)
	if !strings.Contains(strings.Join(strings.Fields(v), " "), "call with bob ended: no network path") {
		t.Fatalf("no-path reason not shown:\n%s", v)
	}
}

// TestOnlineHereSection: people online on this server who are not
// contacts are listed below the contacts where there is room, with how to
// add them; the ones that do not fit are counted, and /who lists all.
func TestOnlineHereSection(t *testing.T) {
	m, _, _ := newTestModel(t)
	run(m, tea.WindowSizeMsg{Width: 80, Height: 24})
	typeText(m, "/add bob")
	for _, name := range []string{"bob", "carol", "dave"} {
		run(m, eventMsg{client.PresenceEvent{Presence: proto.Presence{Name: name, Status: proto.StatusOnline}}})
	}
	run(m, eventMsg{client.PresenceEvent{Presence: proto.Presence{Name: "erin", Status: proto.StatusOffline}}})
	v := checkFrame(t, m, 80, 24)
	list := ""
	for _, l := range strings.Split(v, "\n") {
		list += strings.SplitN(l, "│", 2)[0] + "\n"
	}
	for _, want := range []string{"Online here · /add", "● carol", "● dave"} {
		if !strings.Contains(list, want) {
			t.Errorf("list lacks %q:\n%s", want, list)
		}
	}
	if strings.Count(list, "● bob") != 1 || strings.Contains(list, "erin") {
		t.Errorf("a contact listed twice, or someone offline listed:\n%s", list)
	}
	// Too many for the room: the rest are counted.
	for i := 0; i < 30; i++ {
		m.presence[fmt.Sprint("u", 10+i)] = proto.Presence{Name: fmt.Sprint("u", 10+i), Status: proto.StatusOnline}
	}
	v = checkFrame(t, m, 80, 24)
	if !strings.Contains(v, "more · /who") {
		t.Errorf("no count of the people who do not fit:\n%s", v)
	}
}

// TestDisconnectReasonShown: while the client cannot reach the server the
// screen says why, not only "offline · retry in …" (the reason used to go
// to the log file alone, so a server with a self-made certificate looked
// like a server that was down), and an untrusted certificate names --ca.
func TestDisconnectReasonShown(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want []string
	}{
		{"refused", errors.New("client: dial ws://127.0.0.1:8080/ws: connect: connection refused"),
			[]string{"cannot reach the server", "connection refused"}},
		{"certificate", fmt.Errorf("client: dial wss://localhost:8443/ws: %w",
			&tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}),
			[]string{"certificate", "--ca FILE"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, _, _ := newTestModel(t)
			run(m, tea.WindowSizeMsg{Width: 100, Height: 24})
			run(m, eventMsg{client.DisconnectedEvent{Err: tc.err, Retry: "1.2s"}})
			v := strings.Join(strings.Fields(checkFrame(t, m, 100, 24)), " ")
			for _, w := range append(tc.want, "retry in 1.2s") {
				if !strings.Contains(v, w) {
					t.Errorf("%q not on screen:\n%s", w, v)
				}
			}
			run(m, eventMsg{client.ReadyEvent{Name: "alice", Reconnect: true}})
			if v := m.View(); strings.Contains(v, "cannot reach") || strings.Contains(v, "certificate") {
				t.Errorf("the reason stays after reconnecting:\n%s", v)
			}
		})
	}
}

// TestBackupPassphraseConfirmed: the passphrase of a key backup is typed
// unseen, so /backup asks for it twice and writes nothing when the two
// differ (a typo would have locked the backup for good); the second
// typing is masked too and never sent as a message.
func TestBackupPassphraseConfirmed(t *testing.T) {
	m, fc, _ := newTestModel(t)
	var wrote []string
	m.cfg.Backup = func(path, pass string) error {
		wrote = append(wrote, path+" "+pass)
		return nil
	}
	run(m, tea.WindowSizeMsg{Width: 100, Height: 24})
	typeText(m, "/add bob")

	typeText(m, "/backup /tmp/k1")
	typeText(m, "correct horse battery")
	if len(wrote) != 0 {
		t.Fatalf("backup written after one typing: %v", wrote)
	}
	if v := m.View(); !strings.Contains(v, "passphrase ›") || !strings.Contains(v, "again") {
		t.Fatalf("no second passphrase prompt:\n%s", v)
	}
	typeText(m, "correct horse batery")
	if len(wrote) != 0 {
		t.Fatalf("backup written although the passphrases differ: %v", wrote)
	}
	if !strings.Contains(m.notice, "differ") {
		t.Fatalf("notice %q, want the passphrases differ", m.notice)
	}

	typeText(m, "/backup /tmp/k2")
	typeText(m, "correct horse battery")
	typeText(m, "correct horse battery")
	if len(wrote) != 1 || wrote[0] != "/tmp/k2 correct horse battery" {
		t.Fatalf("backups written: %v", wrote)
	}
	fc.mu.Lock()
	defer fc.mu.Unlock()
	for _, c := range fc.calls {
		if strings.Contains(c, "horse") {
			t.Fatalf("the passphrase went to the client: %q", c)
		}
	}
}
