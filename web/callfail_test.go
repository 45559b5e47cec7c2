package web_test

import (
	"context"
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// TestRelayOnlyWithoutRelay (issue 12, broken item 3): "Always relay" on
// the page with no relay to be had. A call from the page fails at once and
// says why; a call to the page from Go, once answered, fails on both sides
// with the real reason, not "no answer" after the ring timeout, and is
// never shown as connected.
func TestRelayOnlyWithoutRelay(t *testing.T) {
	srv := startServer(t)
	gopher := startGoClient(t, srv.URL, "gopher")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("relay-only")
	p.waitFor("relay-only on", elem("relay-only")+`.checked`)
	p.click("contact-gopher")
	p.click("call")
	p.waitFor("the call fails, saying why", textHas("call-state", "ended", "always relay", "no relay is available"))

	mark := gopher.ev.Len()
	if err := gopher.Call(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	ev := gopher.ev.WaitSince(t, mark, wait, "gopher's call fails", isCall("alice", client.CallEnded)).(client.CallEvent)
	if ev.Code != proto.EndNoRelay || !strings.Contains(ev.Reason, "alice relays every call") {
		t.Errorf("gopher: code %q, reason %q", ev.Code, ev.Reason)
	}
	p.waitFor("the page says why", textHas("call-state", "ended", "always relay"))
	if n := gopher.ev.CountSince(mark, isCall("alice", client.CallConnected)); n != 0 {
		t.Error("gopher was shown a connected call")
	}
}

// TestCallerHearsRinging (issue 12, broken item 4): the caller's banner
// used to keep "opening your microphone" while the peer's device rang.
// Once the server hands the ring over it says "Ringing", and a ringback
// tone plays until the call is answered.
func TestCallerHearsRinging(t *testing.T) {
	srv := startServer(t)
	gopher := startGoClient(t, srv.URL, "gopher")
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contact-gopher")
	mark := gopher.ev.Len()
	p.click("call")
	gopher.ev.WaitSince(t, mark, wait, "gopher rings", isCall("alice", client.CallRinging))
	p.waitFor("the banner says ringing", textHas("call-state", "Ringing gopher"))
	p.waitFor("ringback plays", `window.parley.debug().ringback?.played >= 1 && window.parley.debug().ringback.state === "running"`)
	if err := gopher.Answer(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	p.waitFor("connected", textHas("call-state", "connected"))
	p.waitFor("ringback stops", `window.parley.debug().ringback === null`)
	p.click("hangup")
}
