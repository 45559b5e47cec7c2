package web_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// TestTUIAndBrowserCallSurviveServerOutage (issue 12, broken item 1, the
// TUI<->browser case): the real `parley chat` terminal client in tmux and a
// page are in a call when the signaling server goes away for 20 s; both
// come back, and the call goes on with audio both ways: the page receives
// and sends packets, and the terminal's recording of the page keeps
// growing after the outage.
func TestTUIAndBrowserCallSurviveServerOutage(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Skip("SKIP: tmux is not installed (scripts/install-test-deps.sh installs it)")
	}
	srv := signaltest.StartRestartable(t, signal.Config{Web: web.Handler()})
	dir := t.TempDir()
	bin := filepath.Join(dir, "parley")
	if out, err := exec.Command("go", "build", "-o", bin, "../cmd/parley").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	heard := filepath.Join(dir, "heard.ogg")
	sock := fmt.Sprintf("parley-web-tui-%d", os.Getpid())
	tmux := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("tmux", append([]string{"-L", sock}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	tmux("new-session", "-d", "-s", "main", "-x", "80", "-y", "24",
		strings.Join([]string{bin, "chat", "--server", srv.HTTP, "--name", "tui", "--profile", filepath.Join(dir, "tui"),
			"--ice-loopback", "--audio-in", "tone", "--audio-out", heard}, " ")+"; sleep 30")
	t.Cleanup(func() { exec.Command("tmux", "-L", sock, "kill-server").Run() })
	screen := func(what string, want ...string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for {
			s := tmux("capture-pane", "-p", "-t", "main")
			ok := true
			for _, w := range want {
				ok = ok && strings.Contains(s, w)
			}
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("terminal: waiting for %s (%q); screen:\n%s", what, want, s)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	size := func() int64 {
		fi, err := os.Stat(heard)
		if err != nil {
			return 0
		}
		return fi.Size()
	}

	screen("signed in", "parley · tui", "● connected")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contact-tui")
	p.click("call")
	screen("ringing", "alice is calling")
	tmux("send-keys", "-t", "main", "-l", "/answer")
	tmux("send-keys", "-t", "main", "Enter")
	p.waitFor("connected", textHas("call-state", "connected", "direct"))
	screen("connected in the terminal", "☎ alice · connected")
	p.audioFlows(25)

	srv.Down()
	until := time.Now().Add(serverOutage)
	p.waitFor("outage shown", `document.querySelector('[data-testid=conn-status]').dataset.state === 'waiting'`)
	time.Sleep(time.Until(until)) // the outage itself is the scenario
	p.audioFlows(25)
	srv.Up()
	p.waitForD("page back", `document.querySelector('[data-testid=conn-status]').dataset.state === 'online'`, 30*time.Second)
	screen("terminal back", "● connected", "☎ alice · connected")
	before := size()
	p.audioFlows(50)
	p.waitFor("still connected", textHas("call-state", "connected"))
	deadline := time.Now().Add(wait)
	for size() <= before {
		if time.Now().After(deadline) {
			t.Fatalf("the terminal's recording stopped growing after the outage (%d bytes)", before)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p.click("hangup")
	screen("the terminal sees the hang-up", "call with alice ended")
}
