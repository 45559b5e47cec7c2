package web_test

import (
	"context"
	"sync"
	"testing"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	cdppage "github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/client"
)

// TestCallLogDraftsAndNotifications (issue 12, "expected by people"): the
// conversation logs calls (declined, missed with an unread badge, "voice
// call · 0:0N", and a try while busy on the callee's side) and keeps them
// after a reload; each conversation keeps its own draft, across a reload
// too; while the page is in the background a call and a message raise OS
// notifications (permission granted by the test); a reload mid-call asks
// first.
func TestCallLogDraftsAndNotifications(t *testing.T) {
	srv := startServer(t)
	gopher := startGoClient(t, srv.URL, "gopher")
	p := openPage(t, srv.HTTP+"/", "alice")
	bob := openPage(t, srv.HTTP+"/", "bob")
	p.join("alice")
	bob.join("bob")
	ctx := context.Background()
	logLine := func(peer, text string) string {
		return `window.parley.chat.messages(` + jsq(peer) + `).some((m) => m.dir === "call" && m.text.includes(` + jsq(text) + `))`
	}

	// Drafts: text typed for gopher stays with gopher.
	p.click("contact-gopher")
	p.do("type a draft", chromedp.SendKeys(sel("message-input"), "half a thought"))
	p.click("contact-bob")
	if v := eval[string](p, elem("message-input")+`.value`); v != "" {
		t.Errorf("gopher's draft followed alice to bob: %q", v)
	}
	p.do("type another draft", chromedp.SendKeys(sel("message-input"), "for bob"))
	p.click("contact-gopher")
	p.waitFor("gopher's draft back", elem("message-input")+`.value === "half a thought"`)

	// A call alice declines, and one gopher gives up on: missed, unread.
	for _, declined := range []bool{true, false} {
		mark := gopher.ev.Len()
		if err := gopher.Call(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		p.waitFor("ringing", visible("answer"))
		if declined {
			p.click("decline")
		} else {
			p.click("contact-bob") // looking at another conversation
			if err := gopher.Hangup(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
		}
		gopher.ev.WaitSince(t, mark, wait, "call over", isCall("alice", client.CallEnded))
	}
	p.waitFor("declined in the log", logLine("gopher", "You declined a call from gopher"))
	p.waitFor("missed in the log, unread", logLine("gopher", "Missed call from gopher")+` && `+elem("contact-gopher")+`.getAttribute("aria-label").includes("1 unread")`)

	// A call that connects, logged with its length; bob tries meanwhile
	// and is told alice is busy, and alice's log says bob tried.
	p.click("contact-gopher")
	mark := gopher.ev.Len()
	p.click("call")
	gopher.ev.WaitSince(t, mark, wait, "gopher rings", isCall("alice", client.CallRinging))
	if err := gopher.Answer(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("connected", textHas("call-state", "connected"))
	bob.click("contact-alice")
	bob.click("call")
	bob.waitFor("bob told alice is busy", textHas("call-state", "alice is busy"))
	p.waitFor("alice's log: bob tried", logLine("bob", "bob tried to call you while you were in another call"))

	// A reload mid-call asks first; staying keeps the call.
	var mu sync.Mutex
	var dialogs []string
	chromedp.Listen(p.ctx, func(ev any) {
		if d, ok := ev.(*cdppage.EventJavascriptDialogOpening); ok {
			mu.Lock()
			dialogs = append(dialogs, string(d.Type))
			mu.Unlock()
			go chromedp.Call(p.ctx, cdppage.HandleJavaScriptDialog, cdppage.HandleJavaScriptDialogParams{Accept: false})
		}
	})
	// A person's click on the page first: Chromium asks before unload only
	// for pages someone interacted with (they have, above).
	reloadCtx, cancel := context.WithTimeout(p.ctx, wait)
	chromedp.Call(reloadCtx, cdppage.Reload, cdppage.ReloadParams{})
	cancel()
	waitGo(t, "the page asked before reloading", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(dialogs) > 0 && dialogs[0] == "beforeunload"
	})
	p.waitFor("still in the call", textHas("call-state", "connected"))
	p.click("hangup")
	p.waitFor("voice call logged", logLine("gopher", "Outgoing voice call · 0:0"))

	// In the background, with notifications allowed, a message and a call
	// raise notifications.
	c := chromedp.FromContext(p.ctx)
	if _, err := chromedp.CallBrowser(p.ctx, cdpbrowser.SetPermission, cdpbrowser.SetPermissionParams{
		Permission: &cdpbrowser.PermissionDescriptor{Name: "notifications"}, Setting: cdpbrowser.PermissionSettingGranted,
		Origin: srv.HTTP, BrowserContextID: c.BrowserContextID,
	}); err != nil {
		t.Fatal(err)
	}
	p.reloadAndWait()
	p.waitFor("notifications on", `Notification.permission === "granted" && `+textHas("notify-state", "Notifications on"))
	// The person minimizes the window (the tab is hidden): after awayAfter
	// (shortened here) the others see alice away, and online once she is back.
	eval[any](p, `window.parley.awayAfter = 300`)
	awayMark := gopher.ev.Len()
	win, err := chromedp.Call(p.ctx, cdpbrowser.GetWindowForTarget, cdpbrowser.GetWindowForTargetParams{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := chromedp.CallBrowser(p.ctx, cdpbrowser.SetWindowBounds, cdpbrowser.SetWindowBoundsParams{WindowID: win.WindowID, Bounds: &cdpbrowser.Bounds{WindowState: cdpbrowser.WindowStateMinimized}}); err != nil {
		t.Fatal(err)
	}
	gopher.ev.WaitSince(t, awayMark, wait, "alice away", func(e client.Event) bool {
		x, ok := e.(client.PresenceEvent)
		return ok && x.Name == "alice" && x.Status == "away"
	})
	p.waitFor("alice in the background", `document.visibilityState !== "visible" || !document.hasFocus()`)
	if _, err := gopher.Send(ctx, "alice", "psst"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("message notification", `window.parley.notified.some((n) => n.title === "gopher" && n.body === "psst")`)
	mark = gopher.ev.Len()
	if err := gopher.Call(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("call notification", `window.parley.notified.some((n) => n.title === "gopher is calling")`)
	p.waitFor("title says who calls", `document.title.includes("gopher is calling")`)
	gopher.Hangup(ctx, "alice")
	p.waitFor("unread count in the title", `/^\(\d+\) Parley$/.test(document.title)`)

	if _, err := chromedp.CallBrowser(p.ctx, cdpbrowser.SetWindowBounds, cdpbrowser.SetWindowBoundsParams{WindowID: win.WindowID, Bounds: &cdpbrowser.Bounds{WindowState: cdpbrowser.WindowStateNormal}}); err != nil {
		t.Fatal(err)
	}

	p.waitFor("visible again", `document.visibilityState === "visible"`)
	gopher.ev.WaitSince(t, awayMark, wait, "alice back online", func(e client.Event) bool {
		x, ok := e.(client.PresenceEvent)
		return ok && x.Name == "alice" && x.Status == "online"
	})

	// After a reload: the log and both drafts are still there.
	p.reloadAndWait()
	p.click("contact-gopher")
	p.waitFor("draft after reload", elem("message-input")+`.value === "half a thought"`)
	for _, l := range []string{"You declined a call from gopher", "Missed call from gopher", "Outgoing voice call"} {
		p.waitFor("log after reload: "+l, logLine("gopher", l))
	}
	p.screenshot("call-log")
	p.click("contact-bob")
	p.waitFor("bob's draft after reload", elem("message-input")+`.value === "for bob"`)
}
