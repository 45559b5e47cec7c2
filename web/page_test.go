package web_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// wait bounds every condition a test waits for.
const wait = 15 * time.Second

// startServer runs a signaling server that serves the page.
func startServer(t testing.TB) *signaltest.Server {
	t.Helper()
	return signaltest.Start(t, signal.Config{Web: web.Handler()})
}

// page is one browser tab in its own browser context (own storage, own key).
type page struct {
	t   testing.TB
	ctx context.Context
	tag string

	mu      sync.Mutex // guards console
	console []string
}

// openPage opens url in a new browser context.
func openPage(t testing.TB, url, tag string) *page {
	t.Helper()
	return openPageIn(t, browser(t), url, tag)
}

// openPageIn opens url in a new browser context of the browser bctx.
func openPageIn(t testing.TB, bctx context.Context, url, tag string) *page {
	t.Helper()
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	return startPage(t, ctx, cancel, url, tag)
}

// openTab opens url in another tab of p's browser context (same storage,
// same key), as a second window of the same browser would.
func (p *page) openTab(url, tag string) *page {
	p.t.Helper()
	ctx, cancel := chromedp.NewContext(p.ctx)
	return startPage(p.t, ctx, cancel, url, tag)
}

func startPage(t testing.TB, ctx context.Context, cancel context.CancelFunc, url, tag string) *page {
	t.Helper()
	p := navigatePage(t, ctx, cancel, url, tag)
	p.waitFor("page booted", `window.parley !== undefined && (!document.getElementById("join-view").hidden || !document.getElementById("app-view").hidden)`)
	return p
}

// navigatePage opens url in the tab ctx and returns as soon as it
// navigated, without waiting in the page (waitFor polls with a user
// gesture, which counts as the person's click).
func navigatePage(t testing.TB, ctx context.Context, cancel context.CancelFunc, url, tag string) *page {
	t.Helper()
	p := &page{t: t, ctx: ctx, tag: tag}
	t.Cleanup(func() {
		if t.Failed() {
			p.dumpConsole()
		}
		cancel()
	})
	if err := chromedp.Do(ctx, chromedp.EmulateViewport(1000, 720)); err != nil {
		t.Fatalf("%s: open tab: %v", tag, err)
	}
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.mu.Lock()
			if len(p.console) < 500 {
				p.console = append(p.console, fmt.Sprintf("%s %s", m.Type, m.Text))
			}
			p.mu.Unlock()
		}
	}()
	p.do("navigate", chromedp.Navigate(url))
	return p
}

func (p *page) dumpConsole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.console {
		p.t.Logf("%s console: %s", p.tag, l)
	}
}

// consoleHas reports whether the page logged something containing s.
func (p *page) consoleHas(s string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, l := range p.console {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func (p *page) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.t.Fatalf("%s: %s: %v\nstate: %s", p.tag, what, err, p.state())
	}
}

// eval runs a JavaScript expression (awaiting a promise) and decodes its value.
func eval[T any](p *page, js string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](js, chromedp.EvalAwaitPromise))
	if err != nil {
		p.t.Fatalf("%s: eval %s: %v", p.tag, js, err)
	}
	return v
}

// state describes the page for failure messages.
func (p *page) state() string {
	ctx, cancel := context.WithTimeout(p.ctx, 3*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`JSON.stringify({debug: window.parley?.debug?.(),
		callState: document.querySelector('[data-testid=call-state]')?.textContent,
		conn: document.querySelector('[data-testid=conn-status]')?.textContent,
		messages: [...document.querySelectorAll('[data-testid=messages] li')].map(li => li.className + ":" + (li.dataset.status ?? "") + ":" + li.textContent).slice(-6),
		errors: [...document.querySelectorAll('[data-testid=error], [data-testid=join-error]')].map(e => e.textContent)})`))
	if err != nil {
		return "(unavailable: " + err.Error() + ")"
	}
	return s
}

// waitFor polls a JavaScript condition until it is truthy.
func (p *page) waitFor(what, cond string) {
	p.t.Helper()
	p.waitForD(what, cond, wait)
}

func (p *page) waitForD(what, cond string, d time.Duration) {
	p.t.Helper()
	if err := p.poll(cond, d); err != nil {
		p.t.Fatalf("%s: waiting for %s: %v\nstate: %s", p.tag, what, err, p.state())
	}
}

func sel(testid string) chromedp.CSS { return chromedp.CSS(`[data-testid="` + testid + `"]`) }

func jsq(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// elem is the JavaScript for the element with a data-testid.
func elem(testid string) string { return `document.querySelector('[data-testid="` + testid + `"]')` }

// visible is a condition: the element exists and is shown.
func visible(testid string) string {
	return `(() => { const e = ` + elem(testid) + `; return !!e && e.offsetParent !== null && !e.disabled; })()`
}

// textHas is a condition: the element's text contains every part.
func textHas(testid string, parts ...string) string {
	conds := []string{`!!e`}
	for _, s := range parts {
		conds = append(conds, `e.textContent.includes(`+jsq(s)+`)`)
	}
	return `(() => { const e = ` + elem(testid) + `; return ` + strings.Join(conds, " && ") + `; })()`
}

// click clicks an element with the mouse, as a person would.
func (p *page) click(testid string) {
	p.t.Helper()
	p.waitFor(testid+" visible and enabled", visible(testid))
	p.do("click "+testid, chromedp.Click(sel(testid)))
	if peer, ok := strings.CutPrefix(testid, "contact-"); ok {
		// A click lands where the button was a moment ago; a contact list
		// that moved under it (a row updated as an offer or a link came
		// in) takes a second click, as it would from a person.
		opened := `window.parley.peer === ` + jsq(peer)
		if p.poll(opened, 2*time.Second) != nil {
			p.t.Logf("%s: the click on %s did not open the conversation; clicking again", p.tag, testid)
			p.do("click "+testid, chromedp.Click(sel(testid)))
		}
		p.waitFor("the conversation with "+peer+" open", opened)
	}
}

// poll waits up to d for cond to hold in the page.
func (p *page) poll(cond string, d time.Duration) error {
	ctx, cancel := context.WithTimeout(p.ctx, d+5*time.Second)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](cond, chromedp.WithPollingInterval(50*time.Millisecond), chromedp.WithPollingTimeout(d)))
	return err
}

func (p *page) text(testid string) string {
	p.t.Helper()
	return eval[string](p, elem(testid)+`?.textContent ?? ""`)
}

// join types name into the picker and presses Enter.
func (p *page) join(name string) {
	p.t.Helper()
	p.do("type name", chromedp.SendKeys(sel("name-input"), name+kb.Enter))
	p.waitFor("signed in as "+name, `document.querySelector('[data-testid=conn-status]').dataset.state === "online" && `+textHas("me-name", name))
}

// send types a message into the open conversation and presses Enter.
func (p *page) send(text string) {
	p.t.Helper()
	p.do("type message", chromedp.SendKeys(sel("message-input"), text+kb.Enter))
}

// message is a condition: the open conversation shows text (dir "in" or
// "out"), and for outgoing messages has the given status.
func message(dir, text, status string) string {
	c := `[...document.querySelectorAll('[data-testid=messages] li.msg.` + dir + `')].some(li => li.querySelector('.text').textContent === ` + jsq(text)
	switch status {
	case "":
	case "delivered": // read implies delivered
		c += ` && ["delivered", "read"].includes(li.dataset.status)`
	default:
		c += ` && li.dataset.status === ` + jsq(status)
	}
	return c + `)`
}

// countMessages counts messages with text in the open conversation.
func (p *page) countMessages(text string) int {
	return eval[int](p, `[...document.querySelectorAll('[data-testid=messages] li.msg')].filter(li => li.querySelector('.text').textContent === `+jsq(text)+`).length`)
}

// countMessagesWith counts messages with text in peer's conversation,
// whether or not it is open.
func (p *page) countMessagesWith(peer, text string) int {
	return eval[int](p, `window.parley.chat.messages(`+jsq(peer)+`).filter((m) => m.text === `+jsq(text)+`).length`)
}

// reloadAndWait reloads the page and waits until it is signed in again.
func (p *page) reloadAndWait() {
	p.t.Helper()
	p.do("reload", chromedp.Reload())
	p.waitFor("signed in again", `window.parley?.sig?.online === true`)
}

// callStats samples the call's WebRTC stats on the page.
type callStats struct {
	Path            string  `json:"path"`
	Local           string  `json:"local"`
	Remote          string  `json:"remote"`
	PacketsReceived int     `json:"packetsReceived"`
	PacketsSent     int     `json:"packetsSent"`
	AudioLevelIn    float64 `json:"audioLevelIn"`
}

func (p *page) callStats() callStats {
	p.t.Helper()
	return eval[callStats](p, `window.parley.sampleStats().then(s => s ?? {})`)
}

// audioFlows waits until the page has received and sent more than n more
// audio packets than it had when called: media flows both ways.
func (p *page) audioFlows(n int) callStats {
	p.t.Helper()
	first := p.callStats()
	p.waitFor(fmt.Sprintf("%d more RTP packets in and out (from %d/%d)", n, first.PacketsReceived, first.PacketsSent),
		`window.parley.sampleStats().then(s => s && s.packetsReceived > `+strconv.Itoa(first.PacketsReceived+n)+` && s.packetsSent > `+strconv.Itoa(first.PacketsSent+n)+`)`)
	return p.callStats()
}

// screenshot captures the viewport, checks it is a real image, and writes
// it to the screenshot directory.
func (p *page) screenshot(name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, wait)
	defer cancel()
	b, err := chromedp.Run(ctx, chromedp.CaptureScreenshot())
	if err != nil {
		p.t.Fatalf("%s: screenshot %s: %v", p.tag, name, err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		p.t.Fatalf("screenshot %s is not a PNG: %v", name, err)
	}
	if r := img.Bounds(); r.Dx() < 300 || r.Dy() < 300 {
		p.t.Fatalf("screenshot %s is %v", name, r)
	}
	if *screenshotDir == "" {
		return
	}
	if err := os.MkdirAll(*screenshotDir, 0o755); err != nil {
		p.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(*screenshotDir, name+".png"), b, 0o644); err != nil {
		p.t.Fatal(err)
	}
}

// goPeer is a Go client (the reference implementation) in the test.
type goPeer struct {
	*client.Client
	ev   *testutil.Recorder[client.Event]
	stop func() // ends Run and waits for it
}

func startGoClient(t testing.TB, url, name string) *goPeer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	return startGoClientKey(t, url, name, key)
}

// startGoClientKey starts a Go client with a given identity key (its
// encryption key is derived from it, so a restart can open what was
// sealed to it before).
func startGoClientKey(t testing.TB, url, name string, key ed25519.PrivateKey, mods ...func(*client.Config)) *goPeer {
	t.Helper()
	cfg := client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond}
	for _, mod := range mods {
		mod(&cfg)
	}
	c, err := client.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g := &goPeer{Client: c, ev: testutil.Record(c.Events()), stop: func() { cancel(); <-done }}
	go func() {
		defer close(done)
		if err := c.Run(ctx); err != nil {
			t.Errorf("%s: Run: %v", name, err)
		}
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Errorf("%s: Run did not return", name)
		}
	})
	return g
}

func isOnline(name string) func(client.Event) bool {
	return func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == name && p.Status == proto.StatusOnline
	}
}

func isCall(with string, st client.CallState) func(client.Event) bool {
	return func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.With == with && c.State == st
	}
}
