package client_test

import (
	"context"
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/pion/webrtc/v4"
)

// TestRelayOnlyWithoutRelayFailsAtOnce (issue 12, broken item 3): with
// "always relay" on and no relay to be had, an answered call used to sit
// at "connecting" until the ring timeout and then told each side a wrong
// reason ("no answer", "hung up"). It fails as soon as gathering finds
// nothing, and each side says why.
func TestRelayOnlyWithoutRelayFailsAtOnce(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{})
	alice := startClient(t, srv.URL, "alice", nil, func(c *client.Config) { c.ICETransportPolicy = webrtc.ICETransportPolicyRelay })
	bob := startClient(t, srv.URL, "bob", nil, func(c *client.Config) { c.AutoAnswer = true })
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	if err := alice.Call(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	a := alice.ev.Wait(t, wait, "alice's call fails", ended("bob")).(client.CallEvent)
	if a.Code != proto.EndNoRelay || !strings.Contains(a.Reason, "always relay") || !strings.Contains(a.Reason, "no relay") {
		t.Errorf("alice: code %q, reason %q", a.Code, a.Reason)
	}
	b := bob.ev.Wait(t, wait, "bob's call fails", ended("alice")).(client.CallEvent)
	if b.Code != proto.EndNoRelay || !strings.Contains(b.Reason, "alice relays every call") {
		t.Errorf("bob: code %q, reason %q", b.Code, b.Reason)
	}
	for _, p := range []*peer{alice, bob} {
		if n := p.ev.Count(func(e client.Event) bool { c, ok := e.(client.CallEvent); return ok && c.State == client.CallConnected }); n != 0 {
			t.Errorf("a call that had no path was shown connected")
		}
	}
}
