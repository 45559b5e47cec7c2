package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/internal/testutil"
)

// TestNoPathEndsClearly (issue 9, item 4): `parley serve` with its
// built-in supernode off, so nothing relays; a home that passes only TCP
// 443 calls a symmetric NAT. There is no path. With the settings the
// binaries use (nothing shortened), the call ends on both sides within
// noPathWithin with a reason a person understands: in the JSON mode of
// `parley chat` (the real binary, both ends), and on the call page
// (Chromium) calling a Go client. The TUI prints the same event's reason
// (internal/tui's TestCallEndedNotice).
func TestNoPathEndsClearly(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab with the binary and a browser")
	}
	s := startServedLab(t, "--supernode", "off")
	hu := s.lab.AddHome("nu", natlab.UDPBlocked)
	hs := s.lab.AddHome("ns", natlab.Symmetric)
	for _, h := range []*natlab.Home{hu, hs} {
		if err := h.Client.SetHosts(map[string]netip.Addr{serveName: s.ip}); err != nil {
			t.Fatal(err)
		}
	}
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, s.ca.PEM, 0o600); err != nil {
		t.Fatal(err)
	}

	t.Run("JSON mode", func(t *testing.T) {
		bob := startJSONChat(t, hs, caFile, "bobj", "--auto-answer")
		alice := startJSONChat(t, hu, caFile, "alicej")
		alice.waitEvent(t, 30*time.Second, "bobj online", func(e map[string]any) bool {
			return e["event"] == "presence" && e["name"] == "bobj" && e["online"] == true
		})
		t0 := time.Now()
		alice.send(t, `{"cmd":"call","to":"bobj"}`)
		for _, p := range []*jsonChat{alice, bob} {
			other := map[string]string{"alicej": "bobj", "bobj": "alicej"}[p.name]
			e, at := p.waitEvent(t, 2*noPathWithin, "the call ends", func(e map[string]any) bool {
				return e["event"] == "call" && e["with"] == other && e["state"] == "ended"
			})
			reason, _ := e["reason"].(string)
			t.Logf("%s: ended after %s: %q", p.name, at.Sub(t0).Round(time.Millisecond), reason)
			if !strings.HasPrefix(reason, "no network path") {
				t.Errorf("%s: the call ended with %q, want the no-path reason", p.name, reason)
			}
			if d := at.Sub(t0); d > noPathWithin {
				t.Errorf("%s: the call took %s to end, want within %s", p.name, d.Round(time.Millisecond), noPathWithin)
			}
		}
	})

	t.Run("call page", func(t *testing.T) {
		ctx := s.browser(t, hu)
		do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
			t.Helper()
			c, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			if err := chromedp.Do(c, actions...); err != nil {
				t.Fatalf("page: %s: %v", what, err)
			}
		}
		do("open the call page", chromedp.Navigate("https://"+serveName+"/"))
		jsWait(t, ctx, "page booted", `window.parley !== undefined`, 20*time.Second)
		do("sign in", chromedp.SendKeys(testid("name-input"), "alicep"+kb.Enter))
		jsWait(t, ctx, "signed in", `document.querySelector('[data-testid=conn-status]').dataset.state === "online"`, 20*time.Second)
		bob := s.goPeer(t, hs, "bobp")
		bob.wait(t, 30*time.Second, "NAT report", isNATDone)
		jsWait(t, ctx, "bob listed", `document.querySelector('[data-testid="contact-bobp"]') !== null`, 20*time.Second)
		do("open bob", chromedp.Click(testid("contact-bobp")))
		mark := bob.ev.Len()
		t0 := time.Now()
		do("call bob", chromedp.Click(testid("call")))
		jsWait(t, ctx, "the page says there is no path", `(document.querySelector('[data-testid=call-state]')?.textContent || "").includes("no network path")`, 2*noPathWithin)
		d := time.Since(t0)
		text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('[data-testid=call-state]').textContent`))
		t.Logf("page: after %s: %q", d.Round(time.Millisecond), text)
		if d > noPathWithin {
			t.Errorf("the page took %s to end the call, want within %s", d.Round(time.Millisecond), noPathWithin)
		}
		ce := bob.ev.WaitSince(t, mark, noPathWithin, "bob's call ends", func(st stamped) bool {
			c, ok := st.ev.(client.CallEvent)
			return ok && c.With == "alicep" && c.State == client.CallEnded
		}).ev.(client.CallEvent)
		if !strings.HasPrefix(ce.Reason, "no network path") {
			t.Errorf("Go side: ended with %q, want the no-path reason", ce.Reason)
		}
	})
}

// jsonChat is `parley chat --json` running in a home.
type jsonChat struct {
	name  string
	stdin io.WriteCloser
	ev    *testutil.Recorder[stampedJSON]
}

type stampedJSON struct {
	at time.Time
	e  map[string]any
}

// startJSONChat runs `parley chat --json` as name in home against the
// served lab, trusting caFile; it is stopped when the test ends.
func startJSONChat(t *testing.T, home *natlab.Home, caFile, name string, extra ...string) *jsonChat {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	args := append([]string{"chat", "--json", "--server", "https://" + serveName, "--ca", caFile,
		"--name", name, "--profile", t.TempDir(), "--audio-in", "silence"}, extra...)
	cmd := home.Client.Command(ctx, parleyBinary(t), args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	var mu sync.Mutex
	cmd.Stderr = writerFunc(func(p []byte) (int, error) { mu.Lock(); defer mu.Unlock(); return stderr.Write(p) })
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ch := make(chan stampedJSON, 64)
	go func() {
		defer close(ch)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			var e map[string]any
			if json.Unmarshal(sc.Bytes(), &e) == nil {
				ch <- stampedJSON{time.Now(), e}
			}
		}
	}()
	c := &jsonChat{name: name, stdin: stdin, ev: testutil.Record(ch)}
	t.Cleanup(func() {
		stdin.Close()
		cancel()
		cmd.Wait()
		if t.Failed() {
			mu.Lock()
			t.Logf("%s stderr:\n%s", name, stderr.String())
			mu.Unlock()
		}
	})
	return c
}

func (c *jsonChat) send(t *testing.T, line string) {
	t.Helper()
	if _, err := fmt.Fprintln(c.stdin, line); err != nil {
		t.Fatalf("%s: %v", c.name, err)
	}
}

// waitEvent waits for an event match accepts and returns it with its time.
func (c *jsonChat) waitEvent(t *testing.T, d time.Duration, what string, match func(map[string]any) bool) (map[string]any, time.Time) {
	t.Helper()
	s := c.ev.Wait(t, d, c.name+": "+what, func(s stampedJSON) bool { return match(s.e) })
	return s.e, s.at
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
