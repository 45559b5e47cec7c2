package e2e

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/internal/testutil"
)

// The tests in this file run the real `parley serve` binary on the lab's
// public net, as an operator runs it on a server: one command, defaults
// for everything but the certificate and the data directory. Nothing else
// serves the lab: no separate STUN server, no volunteer supernode.

var parleyBuild struct {
	sync.Once
	path string
	err  error
}

// parleyBinary builds cmd/parley once per test run.
func parleyBinary(t testing.TB) string {
	t.Helper()
	parleyBuild.Do(func() {
		dir, err := os.MkdirTemp("", "parley-e2e-bin")
		if err != nil {
			parleyBuild.err = err
			return
		}
		parleyBuild.path = filepath.Join(dir, "parley")
		out, err := exec.Command("go", "build", "-o", parleyBuild.path, "github.com/parley-voice/parley/cmd/parley").CombinedOutput()
		if err != nil {
			parleyBuild.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if parleyBuild.err != nil {
		t.Fatal(parleyBuild.err)
	}
	return parleyBuild.path
}

// servedLab is the lab with `parley serve --listen IP:443 --tls-cert ...`
// on its public host "sig" (203.0.113.2), reachable as https://parley.test.
type servedLab struct {
	lab  *natlab.Lab
	pub  *natlab.Host
	ip   netip.Addr
	ca   *testutil.CA
	leaf *testutil.Leaf
	out  *lineLog
}

const serveName = "parley.test"

// startServedLab starts the lab and the server, and waits until its
// built-in supernode is promoted.
func startServedLab(t *testing.T, extra ...string) *servedLab {
	t.Helper()
	return startServedLabWith(t, func(*natlab.Host) []string { return extra })
}

// startServedLabWith is startServedLab with flags that name the public
// host's addresses.
func startServedLabWith(t *testing.T, flags func(pub *natlab.Host) []string) *servedLab {
	t.Helper()
	lab := natlab.New(t, natlab.Config{})
	pub := lab.AddPublicHost("sig")
	extra := flags(pub)
	s := &servedLab{lab: lab, pub: pub, ip: pub.Addrs[0], ca: testutil.NewCA(t)}
	s.leaf = s.ca.Issue(t, serveName, s.ip.String())
	dir := t.TempDir()
	certFile, keyFile := s.leaf.WriteFiles(t, dir)
	args := append([]string{"serve", "--listen", netip.AddrPortFrom(s.ip, 443).String(),
		"--tls-cert", certFile, "--tls-key", keyFile, "--data", filepath.Join(dir, "data")}, extra...)
	s.out = runLogged(t, pub, "serve", parleyBinary(t), args...)
	s.out.wait(t, 30*time.Second, "the URL", "Parley is running: open https://"+serveName+"/")
	if slices.Contains(extra, "--supernode=off") || slices.Index(extra, "off") > 0 && extra[slices.Index(extra, "off")-1] == "--supernode" {
		return s
	}
	s.out.wait(t, 30*time.Second, "built-in supernode promoted", "parley supernode: ", " promoted: ", " refused: ")
	if s.out.find(" promoted: ") == "" {
		t.Fatalf("built-in supernode not promoted: %s", s.out.find(" refused: "))
	}
	return s
}

// goPeer signs a Go client in from home over wss:// by IP, trusting the test CA.
func (s *servedLab) goPeer(t *testing.T, home *natlab.Home, name string) *peer {
	w := &world{lab: s.lab, pub: s.pub, sigURL: "wss://" + s.ip.String() + "/ws"}
	return w.startPeer(t, home, name, true, relayInHome, func(_ *natlab.Home, cfg *client.Config) {
		cfg.TLS = &tls.Config{RootCAs: s.ca.Pool()}
	})
}

// browser starts Chromium in home with the page's name in the home's
// resolver and the server's certificate trusted (as a real CA's would be).
func (s *servedLab) browser(t *testing.T, home *natlab.Home) context.Context {
	if err := home.Client.SetHosts(map[string]netip.Addr{serveName: s.ip}); err != nil {
		t.Fatal(err)
	}
	return labBrowser(t, home, chromedp.Flag("ignore-certificate-errors-spki-list", s.leaf.SPKIHash))
}

// TestServeHTTPSLab: a browser on another host of the lab opens the call
// page of `parley serve` over HTTPS (a secure context, so WebCrypto and
// the microphone work: no flag makes an insecure origin secure), signs in
// and calls a Go client; then from a home whose firewall passes only TCP
// 443, it calls a Go client behind a symmetric NAT, relayed over TURN over
// TLS on port 443 of the server by its built-in supernode.
func TestServeHTTPSLab(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab with the binary and a browser")
	}
	s := startServedLab(t)
	cases := []struct {
		name                  string
		browserHome, peerHome natlab.NATKind
		path, relayProtocol   string
	}{
		{"browser behind a full-cone NAT", natlab.FullCone, natlab.FullCone, "", ""},
		{"browser where only TCP 443 passes", natlab.UDPBlocked, natlab.Symmetric, "relay", "tls"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			hb := s.lab.AddHome(fmt.Sprintf("br%d", i), tc.browserHome)
			hg := s.lab.AddHome(fmt.Sprintf("go%d", i), tc.peerHome)
			ctx := s.browser(t, hb)
			do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
				t.Helper()
				c, cancel := context.WithTimeout(ctx, 30*time.Second)
				defer cancel()
				if err := chromedp.Do(c, actions...); err != nil {
					t.Fatalf("page: %s: %v", what, err)
				}
			}
			me := fmt.Sprintf("alice%d", i)
			do("open the call page", chromedp.Navigate("https://"+serveName+"/"))
			jsWait(t, ctx, "page booted in a secure context", `window.isSecureContext && window.parley !== undefined`, 20*time.Second)
			do("sign in", chromedp.SendKeys(testid("name-input"), me+kb.Enter))
			jsWait(t, ctx, "signed in", `document.querySelector('[data-testid=conn-status]').dataset.state === "online"`, 20*time.Second)

			bob := s.goPeer(t, hg, fmt.Sprintf("bob%d", i))
			bob.wait(t, 30*time.Second, "NAT report", isNATDone)
			bob.wait(t, 20*time.Second, "sees "+me, isOnline(me))
			jsWait(t, ctx, "bob listed", `document.querySelector('[data-testid="contact-`+bob.name+`"]') !== null`, 20*time.Second)
			do("open bob", chromedp.Click(testid("contact-"+bob.name)))
			mark := bob.ev.Len()
			do("call bob", chromedp.Click(testid("call")))
			ce := bob.ev.WaitSince(t, mark, 40*time.Second, "bob connected", func(st stamped) bool {
				return callSettled(me)(st.ev)
			}).ev.(client.CallEvent)
			if ce.State != client.CallConnected {
				t.Fatalf("Go side: %+v, want connected", ce)
			}
			want := `s && s.packetsReceived > 25 && s.packetsSent > 25`
			if tc.path != "" {
				want += ` && s.path === "` + tc.path + `"`
			}
			if tc.relayProtocol != "" {
				want += ` && s.relayProtocol === "` + tc.relayProtocol + `"`
			}
			jsWait(t, ctx, "audio both ways on the expected path", `window.parley.sampleStats().then(s => `+want+`)`, 30*time.Second)
			bob.ev.WaitSince(t, mark, 20*time.Second, "bob hears the browser", func(st stamped) bool {
				return audioFrom(me, 25)(st.ev)
			})
			st, _ := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`window.parley.sampleStats()`, chromedp.EvalAwaitPromise))
			t.Logf("%s: Go side %s via %q; page %v", tc.name, ce.Path, ce.Via, st)
			if tc.path == "relay" && (ce.Path != "relay" || ce.Via != "serve-relay") {
				t.Errorf("Go side path %s via %q, want relay via serve-relay", ce.Path, ce.Via)
			}
			do("hang up", chromedp.Click(testid("hangup")))
			bob.ev.WaitSince(t, mark, 20*time.Second, "bob's call ends", func(st stamped) bool {
				c, ok := st.ev.(client.CallEvent)
				return ok && c.With == me && c.State == client.CallEnded
			})
		})
	}
}

// lineLog is a process's output, line by line, for waiting on.
type lineLog struct {
	mu    sync.Mutex
	cond  *sync.Cond
	lines []string
	done  bool
}

// runLogged starts name in host's namespace, logs its output to the test
// and keeps it for wait; it is interrupted (then killed) when the test ends.
func runLogged(t *testing.T, host *natlab.Host, tag, name string, args ...string) *lineLog {
	t.Helper()
	cmd := host.Command(context.Background(), name, args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &lineLog{}
	l.cond = sync.NewCond(&l.mu)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.mu.Lock()
			l.lines = append(l.lines, sc.Text())
			l.cond.Broadcast()
			l.mu.Unlock()
		}
		l.mu.Lock()
		l.done = true
		l.cond.Broadcast()
		l.mu.Unlock()
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		exited := make(chan error, 1)
		go func() { <-scanned; exited <- cmd.Wait() }()
		select {
		case err := <-exited:
			var ee *exec.ExitError
			if err != nil && !errors.As(err, &ee) {
				t.Errorf("%s: %v", tag, err)
			}
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			t.Errorf("%s did not stop on SIGTERM within 10 s", tag)
		}
		if t.Failed() {
			l.mu.Lock()
			t.Logf("%s output:\n%s", tag, strings.Join(l.lines, "\n"))
			l.mu.Unlock()
		}
	})
	return l
}

// wait waits for a line containing s and, if any are given, one of alts.
func (l *lineLog) wait(t *testing.T, d time.Duration, what, s string, alts ...string) {
	t.Helper()
	timer := time.AfterFunc(d, func() { l.mu.Lock(); l.cond.Broadcast(); l.mu.Unlock() })
	defer timer.Stop()
	deadline := time.Now().Add(d)
	l.mu.Lock()
	defer l.mu.Unlock()
	for i := 0; ; {
		for ; i < len(l.lines); i++ {
			if strings.Contains(l.lines[i], s) && (len(alts) == 0 || slices.ContainsFunc(alts, func(a string) bool { return strings.Contains(l.lines[i], a) })) {
				return
			}
		}
		if l.done || time.Now().After(deadline) {
			t.Fatalf("waiting for %s (%q):\n%s", what, s, strings.Join(l.lines, "\n"))
		}
		l.cond.Wait()
	}
}

// find returns the first line containing s, or "".
func (l *lineLog) find(s string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, x := range l.lines {
		if strings.Contains(x, s) {
			return x
		}
	}
	return ""
}
