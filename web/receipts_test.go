package web_test

import (
	"context"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/client"
)

// TestReadReceiptsAndTypingWithGo (issue 12: "read receipts, typing ... on
// the page too"): a TUI user sees "read" from a browser and the browser
// from them, and each sees the other typing.
func TestReadReceiptsAndTypingWithGo(t *testing.T) {
	srv := startServer(t)
	gopher := startGoClient(t, srv.URL, "gopher")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	ctx := context.Background()
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))

	// Go -> page: once the page shows it, Go hears "read".
	id, err := gopher.Send(ctx, "alice", "did you see this?")
	if err != nil {
		t.Fatal(err)
	}
	p.click("contact-gopher")
	p.waitFor("shown", message("in", "did you see this?", ""))
	gopher.ev.Wait(t, wait, "read by alice", func(e client.Event) bool {
		r, ok := e.(client.ReadEvent)
		return ok && r.ID == id && r.By == "alice"
	})

	// Page -> Go: Go marks it read, the page shows ✓✓ read.
	p.send("yes I did")
	m := gopher.ev.Wait(t, wait, "gopher gets it", func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.Text == "yes I did"
	}).(client.MessageEvent)
	if err := gopher.MarkRead(ctx, "alice", m.ID); err != nil {
		t.Fatal(err)
	}
	p.waitFor("read tick", message("out", "yes I did", "read"))

	// Typing, both ways.
	if err := gopher.SetTyping(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	p.waitFor("gopher typing shown", visible("typing")+` && `+textHas("typing", "gopher is typing"))
	mark := gopher.ev.Len()
	p.do("type", chromedp.SendKeys(sel("message-input"), "hm"))
	gopher.ev.WaitSince(t, mark, wait, "alice typing", func(e client.Event) bool {
		x, ok := e.(client.TypingEvent)
		return ok && x.From == "alice" && x.Typing
	})
	p.screenshot("typing")
}

// TestMuteShownToThePeer (issue 12, "remote-muted indicator"): in a call
// between the page and the Go client, each side sees when the other mutes.
func TestMuteShownToThePeer(t *testing.T) {
	srv := startServer(t)
	gopher := startGoClient(t, srv.URL, "gopher")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	ctx := context.Background()
	p.click("contact-gopher")
	mark := gopher.ev.Len()
	p.click("call")
	gopher.ev.WaitSince(t, mark, wait, "rings", isCall("alice", client.CallRinging))
	gopher.Answer(ctx, "alice")
	p.waitFor("connected", textHas("call-state", "connected"))
	gopher.ev.WaitSince(t, mark, wait, "gopher connected", isCall("alice", client.CallConnected))
	if err := gopher.SetMuted(ctx, "alice", true); err != nil {
		t.Fatal(err)
	}
	p.waitFor("gopher shown muted", textHas("call-state", "gopher muted their microphone"))
	gopher.SetMuted(ctx, "alice", false)
	p.waitFor("gopher unmuted", `!`+textHas("call-state", "muted"))
	p.click("mute")
	gopher.ev.WaitSince(t, mark, wait, "alice shown muted", func(e client.Event) bool {
		x, ok := e.(client.MuteEvent)
		return ok && x.With == "alice" && x.Muted
	})
	p.click("hangup")
}
