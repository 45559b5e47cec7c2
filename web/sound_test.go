package web_test

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
)

// TestEnableSoundPrompt: with the autoplay policy browsers ship with (sound
// only once the person has clicked or typed on the page), a page nobody
// touched yet — a restored tab signs in by itself — that gets a call
// cannot ring aloud: it says so with an "Enable sound" button, whose click
// lets the ring sound. The shared browser allows autoplay (so the other
// tests hear their calls); this one does not.
func TestEnableSoundPrompt(t *testing.T) {
	srv := startServer(t)
	bctx := ownBrowser(t, chromedp.Flag("autoplay-policy", "document-user-activation-required"))
	// Not openPage: its waits poll with a user gesture (chromedp.Poll),
	// which would count as the person's click. Until the click below,
	// this test only evaluates, which grants none.
	ctx, cancel := chromedp.NewContext(bctx, chromedp.WithNewBrowserContext())
	p := navigatePage(t, ctx, cancel, srv.HTTP+"/", "alice")
	quiet := func(what, cond string) {
		t.Helper()
		testutil.Eventually(t, wait, what, func() bool {
			return eval[bool](p, `(() => { try { return !!(`+cond+`); } catch { return false; } })()`)
		})
	}
	quiet("page booted", `window.parley !== undefined && !document.getElementById("join-view").hidden`)
	eval[bool](p, `(() => { document.getElementById('name-input').value = 'alice'; document.getElementById('join-form').requestSubmit(); return true; })()`)
	quiet("signed in, never touched", `window.parley.sig?.online === true && navigator.userActivation.hasBeenActive === false`)

	gopher := startGoClient(t, srv.URL, "gopher")
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))
	if err := gopher.Call(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	quiet("ringing, held back, and the page says so at the top", visible("answer")+` && `+visible("enable-sound")+
		` && window.parley.ringer?.ctx?.state === "suspended" && document.getElementById('sound-blocked').getBoundingClientRect().bottom < innerHeight / 3`)
	p.screenshot("enable-sound")
	p.click("enable-sound")
	p.waitFor("the ring sounds", `!`+visible("enable-sound")+` && window.parley.ringer?.ctx?.state === "running"`)
	p.click("answer")
	gopher.ev.Wait(t, wait, "connected", isCall("alice", client.CallConnected))
	p.waitFor("connected, no prompt", textHas("call-state", "connected")+` && `+elem("sound-blocked")+`.hidden`)
}
