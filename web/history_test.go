package web_test

import (
	"context"
	"crypto/ed25519"
	"path/filepath"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// TestPageKeepsHistoryAndOutbox (issue 12 "the page keeps history", issue
// 10 items 6-8 on the page): a reload loses nothing. The conversation,
// ticks included, comes back from IndexedDB; a message sealed for a peer
// who is away stays in the outbox across a reload until its receipt, which
// finds it after the reload; the page numbers its messages to each peer
// from 1 and keeps counting across reloads (proto.Chat.Seq), and a
// message already shown is not shown again when it comes once more.
func TestPageKeepsHistoryAndOutbox(t *testing.T) {
	srv := signaltest.StartRestartable(t, signal.Config{Web: web.Handler()})
	_, goKey, _ := ed25519.GenerateKey(nil)
	gopher := startGoClientKey(t, srv.URL, "gopher", goKey)
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contact-gopher")
	ctx := context.Background()

	seqs := func(mark int, texts ...string) []uint64 {
		t.Helper()
		var out []uint64
		for _, text := range texts {
			m := gopher.ev.WaitSince(t, mark, wait, "gopher gets "+text, func(e client.Event) bool {
				m, ok := e.(client.MessageEvent)
				return ok && m.From == "alice" && m.Text == text
			}).(client.MessageEvent)
			out = append(out, m.Seq)
		}
		return out
	}
	p.send("one")
	p.send("two")
	if got := seqs(0, "one", "two"); got[0] != 1 || got[1] != 2 {
		t.Errorf("the page numbered its messages %v, want [1 2]", got)
	}
	id, err := gopher.Send(ctx, "alice", "from Go")
	if err != nil {
		t.Fatal(err)
	}
	p.waitFor("Go's message", message("in", "from Go", ""))
	p.waitFor("delivered ticks", message("out", "two", "delivered"))

	// A reload: the conversation and its ticks are still there.
	p.do("reload", chromedp.Reload())
	p.waitFor("signed in again", `window.parley?.sig?.online === true`)
	p.click("contact-gopher")
	p.waitFor("history after the reload", message("out", "one", "delivered")+` && `+message("out", "two", "delivered")+` && `+message("in", "from Go", ""))
	p.screenshot("history-after-reload")

	// Go sends its message again under its id (a restart whose outbox
	// still held it): the page acknowledges it and does not show it twice.
	gopher.stop()
	db, err := history.Open(filepath.Join(t.TempDir(), "gopher.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Queue(&client.OutMessage{ID: id, To: "alice", Text: "from Go", Time: 42}); err != nil {
		t.Fatal(err)
	}
	gopher = startGoClientKey(t, srv.URL, "gopher", goKey, func(c *client.Config) { c.Outbox = db })
	gopher.ev.Wait(t, wait, "receipt for the repeat", func(e client.Event) bool { d, ok := e.(client.DeliveredEvent); return ok && d.ID == id })
	if n := p.countMessages("from Go"); n != 1 {
		t.Errorf("a repeated message is shown %d times", n)
	}

	// Gopher leaves; a message written now is sealed and left with the
	// server (✓) and stays in the outbox until its receipt. It survives a
	// reload, and the receipt that comes once gopher is back finds it.
	gopher.stop()
	p.waitFor("gopher offline", textHas("peer-status", "offline"))
	p.send("written while gopher was away")
	p.waitFor("stored", message("out", "written while gopher was away", "stored"))
	p.waitFor("kept in the outbox", `window.parley.store.unsent().then((u) => u.some((m) => m.text === "written while gopher was away"))`)
	p.do("reload", chromedp.Reload())
	p.waitFor("signed in again", `window.parley?.sig?.online === true`)
	gopher = startGoClientKey(t, srv.URL, "gopher", goKey, func(c *client.Config) { c.Outbox = db })
	mark := 0
	if got := seqs(mark, "written while gopher was away"); got[0] != 3 {
		t.Errorf("after a reload the page numbered its next message %d, want 3", got[0])
	}
	p.click("contact-gopher")
	p.waitFor("delivered after the reload", message("out", "written while gopher was away", "delivered"))
	p.waitFor("outbox empty", `window.parley.store.unsent().then((u) => u.length === 0)`)
	if n := gopher.ev.CountSince(mark, func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.Text == "written while gopher was away"
	}); n != 1 {
		t.Errorf("gopher was shown the outbox message %d times", n)
	}
}
