package web_test

import (
	"crypto/ed25519"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// TestPageFindsPeopleAndKeepsContacts: the page searches the server's
// directory and opens a conversation with someone found; people it talks
// to are contacts, kept in the browser and sent after every sign-in, so
// their presence comes even where the server has no directory.
func TestPageFindsPeopleAndKeepsContacts(t *testing.T) {
	ready := func(g *goPeer) {
		g.ev.Wait(t, wait, "ready", func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok })
	}
	// A directory: carol, offline, is found by a prefix.
	srv := startServer(t)
	carol := startGoClient(t, srv.URL, "carol")
	ready(carol)
	carol.stop()
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.do("search", chromedp.SendKeys(sel("find-input"), "car"))
	p.waitFor("carol found", visible("found-carol")+` && `+elem("found-carol")+`.dataset.status === "offline"`)
	p.click("found-carol")
	p.waitFor("carol's conversation", `document.getElementById("peer-title").textContent === "carol" && `+textHas("peer-status", "offline"))

	// No directory: a whole name and Enter; the contact's presence comes
	// after a reload, and when she signs in.
	off := signaltest.Start(t, signal.Config{Web: web.Handler(), Directory: signal.DirectoryOff})
	_, erinKey, _ := ed25519.GenerateKey(nil)
	erin := startGoClientKey(t, off.URL, "erin", erinKey)
	ready(erin)
	erin.stop()
	d := openPage(t, off.HTTP+"/", "dave")
	d.join("dave")
	d.do("search", chromedp.SendKeys(sel("find-input"), "er"))
	d.waitFor("no directory", textHas("find-results", "no directory"))
	d.do("name", chromedp.SendKeys(sel("find-input"), "in"+kb.Enter))
	d.waitFor("erin's conversation", `document.getElementById("peer-title").textContent === "erin"`)
	d.do("reload", chromedp.Reload())
	d.waitFor("signed in again", `window.parley?.sig?.online === true`)
	d.waitFor("erin known offline", `window.parley.debug().presence.erin?.status === "offline"`)
	erin = startGoClientKey(t, off.URL, "erin", erinKey)
	ready(erin)
	d.waitFor("erin online", visible("contact-erin"))

	// A conversation the browser keeps (IndexedDB) is enough: with the
	// list of contacts gone from localStorage (a page from before it
	// existed), erin's presence still comes after a reload.
	d.click("contact-erin")
	d.send("hello erin")
	d.waitFor("delivered", message("out", "hello erin", "delivered"))
	eval[bool](d, `(localStorage.removeItem("parley.contacts.dave"), true)`)
	d.reloadAndWait()
	d.waitFor("erin online from the history", `window.parley.debug().presence.erin?.status === "online"`)
}
