package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// serverOutage is how long the signaling server stays away (issue 12).
const serverOutage = 20 * time.Second

// TestCallsSurviveServerOutage (issue 12, broken item 1): the signaling
// server goes away for 20 s while two calls are up, browser<->browser and
// browser<->Go, and the ends come back to the new server seconds apart
// (each page's backoff has its own jitter; alice's is kept short, bob's
// grows to 15 s). The first to return must not read the other's absence
// as "went offline": both calls go on, with audio both ways afterwards.
func TestCallsSurviveServerOutage(t *testing.T) {
	srv := signaltest.StartRestartable(t, signal.Config{Web: web.Handler()})
	alice := openPage(t, srv.HTTP+"/", "alice")
	bob := openPage(t, srv.HTTP+"/", "bob")
	carol := openPage(t, srv.HTTP+"/", "carol")
	gopher := startGoClient(t, srv.URL, "gopher")
	for _, p := range []*page{alice, bob, carol} {
		p.join(p.tag)
	}
	alice.waitFor("bob listed", visible("contact-bob"))
	alice.click("contact-bob")
	alice.click("call")
	bob.click("answer")
	gopher.ev.Wait(t, wait, "gopher sees carol", isOnline("carol"))
	if err := gopher.Call(context.Background(), "carol"); err != nil {
		t.Fatal(err)
	}
	carol.click("answer")
	for _, p := range []*page{alice, bob, carol} {
		p.waitFor("call connected", textHas("call-state", "connected", "direct"))
		p.audioFlows(25)
	}
	goHears := func(n int) {
		t.Helper()
		mark := gopher.ev.Len()
		base := uint32(0)
		for _, e := range gopher.ev.All() {
			if s, ok := e.(client.StatsEvent); ok && s.With == "carol" {
				base = s.RTPPacketsReceived
			}
		}
		gopher.ev.WaitSince(t, mark, wait, "gopher hears carol", func(e client.Event) bool {
			s, ok := e.(client.StatsEvent)
			return ok && s.With == "carol" && s.RTPPacketsReceived > base+uint32(n)
		})
	}
	goHears(25)

	mark := gopher.ev.Len()
	eval[any](alice, `window.parley.sig.maxBackoff = 1000`)
	srv.Down()
	until := time.Now().Add(serverOutage)
	for _, p := range []*page{alice, bob, carol} {
		p.waitFor("outage shown", `document.querySelector('[data-testid=conn-status]').dataset.state === 'waiting'`)
	}
	time.Sleep(time.Until(until)) // the outage itself is the scenario
	for _, p := range []*page{alice, bob, carol} {
		p.audioFlows(25) // media does not need the server
	}
	srv.Up()
	back := time.Now()
	for _, p := range []*page{alice, bob, carol} {
		p.waitForD("signed in again", `document.querySelector('[data-testid=conn-status]').dataset.state === 'online'`, 30*time.Second)
		t.Logf("%s back %v after the server", p.tag, time.Since(back).Round(time.Millisecond))
	}
	gopher.ev.WaitSince(t, mark, 30*time.Second, "gopher back", func(e client.Event) bool { r, ok := e.(client.ReadyEvent); return ok && r.Reconnect })
	for _, p := range []*page{alice, bob, carol} {
		p.waitFor("still in the call", textHas("call-state", "connected"))
		p.audioFlows(25)
	}
	goHears(25)
	if n := gopher.ev.CountSince(mark, isCall("carol", client.CallEnded)); n != 0 {
		t.Fatalf("gopher's call ended during the outage: %v", gopher.ev.All()[mark:])
	}
	// The calls are still whole: a hang-up reaches the other side.
	alice.click("hangup")
	bob.waitFor("bob sees alice hang up", textHas("call-state", "ended", "alice hung up"))
	carol.click("hangup")
	gopher.ev.WaitSince(t, mark, wait, "gopher sees carol hang up", isCall("carol", client.CallEnded))
}
