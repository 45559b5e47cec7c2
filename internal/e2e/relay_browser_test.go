package e2e

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/web"
)

// chromium is Debian's browser binary (not the /usr/bin wrapper).
const chromium = "/usr/lib/chromium/chromium"

// labBrowser starts Chromium inside home's client namespace (so all its
// traffic crosses the home's NAT and nothing can leave the lab): chromedp
// talks to it over its default pipe, which `ip netns exec` passes
// through. extra adds flags: insecureOrigin for a page served over plain
// HTTP, or what an HTTPS test needs (trustedHTTPS).
func labBrowser(t *testing.T, home *natlab.Home, extra ...chromedp.ExecAllocatorOption) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Skipf("chromium not installed at %s (apt-get install chromium; `make test` does this)", chromium)
	}
	dir := t.TempDir()
	wrapper := filepath.Join(dir, "chromium-in-"+home.Name)
	script := "#!/bin/sh\nexec ip netns exec " + home.Client.NS + " " + chromium + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(wrapper),
		chromedp.UserDataDir(filepath.Join(dir, "profile")),
		chromedp.NoSandbox,
		chromedp.Flag("use-fake-device-for-media-stream", true),
		chromedp.Flag("use-fake-ui-for-media-stream", true),
		chromedp.Flag("autoplay-policy", "no-user-gesture-required"),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-features", "WebRtcHideLocalIpsWithMdns,Translate,BlinkGenPropertyTrees"),
	)
	opts = append(opts, extra...)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	start, done := context.WithTimeout(ctx, 30*time.Second)
	defer done()
	errc := make(chan error, 1)
	go func() { errc <- chromedp.Do(ctx) }()
	select {
	case err := <-errc:
		if err != nil {
			t.Fatalf("start chromium in %s: %v", home, err)
		}
	case <-start.Done():
		t.Fatalf("chromium did not start in %s within 30 s", home)
	}
	return ctx
}

// insecureOrigin makes Chromium treat a plain-HTTP lab origin as a secure
// context, so that WebCrypto and getUserMedia work there.
func insecureOrigin(origin string) chromedp.ExecAllocatorOption {
	return chromedp.Flag("unsafely-treat-insecure-origin-as-secure", origin)
}

// jsWait polls a JavaScript condition (a promise may be returned) until it
// is true or d passes.
func jsWait(t *testing.T, ctx context.Context, what, cond string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		c, cancel := context.WithTimeout(ctx, 5*time.Second)
		ok, err := chromedp.Run(c, chromedp.Evaluate[bool](`(async () => { try { return !!(await (`+cond+`)); } catch (e) { return false; } })()`, chromedp.EvalAwaitPromise))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			state, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 800) : ""`))
			t.Fatalf("page: waiting for %s: %v\npage text: %s", what, err, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func testid(id string) chromedp.CSS { return chromedp.CSS(`[data-testid="` + id + `"]`) }

// TestLabBrowserRelayCall: the matrix's hardest kind of cell with a real
// call page. Chromium in a symmetric-NAT home calls a Go client in another
// symmetric home; no direct path exists, so the browser relays through
// the supernode's TURN UDP listener with the HMAC credentials its welcome
// carried, the Go client through QUIC, and both report the relayed path.
func TestLabBrowserRelayCall(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab with a browser")
	}
	w := newWorld(t)
	startRelaySignal(t, w, func(c *signal.Config) { c.Web = web.Handler() })
	host := w.lab.AddPublicHost("sn")
	sn := startLabSupernode(t, w, host, "sn1", host.Addrs[0])
	sn.WaitState(t, proto.SupernodePromoted, 30*time.Second)
	hb := w.lab.AddHome("brw", natlab.Symmetric)
	hg := w.lab.AddHome("gop", natlab.Symmetric)

	origin := strings.TrimSuffix(strings.Replace(w.sigURL, "ws://", "http://", 1), "/ws")
	ctx := labBrowser(t, hb, insecureOrigin(origin))
	do := func(what string, actions ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		c, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		if err := chromedp.Do(c, actions...); err != nil {
			t.Fatalf("page: %s: %v", what, err)
		}
	}
	do("open the call page", chromedp.Navigate(origin+"/"))
	jsWait(t, ctx, "page booted", `window.parley !== undefined`, 20*time.Second)
	do("sign in", chromedp.SendKeys(testid("name-input"), "alice"+kb.Enter))
	jsWait(t, ctx, "signed in", `document.querySelector('[data-testid=conn-status]').dataset.state === "online"`, 20*time.Second)

	bob := w.startPeer(t, hg, "bob", true, relayInHome)
	bob.wait(t, 30*time.Second, "NAT report", isNATDone)
	bob.wait(t, 30*time.Second, "warm relay", func(e client.Event) bool {
		r, ok := e.(client.RelayEvent)
		return ok && r.Warm && r.Supernode == "sn1"
	})
	bob.wait(t, 20*time.Second, "sees alice", isOnline("alice"))
	jsWait(t, ctx, "bob listed", `document.querySelector('[data-testid="contact-bob"]') !== null`, 20*time.Second)

	do("open bob", chromedp.Click(testid("contact-bob")))
	mark := bob.ev.Len()
	do("call bob", chromedp.Click(testid("call")))
	bob.ev.WaitSince(t, mark, 20*time.Second, "bob rings", func(s stamped) bool {
		c, ok := s.ev.(client.CallEvent)
		return ok && c.With == "alice" && c.State == client.CallRinging
	})
	// (lab peers answer at once: AutoAnswer)
	ce := bob.ev.WaitSince(t, mark, 30*time.Second, "bob connected", func(s stamped) bool {
		c, ok := s.ev.(client.CallEvent)
		return ok && c.With == "alice" && (c.State == client.CallConnected || c.State == client.CallEnded)
	}).ev.(client.CallEvent)
	if ce.State != client.CallConnected || ce.Path != "relay" || ce.Via != "sn1" {
		t.Fatalf("Go side: %+v, want connected, relay via sn1", ce)
	}
	jsWait(t, ctx, "page connected over a relay", `window.parley.sampleStats().then(s => s && s.path === "relay" && s.packetsReceived > 25 && s.packetsSent > 25)`, 30*time.Second)
	st, err := chromedp.Run(ctx, chromedp.Evaluate[map[string]any](`window.parley.sampleStats()`, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatal(err)
	}
	bob.ev.WaitSince(t, mark, 20*time.Second, "bob hears the browser", func(s stamped) bool {
		x, ok := s.ev.(client.StatsEvent)
		return ok && x.With == "alice" && x.RTPPacketsReceived > 25
	})
	ss := sn.Stats()
	t.Logf("browser (symmetric) <-> Go (symmetric): relay via sn1; page stats %v; supernode: %d allocations, %d datagrams in", st, ss.Allocations, ss.DatagramsIn)
	if ss.Allocations < 2 {
		t.Errorf("supernode made %d allocations, want the browser's TURN UDP one and the Go client's", ss.Allocations)
	}
	if err := bob.Hangup(context.Background(), "alice"); err != nil && !errors.Is(err, client.ErrNoCall) {
		t.Error(err)
	}
}
