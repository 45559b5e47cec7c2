package web_test

import (
	"context"
	"crypto/ed25519"
	"net"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/web"
)

// TestBrowserToBrowser: two people on the page chat both ways with
// delivery ticks, one calls, the other answers, audio flows both ways on a
// direct path, mute works, and a hang-up ends the call on both sides.
func TestBrowserToBrowser(t *testing.T) {
	srv := startServer(t)
	alice := openPage(t, srv.HTTP+"/", "alice")
	bob := openPage(t, srv.HTTP+"/", "bob")
	alice.join("alice")
	bob.join("bob")
	alice.waitFor("bob in alice's list", visible("contact-bob"))
	bob.waitFor("alice in bob's list", visible("contact-alice"))

	// Chat both ways; the sender sees the delivery tick.
	alice.click("contact-bob")
	alice.send("hello bob — ça va? ünïcødé")
	bob.waitFor("unread badge", `document.querySelector('[data-testid=contact-alice]').getAttribute('aria-label').includes('1 unread')`)
	bob.click("contact-alice")
	bob.waitFor("bob reads alice's message", message("in", "hello bob — ça va? ünïcødé", ""))
	alice.waitFor("alice sees it delivered", message("out", "hello bob — ça va? ünïcødé", "delivered"))
	bob.send("hi alice")
	alice.waitFor("alice reads bob's reply", message("in", "hi alice", ""))
	bob.waitFor("bob sees it delivered", message("out", "hi alice", "delivered"))
	// Once the link is up, chat goes over the data channel.
	alice.waitFor("data channel open", `window.parley.debug().links.bob?.dcOpen === true`)
	alice.send("over the data channel")
	bob.waitFor("direct message arrives", message("in", "over the data channel", ""))
	alice.waitFor("direct message delivered", message("out", "over the data channel", "delivered"))
	if path := eval[string](bob, `document.querySelector('[data-testid=messages] li.msg.in:last-child').dataset.path`); path != "direct" {
		t.Errorf("message after the link opened came %q, want direct", path)
	}
	for _, m := range []struct {
		p    *page
		text string
	}{{bob, "hello bob — ça va? ünïcødé"}, {alice, "hi alice"}, {bob, "over the data channel"}} {
		if n := m.p.countMessages(m.text); n != 1 {
			t.Errorf("%s shows %q %d times, want exactly once", m.p.tag, m.text, n)
		}
	}
	alice.screenshot("idle")

	// Alice calls; bob's page rings; bob answers.
	alice.click("call")
	alice.waitFor("alice sees bob's device ringing", textHas("call-state", "Ringing bob"))
	bob.waitFor("bob's page rings", visible("answer")+` && `+textHas("call-state", "alice is calling"))
	bob.screenshot("ringing")
	bob.click("answer")
	for _, p := range []*page{alice, bob} {
		p.waitFor("call connected on a direct path", textHas("call-state", "connected", "direct"))
	}
	for _, p := range []*page{alice, bob} {
		s := p.audioFlows(25)
		if s.Path != "direct" || s.Local != "host" || s.Remote != "host" {
			t.Errorf("%s: path %q (%s ↔ %s), want direct host ↔ host on loopback", p.tag, s.Path, s.Local, s.Remote)
		}
	}

	// Mute: the button is a toggle and the microphone track is disabled.
	bob.click("mute")
	bob.waitFor("muted", elem("mute")+`.getAttribute('aria-pressed') === 'true' && window.parley.calls.call.mic.enabled === false`)
	bob.click("mute")
	bob.waitFor("unmuted", elem("mute")+`.getAttribute('aria-pressed') === 'false' && window.parley.calls.call.mic.enabled === true`)

	// A few seconds of graph make the in-call screenshot worth looking at.
	alice.waitFor("graph has points", `window.parley.graph.samples.length >= 6`)
	alice.waitFor("stats shown", `document.getElementById('st-rtt').textContent.endsWith('ms') && document.getElementById('st-rate').textContent.includes('kbit/s')`)
	// Quality bars (the numbers behind a click) and our microphone's level:
	// the fake microphone beeps, so the meter moves.
	alice.waitFor("quality bars", visible("quality-bars")+` && ["3","4"].includes(`+elem("quality-bars")+`.dataset.level)`)
	alice.waitFor("mic level moves", visible("mic-level")+` && window.parley.debug().micPeak > 0.01`)
	// A speaker picker where the browser can route audio (setSinkId).
	alice.waitFor("speaker picker", visible("speaker-select")+` && `+elem("speaker-select")+`.options.length >= 1 && typeof HTMLMediaElement.prototype.setSinkId === "function"`)
	alice.click("quality-bars")
	alice.waitFor("numbers folded", `document.getElementById('call-quality').hidden`)
	alice.click("quality-bars")
	alice.waitFor("numbers back", `!document.getElementById('call-quality').hidden`)
	alice.screenshot("in-call")

	// Phone-sized, the call is the screen: the peer, the timer and big
	// buttons in view, no list or conversation under them; "Chat" folds it
	// to a bar above the conversation, "Back to call" unfolds it.
	bob.do("phone viewport", chromedp.EmulateViewport(390, 844, chromedp.EmulateScale(2), chromedp.EmulateMobile))
	bob.waitFor("the call is the screen", phoneCallScreen)
	bob.screenshot("phone-in-call")
	bob.click("call-chat")
	bob.waitFor("the call folds to a bar above the conversation", phoneCallBar)
	bob.send("typed in a call")
	alice.waitFor("alice reads it", message("in", "typed in a call", ""))
	bob.screenshot("phone-call-chat")
	bob.click("call-chat")
	bob.waitFor("back to the call screen", phoneCallScreen)

	// Alice hangs up: the call ends on both pages and the microphone is released.
	alice.click("hangup")
	alice.waitFor("alice's call ended", textHas("call-state", "ended", "you hung up"))
	bob.waitFor("bob's call ended", textHas("call-state", "ended", "alice hung up"))
	for _, p := range []*page{alice, bob} {
		peer := map[string]string{"alice": "bob", "bob": "alice"}[p.tag]
		p.waitFor("sender track removed", `window.parley.links.get(`+jsq(peer)+`).sender.track === null`)
		if vis := eval[bool](p, visible("hangup")); vis {
			t.Errorf("%s: hang-up button still shown after the call", p.tag)
		}
	}
}

// TestBrowserAndGoClient: the page and the Go client interoperate both
// ways: chat each way with receipts, a call placed from the page and one
// placed from Go, audio both ways, hang-up from either side, and a message
// left sealed once the Go client is gone. Display names (with spaces,
// beside the handle) go both ways, sealed and over the data channel.
func TestBrowserAndGoClient(t *testing.T) {
	srv := startServer(t)
	_, gk, _ := ed25519.GenerateKey(nil)
	gopher := startGoClientKey(t, srv.URL, "gopher", gk, func(c *client.Config) { c.DisplayName = "Go Pher" })
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))
	p.waitFor("gopher listed", visible("contact-gopher"))
	ctx := context.Background()

	// Go -> browser chat, receipt back to Go.
	id, err := gopher.Send(ctx, "alice", "hello from Go")
	if err != nil {
		t.Fatal(err)
	}
	// The row grows a line for the display name the message brings: click
	// once it has (a click while it reflows can miss).
	p.waitFor("Go's display name beside its handle in the list", textHas("contact-gopher", "Go Pher", "gopher"))
	p.click("contact-gopher")
	p.waitFor("page shows Go's message", message("in", "hello from Go", ""))
	p.waitFor("and in the conversation's title", `document.getElementById('peer-title').firstChild.textContent === 'Go Pher' && document.querySelector('#peer-title .handle').textContent === 'gopher'`)
	gopher.ev.Wait(t, wait, "gopher gets the receipt", func(e client.Event) bool {
		d, ok := e.(client.DeliveredEvent)
		return ok && d.ID == id
	})
	// Browser -> Go chat, tick on the page, with our display name (a bad
	// one is refused in words).
	p.do("bad display name", chromedp.SendKeys(sel("display-input"), "Alice  Page"+kb.Enter))
	p.waitFor("refused in words", textHas("display-error", "one plain space"))
	eval[bool](p, `(document.getElementById('display-input').value = '') === ''`)
	p.do("display name", chromedp.SendKeys(sel("display-input"), "Alice Page"+kb.Enter))
	p.waitFor("accepted, and shown beside our handle", `document.querySelector('[data-testid=display-error]').textContent === '' && `+
		textHas("me-name", "Alice Page", "alice"))
	p.send("hello from the browser")
	if m := gopher.ev.Wait(t, wait, "gopher gets the page's message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == "alice" && m.Text == "hello from the browser"
	}).(client.MessageEvent); m.Display != "Alice Page" {
		t.Errorf("the page's display name reached Go as %q (path %s), want \"Alice Page\"", m.Display, m.Path)
	}
	p.waitFor("page sees it delivered", message("out", "hello from the browser", "delivered"))
	// With the link up, both directions use the data channel (pion sends
	// binary messages, the page text ones).
	p.waitFor("data channel open", `window.parley.debug().links.gopher?.dcOpen === true`)
	waitGo(t, "Go's data channel is open", func() bool {
		id, err := gopher.Send(ctx, "alice", "direct from Go")
		if err != nil {
			t.Fatal(err)
		}
		d := gopher.ev.Wait(t, wait, "receipt", func(e client.Event) bool { x, ok := e.(client.DeliveredEvent); return ok && x.ID == id }).(client.DeliveredEvent)
		return d.Path == "direct"
	})
	p.waitFor("direct message shown", message("in", "direct from Go", ""))
	if path := eval[string](p, `document.querySelector('[data-testid=messages] li.msg.in:last-child').dataset.path`); path != "direct" {
		t.Errorf("Go's message after the link opened came %q, want direct", path)
	}
	p.send("direct from the browser")
	m := gopher.ev.Wait(t, wait, "gopher gets the direct message", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.Text == "direct from the browser"
	}).(client.MessageEvent)
	if m.Path != "direct" || m.Display != "Alice Page" {
		t.Errorf("page's message reached Go by %q with display name %q, want direct and \"Alice Page\"", m.Path, m.Display)
	}
	p.waitFor("direct message delivered", message("out", "direct from the browser", "delivered"))
	if p.consoleHas("bad data channel message") {
		t.Error("the page dropped a data channel message from the Go client")
	}

	// The page calls the Go client.
	mark := gopher.ev.Len()
	p.click("call")
	gopher.ev.WaitSince(t, mark, wait, "gopher rings", isCall("alice", client.CallRinging))
	if err := gopher.Answer(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	ce := gopher.ev.WaitSince(t, mark, wait, "gopher connected", isCall("alice", client.CallConnected)).(client.CallEvent)
	if ce.Path != "direct" {
		t.Errorf("Go client's path %q, want direct", ce.Path)
	}
	p.waitFor("page connected", textHas("call-state", "connected", "direct"))
	p.audioFlows(25)
	gopher.ev.WaitSince(t, mark, wait, "Go receives the browser's audio", func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == "alice" && s.RTPPacketsReceived > 25 && s.RTPPacketsSent > 25
	})
	if err := gopher.Hangup(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("page sees the hang-up", textHas("call-state", "ended", "gopher hung up"))

	// The Go client calls the page; the page answers and hangs up.
	mark = gopher.ev.Len()
	if err := gopher.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("page rings", visible("answer")+` && `+textHas("call-state", "gopher is calling"))
	p.click("answer")
	gopher.ev.WaitSince(t, mark, wait, "gopher connected", isCall("alice", client.CallConnected))
	p.waitFor("page connected", textHas("call-state", "connected", "direct"))
	p.audioFlows(25)
	gopher.ev.WaitSince(t, mark, wait, "Go receives audio again", func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == "alice" && s.RTPPacketsReceived > 25
	})
	p.click("hangup")
	ended := gopher.ev.WaitSince(t, mark, wait, "gopher sees the hang-up", isCall("alice", client.CallEnded)).(client.CallEvent)
	if ended.Reason != "hung up by alice" {
		t.Errorf("Go client's end reason %q", ended.Reason)
	}
	p.waitFor("page ended", textHas("call-state", "ended", "you hung up"))

	// The page declines a call from Go.
	mark = gopher.ev.Len()
	if err := gopher.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.click("decline")
	declined := gopher.ev.WaitSince(t, mark, wait, "gopher sees the decline", isCall("alice", client.CallEnded)).(client.CallEvent)
	if declined.Reason != "declined by alice" {
		t.Errorf("Go client's end reason %q", declined.Reason)
	}
	p.waitFor("page shows the decline", textHas("call-state", "ended", "you declined"))

	// Gopher leaves: the page shows it and can't call; a message is
	// sealed to gopher's encryption key and left on the server (one tick;
	// sealed_test.go follows it to delivery).
	gopher.stop()
	p.waitFor("gopher offline", `!`+elem("contact-gopher")+` && `+textHas("peer-status", "offline")+` && `+elem("call")+`.disabled`)
	p.send("are you there?")
	p.waitFor("stored for gopher", message("out", "are you there?", "stored")+
		` && document.querySelector('[data-testid=messages] li.msg.out:last-child [data-testid=tick]').textContent === "✓"`)
	if n, _ := srv.OfflineWaiting("gopher"); n != 1 {
		t.Errorf("%d messages waiting for gopher, want 1", n)
	}
}

// waitGo retries try (which may wait itself) until it reports true.
func waitGo(t *testing.T, what string, try func() bool) {
	t.Helper()
	testutil.Eventually(t, wait, what, try)
}

// TestReloadKeepsNameAndTakenName: a reload signs in again with the same
// key and name (no name_taken), and another browser that tries the name
// is told in words that it belongs to someone else.
func TestReloadKeepsNameAndTakenName(t *testing.T) {
	srv := startServer(t)
	carol := openPage(t, srv.HTTP+"/", "carol")
	carol.join("carol")
	key := eval[string](carol, `window.parley.debug().publicKey`)
	if len(key) != 44 {
		t.Fatalf("public key %q is not base64 of 32 bytes", key)
	}
	carol.do("reload", chromedp.Reload())
	carol.waitFor("signed in again by itself", `window.parley?.sig?.online === true && document.getElementById('join-view').hidden`)
	if got := carol.text("me-name"); got != "carol" {
		t.Errorf("after reload the page is %q", got)
	}
	if k := eval[string](carol, `window.parley.debug().publicKey`); k != key {
		t.Errorf("key changed across reload: %s -> %s", key, k)
	}
	if st := srv.Stats(); st.AuthFailures != 0 || st.Logins != 2 || st.Replaced != 0 {
		t.Errorf("server saw %d logins, %d replaced, %d auth failures; want 2, 0 and 0", st.Logins, st.Replaced, st.AuthFailures)
	}

	// A second window of the same browser does not push the first out: it
	// offers another name, which the same key may own too.
	tab2 := carol.openTab(srv.HTTP+"/", "carol-tab2")
	tab2.waitFor("second tab explains", textHas("join-error", "signed in as “carol” in another tab"))
	tab2.join("carol2")
	if !eval[bool](carol, `window.parley.sig.online`) {
		t.Error("the second tab signed the first one out")
	}
	tab2.waitFor("the first tab is listed", visible("contact-carol"))

	imposter := openPage(t, srv.HTTP+"/", "imposter")
	imposter.do("type name", chromedp.SendKeys(sel("name-input"), "Carol"+kb.Enter))
	imposter.waitFor("human error", textHas("join-error", "“carol” already belongs to someone else"))
	imposter.waitFor("back at the picker", visible("join"))
	if !eval[bool](carol, `window.parley.sig.online`) {
		t.Error("carol was signed out by the imposter's attempt")
	}
	// A name the rules forbid is refused before anything is sent.
	eval[chromedp.Void](imposter, elem("name-input")+`.value = ""`)
	imposter.do("type bad name", chromedp.SendKeys(sel("name-input"), "-bad name"+kb.Enter))
	imposter.waitFor("name rule explained", textHas("join-error", "lowercase letters"))
}

// TestReconnectsAfterServerRestart: when the server goes away the page
// says so and reconnects by itself once it is back.
func TestReconnectsAfterServerRestart(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	serve := func(ln net.Listener) (stop func()) {
		srv, err := signal.New(signal.Config{Web: web.Handler()})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(ctx, ln); close(done) }()
		return func() { cancel(); <-done }
	}
	stop := serve(ln)
	p := openPage(t, "http://"+addr+"/", "dave")
	p.join("dave")
	stop()
	p.waitFor("connection loss shown", `document.querySelector('[data-testid=conn-status]').dataset.state === 'waiting' && `+textHas("conn-status", "reconnecting"))
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer serve(ln2)()
	start := time.Now()
	p.waitFor("reconnected", `document.querySelector('[data-testid=conn-status]').dataset.state === 'online'`)
	t.Logf("page reconnected %v after the server came back", time.Since(start).Round(time.Millisecond))
}

// phoneCallScreen is a condition for a phone-sized page (390 px wide) in
// a call: nothing is wider than the phone (Chromium would zoom out), the
// call panel fills the screen below the top bar, the peer's name is shown
// large, Mute and Hang up are thumb-sized (60 px and up) and in view, and
// neither the contact list nor the conversation is shown.
const phoneCallScreen = `(() => {
	const box = id => document.querySelector('[data-testid="' + id + '"]')?.getBoundingClientRect();
	const big = id => { const b = box(id); return !!b && b.width >= 60 && b.height >= 60 && b.top >= 0 && b.bottom <= innerHeight; };
	const call = document.getElementById('call-panel').getBoundingClientRect();
	const name = document.getElementById('call-peer-name');
	return innerWidth === 390 && call.height >= 0.75 * innerHeight && call.bottom <= innerHeight + 1 && big('hangup') && big('mute') &&
		name.offsetParent !== null && name.getBoundingClientRect().height >= 24 &&
		document.querySelector('.sidebar').offsetParent === null && document.querySelector('.conversation').offsetParent === null;
})()`

// phoneCallBar is a condition for a phone-sized page in a call whose
// person opened the chat: nothing is wider than the phone, the call is a bar (under a third of the screen)
// that keeps Hang up, and the conversation with its input is below it.
var phoneCallBar = `(() => {
	const call = document.getElementById('call-panel').getBoundingClientRect();
	const input = document.querySelector('[data-testid="message-input"]').getBoundingClientRect();
	return innerWidth === 390 && call.height > 0 && call.height <= innerHeight / 3 && ` + visible("hangup") + ` && ` + visible("message-input") + ` &&
		input.top >= call.bottom && input.bottom <= innerHeight;
})()`
