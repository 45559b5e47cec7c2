package web_test

import (
	"context"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// TestBlockingAndContactsOnly (issue 12 "block/ignore a user", issue 10
// item 10 on the page): with "Only my contacts can reach me" on, a
// stranger's message is refused with not_accepted (the sender's app says
// why) and a stranger's ring is declined with "refused"; someone the page
// wrote to gets through. Blocking refuses a contact the same way, and
// unblocking lets them in again.
func TestBlockingAndContactsOnly(t *testing.T) {
	srv := startServer(t)
	stranger := startGoClient(t, srv.URL, "stranger")
	friend := startGoClient(t, srv.URL, "friend")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contacts-only")
	p.waitFor("contacts only on", elem("contacts-only")+`.checked`)
	ctx := context.Background()
	refused := func(g *goPeer, mark int, id string) {
		t.Helper()
		e := g.ev.WaitSince(t, mark, wait, "refusal of "+id, func(e client.Event) bool {
			x, ok := e.(client.ErrorEvent)
			return ok && x.Ref == id
		}).(client.ErrorEvent)
		if e.Err.Code != proto.CodeNotAccepted {
			t.Errorf("refused with %q (%s), want not_accepted", e.Err.Code, e.Err.Message)
		}
	}
	callRefused := func(g *goPeer, mark int) {
		t.Helper()
		if err := g.Call(ctx, "alice"); err != nil {
			t.Fatal(err)
		}
		e := g.ev.WaitSince(t, mark, wait, "call refused", isCall("alice", client.CallEnded)).(client.CallEvent)
		if e.Code != proto.EndRefused {
			t.Errorf("call ended with %q (%s), want refused", e.Code, e.Reason)
		}
	}

	// A stranger is refused, message and call; the page shows neither.
	p.waitFor("stranger listed", visible("contact-stranger"))
	mark := stranger.ev.Len()
	id, err := stranger.Send(ctx, "alice", "buy now")
	if err != nil {
		t.Fatal(err)
	}
	refused(stranger, mark, id)
	callRefused(stranger, mark)
	if n := p.countMessagesWith("stranger", "buy now"); n != 0 {
		t.Errorf("the stranger's message is shown")
	}
	if eval[bool](p, visible("answer")) {
		t.Error("the stranger's call rang")
	}

	// Someone alice wrote to is a contact: their reply gets through.
	p.click("contact-friend")
	p.send("hi friend")
	friend.ev.Wait(t, wait, "friend gets it", func(e client.Event) bool { m, ok := e.(client.MessageEvent); return ok && m.Text == "hi friend" })
	if _, err := friend.Send(ctx, "alice", "hi alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the friend's reply", message("in", "hi alice", ""))

	// Blocked, the friend is refused like a stranger; unblocked, welcome.
	p.click("block")
	p.waitFor("blocked", textHas("block", "Unblock")+` && `+textHas("peer-status", "blocked"))
	mark = friend.ev.Len()
	id, err = friend.Send(ctx, "alice", "are you there?")
	if err != nil {
		t.Fatal(err)
	}
	refused(friend, mark, id)
	callRefused(friend, mark)
	p.screenshot("blocked")
	p.click("block")
	p.waitFor("unblocked", textHas("block", "Block"))
	if _, err := friend.Send(ctx, "alice", "back again"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("welcome again", message("in", "back again", ""))
	if n := p.countMessages("are you there?"); n != 0 {
		t.Error("a message sent while blocked is shown")
	}
	// The choices last across a reload.
	p.reloadAndWait()
	if got := eval[bool](p, `window.parley.debug().contactsOnly`); !got {
		t.Error("contacts only was forgotten after a reload")
	}
}
