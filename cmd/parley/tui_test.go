package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

// These tests drive the real `parley chat` binary in a real terminal: tmux
// runs it in an 80x24 window, the test types with send-keys and reads the
// screen with capture-pane. The other side is a Go client on loopback.
// Screens worth showing are written to docs/tui/*.txt.

const tuiWait = 15 * time.Second

// tmuxTerm is one tmux server (its own socket) running one window.
type tmuxTerm struct {
	t    *testing.T
	sock string
}

func needTmux(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("SKIP: tmux is not installed (scripts/install-test-deps.sh installs it); the terminal UI is untested")
	}
}

// startTUI runs parley with args in a new 80x24 tmux window.
func startTUI(t *testing.T, args ...string) *tmuxTerm {
	t.Helper()
	tm := &tmuxTerm{t: t, sock: fmt.Sprintf("parley-tui-%d-%d", os.Getpid(), time.Now().UnixNano())}
	cmdline := []string{parleyBinary(t)}
	for _, a := range args {
		cmdline = append(cmdline, "'"+a+"'")
	}
	tm.tmux("new-session", "-d", "-s", "main", "-x", "80", "-y", "24", strings.Join(cmdline, " ")+"; echo EXITED $?; sleep 30")
	tm.tmux("set-option", "-t", "main", "remain-on-exit", "on")
	t.Cleanup(func() { exec.Command("tmux", "-L", tm.sock, "kill-server").Run() })
	return tm
}

func (tm *tmuxTerm) tmux(args ...string) string {
	tm.t.Helper()
	out, err := exec.Command("tmux", append([]string{"-L", tm.sock}, args...)...).CombinedOutput()
	if err != nil {
		tm.t.Fatalf("tmux %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// typeLine types text and presses Enter.
func (tm *tmuxTerm) typeLine(text string) {
	tm.t.Helper()
	tm.tmux("send-keys", "-t", "main", "-l", text)
	tm.tmux("send-keys", "-t", "main", "Enter")
}

func (tm *tmuxTerm) key(k string) { tm.t.Helper(); tm.tmux("send-keys", "-t", "main", k) }

// escape closes the overlay that shows marker and waits until it is gone:
// keys typed right after a lone Escape would read as Alt+key.
func (tm *tmuxTerm) escape(marker string) {
	tm.t.Helper()
	tm.key("Escape")
	tm.waitScreenFunc("overlay closed", func(s string) bool { return !strings.Contains(s, marker) })
}

func (tm *tmuxTerm) screen() string {
	tm.t.Helper()
	return tm.tmux("capture-pane", "-p", "-t", "main")
}

// waitScreen polls the screen until every want appears on it.
func (tm *tmuxTerm) waitScreen(what string, want ...string) string {
	tm.t.Helper()
	deadline := time.Now().Add(tuiWait)
	for {
		s := tm.screen()
		ok := true
		for _, w := range want {
			if !strings.Contains(s, w) {
				ok = false
			}
		}
		if ok {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("waiting for %s (%q); screen:\n%s", what, want, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitScreenFunc polls the screen until ok accepts it.
func (tm *tmuxTerm) waitScreenFunc(what string, ok func(string) bool) string {
	tm.t.Helper()
	deadline := time.Now().Add(tuiWait)
	for {
		s := tm.screen()
		if ok(s) {
			return s
		}
		if time.Now().After(deadline) {
			tm.t.Fatalf("waiting for %s; screen:\n%s", what, s)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// tuiScreens is where saveScreen writes; `make docs` sets it to docs/tui.
var tuiScreens = flag.String("tui-screens", "", "directory the terminal UI tests write screen captures to (empty: don't write)")

// saveScreen writes the screen to *tuiScreens/name.txt.
func (tm *tmuxTerm) saveScreen(name string) {
	tm.t.Helper()
	dir := *tuiScreens
	if dir == "" {
		return
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tm.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".txt"), []byte(tm.screen()), 0o644); err != nil {
		tm.t.Fatal(err)
	}
}

// sigServer is a signaling server that can be stopped and started again
// on the same address (and data directory).
type sigServer struct {
	t    *testing.T
	addr string
	dir  string
	srv  *signal.Server
	stop func()
}

func startSignal(t *testing.T, dir string) *sigServer {
	s := &sigServer{t: t, dir: dir}
	s.start()
	t.Cleanup(func() { s.stop() })
	return s
}

func (s *sigServer) start() {
	s.t.Helper()
	addr := s.addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the old listener may take a moment to go
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatal(err)
	}
	s.addr = ln.Addr().String()
	srv, err := signal.New(signal.Config{DataDir: s.dir})
	if err != nil {
		s.t.Fatal(err)
	}
	s.srv = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	stopped := false
	s.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil && !errors.Is(err, signal.ErrClosed) {
			s.t.Errorf("serve: %v", err)
		}
	}
}

func (s *sigServer) url() string { return "http://" + s.addr }

// goPeer is the other side: a Go client on loopback.
type goPeer struct {
	*client.Client
	ev   *testutil.Recorder[client.Event]
	stop func()
}

func startPeer(t *testing.T, url, name string, key ed25519.PrivateKey, mods ...func(*client.Config)) *goPeer {
	t.Helper()
	cfg := client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 300 * time.Millisecond}
	for _, mod := range mods {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := &goPeer{Client: c, ev: testutil.Record(c.Events())}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); c.Run(ctx) }()
	stopped := false
	p.stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(p.stop)
	p.ev.Wait(t, tuiWait, name+" ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	return p
}

func gotText(from, text string) func(client.Event) bool {
	return func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == from && m.Text == text
	}
}

func TestTUIChatCallOfflineAndRestart(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, t.TempDir())
	profile := filepath.Join(t.TempDir(), "alice")
	_, bobKey, _ := ed25519.GenerateKey(nil)
	bob := startPeer(t, sig.url(), "bob", bobKey)
	ctx := context.Background()
	args := []string{"chat", "--server", sig.url(), "--name", "alice", "--profile", profile, "--ice-loopback", "--audio-in", "silence"}

	alice := startTUI(t, args...)
	alice.waitScreen("connected", "parley · alice", "● connected")
	alice.key("?")
	alice.waitScreen("help", "/add NAME", "/who", "↓ more: PgDn")
	alice.saveScreen("help")
	alice.key("PgDn") // at 80x24 the rest of the help is further down
	alice.waitScreen("help, second page", "/verify")
	alice.key("PgDn")
	alice.waitScreen("help, last page", "/send PATH", "✓✓ read")
	alice.escape("✓✓ read")
	// /who lists who is online here; /add of a name nobody has says so.
	alice.typeLine("/who")
	alice.waitScreen("who is online", "Online on this server (1)", "bob · online")
	alice.saveScreen("who")
	alice.escape("Online on this server")

	// Add a contact: presence shows at once; the key is pinned.
	alice.typeLine("/add bob")
	alice.waitScreen("bob online", "● bob", "online", "key pinned")

	// Chat both ways with ticks and a typing indicator.
	alice.typeLine("hello bob")
	m := bob.ev.Wait(t, tuiWait, "bob gets hello", gotText("alice", "hello bob")).(client.MessageEvent)
	alice.waitScreen("delivered tick", "me: hello bob ✓✓")
	bob.SetTyping(ctx, "alice", true)
	alice.waitScreen("typing", "bob is typing…")
	if _, err := bob.Send(ctx, "alice", "hi alice! how are you?"); err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("bob's message", "bob: hi alice! how are you?")
	bob.ev.Wait(t, tuiWait, "read receipt from alice", func(e client.Event) bool { r, ok := e.(client.ReadEvent); return ok && r.By == "alice" })
	bob.MarkRead(ctx, "alice", m.ID)
	alice.waitScreen("read tick", "hello bob ✓✓ read")
	alice.saveScreen("chat")

	// Resizes redraw cleanly: a bigger window fills every row and the
	// right edge; back to 80x24 nothing is left over.
	fills := func(w, h int) func(string) bool {
		return func(s string) bool {
			lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
			// The title's last cell is a space, which capture-pane trims.
			return len(lines) == h && len([]rune(lines[0])) == w-1 && strings.HasSuffix(lines[0], "● connected") &&
				strings.HasPrefix(lines[h-1], " ? help") && strings.Contains(s, "bob: hi alice! how are you?")
		}
	}
	alice.tmux("resize-window", "-t", "main", "-x", "100", "-y", "30")
	alice.waitScreenFunc("redrawn at 100x30", fills(100, 30))
	alice.tmux("resize-window", "-t", "main", "-x", "80", "-y", "24")
	alice.waitScreenFunc("redrawn at 80x24", fills(80, 24))

	// A call rings (banner on top) and connects; the status bar shows the path.
	if err := bob.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("ringing", "bob is calling", "/answer")
	alice.saveScreen("ringing")
	alice.typeLine("/answer")
	bob.ev.Wait(t, tuiWait, "bob connected", func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.State == client.CallConnected
	})
	alice.waitScreen("call connected", "☎ bob · connected", "direct")
	// Without a sound device the screen says why nothing is heard.
	alice.waitScreen("audio note", "sending silence, their audio discarded (no sound device)")
	rtt := regexp.MustCompile(`RTT [0-9]+\.[0-9] ms · loss [0-9]+\.[0-9]%`)
	alice.waitScreenFunc("call stats", func(s string) bool { return rtt.MatchString(s) })
	mark := bob.ev.Len()
	alice.typeLine("/mute")
	alice.waitScreen("muted", "MUTED")
	bob.ev.WaitSince(t, mark, tuiWait, "bob sees alice muted", func(e client.Event) bool {
		x, ok := e.(client.MuteEvent)
		return ok && x.With == "alice" && x.Muted
	})
	if err := bob.SetMuted(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("bob shown muted", "bob muted")
	alice.saveScreen("call")
	alice.typeLine("/hangup")
	alice.waitScreen("call ended", "call with bob ended")

	// Bob leaves: presence changes; a message waits, sealed, on the server
	// (one tick), across a server restart, and is delivered once (two ticks).
	bob.stop()
	alice.waitScreen("bob offline", "○ bob", "seen just now")
	alice.typeLine("see you later")
	alice.waitScreen("stored tick", "me: see you later ✓")
	sig.stop()
	sig.start()
	alice.waitScreen("reconnected", "● connected")
	bob = startPeer(t, sig.url(), "bob", bobKey)
	bob.ev.Wait(t, tuiWait, "bob gets the offline message", gotText("alice", "see you later"))
	alice.waitScreen("delivered after offline", "me: see you later ✓✓")
	alice.saveScreen("offline-delivered")
	time.Sleep(300 * time.Millisecond) // room for a duplicate to show up
	if n := bob.ev.Count(gotText("alice", "see you later")); n != 1 {
		t.Fatalf("offline message delivered %d times", n)
	}
	if n, _ := sig.srv.OfflineWaiting("bob"); n != 0 {
		t.Fatalf("%d messages still waiting", n)
	}

	// Quit and start again: the history is still there.
	alice.typeLine("/quit")
	alice.waitScreen("exit", "EXITED 0")
	alice = startTUI(t, args...)
	alice.waitScreen("history after restart", "● connected", "hello bob ✓✓ read", "bob: hi alice! how are you?", "see you later ✓✓")
	alice.saveScreen("restart")
	// /add of a name nobody here has is added (they may sign up later),
	// but the screen says so: a typo does not pass silently.
	alice.typeLine("/add bbo")
	alice.waitScreen("unknown name", "nobody of that name is known on this server")
}

func TestTUIChangedKeyRefusedUntilAccepted(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, "") // memory registry: a restart forgets who owns "bob"
	profile := filepath.Join(t.TempDir(), "alice")
	_, k1, _ := ed25519.GenerateKey(nil)
	bob := startPeer(t, sig.url(), "bob", k1)
	alice := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", profile, "--ice-loopback", "--audio-in", "silence")
	alice.waitScreen("connected", "● connected")
	alice.typeLine("/add bob")
	alice.waitScreen("pinned", "key pinned")

	// The server is replaced and someone else takes "bob" with another key.
	bob.stop()
	sig.stop()
	sig.start()
	_, k2, _ := ed25519.GenerateKey(nil)
	bob = startPeer(t, sig.url(), "bob", k2)
	alice.waitScreen("key change alarm", "KEY CHANGED", "/accept bob")
	alice.typeLine("are you really bob?")
	alice.waitScreen("refused", "refused: bob's key changed")
	alice.typeLine("/call bob")
	alice.waitScreen("call refused", "refused: bob's key changed")
	alice.saveScreen("key-changed")
	if n := bob.ev.Count(gotText("alice", "are you really bob?")); n != 0 {
		t.Fatal("a message went to a changed key")
	}
	alice.typeLine("/verify bob")
	// The number is the one bob computes on his side for the same keys.
	aliceKey, err := client.LoadOrCreateIdentity(profile)
	if err != nil {
		t.Fatal(err)
	}
	num := strings.Fields(history.SafetyNumber("bob", k2.Public().(ed25519.PublicKey), "alice", aliceKey.Public().(ed25519.PublicKey)))
	alice.waitScreen("safety number", "Safety number with bob", "NEW key", strings.Join(num[:4], " "), strings.Join(num[8:], " "))
	alice.saveScreen("verify")
	alice.escape("Safety number with bob")
	alice.typeLine("/accept bob")
	alice.waitScreen("accepted", "accepted the new key of bob")
	alice.typeLine("now it is fine")
	bob.ev.Wait(t, tuiWait, "bob gets it after acceptance", gotText("alice", "now it is fine"))
	alice.waitScreen("delivered", "now it is fine ✓✓")

}

// TestTUITakenNameSaysWhy (issue 12, broken item 2): a name another key
// owns used to close the screen with exit status 0 and no word. The TUI
// ends, says why, and exits non-zero; so does the JSON mode, which used to
// print one error and idle.
func TestTUITakenNameSaysWhy(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, t.TempDir())
	_, key, _ := ed25519.GenerateKey(nil)
	startPeer(t, sig.url(), "alice", key)

	tm := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", filepath.Join(t.TempDir(), "p"), "--ice-loopback", "--audio-in", "silence")
	tm.waitScreen("the reason and a failing exit status", `cannot sign in as "alice"`, "belongs to another key", "EXITED 1")

	cmd := exec.Command(parleyBinary(t), "chat", "--json", "--server", sig.url(), "--name", "alice", "--profile", filepath.Join(t.TempDir(), "q"), "--ice-loopback")
	stdin, err := cmd.StdinPipe() // kept open: the mode must end by itself
	if err != nil {
		t.Fatal(err)
	}
	defer stdin.Close()
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(tuiWait):
		cmd.Process.Kill()
		<-done
		t.Fatalf("JSON mode still running after name_taken; stdout:\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Errorf("JSON mode exited with %v, want a non-zero status", err)
	}
	if !strings.Contains(out.String(), `"code":"name_taken"`) || !strings.Contains(errOut.String(), "belongs to another key") {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
}

// TestTUIKeyBackupAndRestore (issue 12 "a way not to lose a name"):
// /backup writes the key under a passphrase typed unseen; `parley key
// import` restores it into a new profile, which signs in as the same name
// with the same key, and a wrong passphrase is refused.
func TestTUIKeyBackupAndRestore(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, t.TempDir())
	dir := t.TempDir()
	profile := filepath.Join(dir, "alice")
	tm := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", profile, "--ice-loopback", "--audio-in", "silence")
	tm.waitScreen("connected", "● connected")
	backup := filepath.Join(dir, "alice.key")
	tm.typeLine("/backup " + backup)
	tm.waitScreen("passphrase prompt", "passphrase ›", "not shown")
	tm.tmux("send-keys", "-t", "main", "-l", "correct horse battery")
	screen := tm.waitScreen("masked", "passphrase › •••••")
	if strings.Contains(screen, "horse") {
		t.Fatalf("the passphrase is on the screen:\n%s", screen)
	}
	tm.key("Enter")
	tm.waitScreen("asked again", "type the passphrase again")
	tm.tmux("send-keys", "-t", "main", "-l", "correct horse battery")
	tm.key("Enter")
	tm.waitScreen("backed up", "your key is backed up in")
	tm.saveScreen("backup")
	tm.key("C-c")

	run := func(pass string, args ...string) (string, error) {
		cmd := exec.Command(parleyBinary(t), args...)
		cmd.Stdin = strings.NewReader(pass + "\n")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := run("wrong horse battery", "key", "import", "--in", backup, "--profile", filepath.Join(dir, "x")); err == nil || !strings.Contains(out, "wrong passphrase") {
		t.Errorf("a wrong passphrase: %v\n%s", err, out)
	}
	restored := filepath.Join(dir, "restored")
	if out, err := run("correct horse battery", "key", "import", "--in", backup, "--profile", restored); err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	want, _ := client.LoadOrCreateIdentity(profile)
	got, _ := client.LoadOrCreateIdentity(restored)
	if !want.Equal(got) {
		t.Fatal("the restored profile holds another key")
	}
	// The restored profile is alice to the server: no name_taken.
	tm2 := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", restored, "--ice-loopback", "--audio-in", "silence")
	tm2.waitScreen("signed in with the restored key", "parley · alice", "● connected")
}

// TestTUICallLogDraftsAndBlocking (issue 12): the conversation logs calls
// (declined, missed, "Outgoing voice call · 0:0N"), each conversation
// keeps its own draft, and /block refuses a contact's messages and calls
// (the sender is told) until /unblock.
func TestTUICallLogDraftsAndBlocking(t *testing.T) {
	needTmux(t)
	sig := startSignal(t, t.TempDir())
	_, bk, _ := ed25519.GenerateKey(nil)
	_, ck, _ := ed25519.GenerateKey(nil)
	bob := startPeer(t, sig.url(), "bob", bk)
	carol := startPeer(t, sig.url(), "carol", ck, func(c *client.Config) { c.DisplayName = "Carol Ann Lee" })
	ctx := context.Background()
	aliceProfile := filepath.Join(t.TempDir(), "alice")
	alice := startTUI(t, "chat", "--server", sig.url(), "--name", "alice", "--profile", aliceProfile, "--ice-loopback", "--audio-in", "silence", "--display-name", "Alice Martin")
	alice.waitScreen("connected", "● connected")
	alice.typeLine("/add carol")
	alice.typeLine("/add bob")
	alice.waitScreen("bob open", "bob · online")

	// Drafts stay with their conversation.
	alice.tmux("send-keys", "-t", "main", "-l", "half a thought")
	alice.key("Tab")
	alice.waitScreen("carol's empty input", "carol › █")
	alice.key("Tab")
	alice.waitScreen("bob's draft back", "bob › half a thought█")
	alice.key("C-u")

	// Declined, then missed.
	mark := bob.ev.Len()
	if err := bob.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("ringing", "bob is calling")
	alice.typeLine("/decline")
	bob.ev.WaitSince(t, mark, tuiWait, "declined", isCallState("alice", client.CallEnded))
	mark = bob.ev.Len()
	if err := bob.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	alice.waitScreen("ringing again", "bob is calling")
	bob.Hangup(ctx, "alice")
	alice.waitScreen("log", "☎ You declined a call from bob", "☎ Missed call from bob")

	// A call that connects is logged with its length.
	mark = bob.ev.Len()
	alice.typeLine("/call")
	bob.ev.WaitSince(t, mark, tuiWait, "bob rings", isCallState("alice", client.CallRinging))
	bob.Answer(ctx, "alice")
	alice.waitScreen("connected", "☎ bob · connected")
	alice.typeLine("/hangup")
	alice.waitScreen("voice call logged", "☎ Outgoing voice call · 0:0")
	alice.saveScreen("call-log")

	// Blocked: bob is refused and told so; unblocked: welcome again.
	alice.typeLine("/block bob")
	alice.waitScreen("blocked", "blocked (/unblock bob)", "⊘ blocked")
	mark = bob.ev.Len()
	id, err := bob.Send(ctx, "alice", "let me in")
	if err != nil {
		t.Fatal(err)
	}
	e := bob.ev.WaitSince(t, mark, tuiWait, "refusal", func(e client.Event) bool { x, ok := e.(client.ErrorEvent); return ok && x.Ref == id }).(client.ErrorEvent)
	if e.Err.Code != proto.CodeNotAccepted || e.Err.Message != "not delivered: alice does not accept messages from you" {
		t.Errorf("refused with %q: %q (alice blocked bob; she does not take contacts only, and the words never say which)", e.Err.Code, e.Err.Message)
	}
	if err := bob.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	ce := bob.ev.WaitSince(t, mark, tuiWait, "call refused", isCallState("alice", client.CallEnded)).(client.CallEvent)
	if ce.Code != proto.EndRefused || ce.Reason != "alice does not accept calls from you" {
		t.Errorf("call ended with %q: %q", ce.Code, ce.Reason)
	}
	alice.typeLine("/unblock bob")
	alice.waitScreen("unblocked", "unblocked bob")
	bob.Send(ctx, "alice", "thanks")
	alice.waitScreen("welcome again", "bob: thanks")
	if strings.Contains(alice.screen(), "let me in") {
		t.Error("a message sent while blocked is shown")
	}

	// Display names: ours from --display-name in the title and on our
	// messages, /nick changes it; a contact's beside their handle, which
	// keeps a line of its own in the list.
	alice.waitScreen("our display name", "parley · Alice Martin (alice)")
	mark = bob.ev.Len()
	alice.typeLine("hello with a name")
	if m := bob.ev.WaitSince(t, mark, tuiWait, "bob gets it", isMessage("alice", "hello with a name")).(client.MessageEvent); m.Display != "Alice Martin" {
		t.Errorf("bob sees alice's display name %q, want \"Alice Martin\"", m.Display)
	}
	alice.typeLine("/nick Alice  Martin")
	alice.waitScreen("two spaces refused", "one plain space between words")
	alice.typeLine("/nick Alice M. Martin")
	alice.waitScreen("renamed", "parley · Alice M. Martin (alice)")
	mark = bob.ev.Len()
	alice.typeLine("renamed")
	if m := bob.ev.WaitSince(t, mark, tuiWait, "bob gets renamed", isMessage("alice", "renamed")).(client.MessageEvent); m.Display != "Alice M. Martin" {
		t.Errorf("after /nick bob sees %q, want \"Alice M. Martin\"", m.Display)
	}
	if b, _ := os.ReadFile(filepath.Join(aliceProfile, "display-name")); strings.TrimSpace(string(b)) != "Alice M. Martin" {
		t.Errorf("profile keeps display name %q", b)
	}
	carol.Send(ctx, "alice", "hi from carol")
	alice.waitScreen("carol's display name", "Carol Ann Lee", "carol · ")
}

func isMessage(from, text string) func(client.Event) bool {
	return func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == from && m.Text == text
	}
}

func isCallState(with string, st client.CallState) func(client.Event) bool {
	return func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.With == with && c.State == st
	}
}
