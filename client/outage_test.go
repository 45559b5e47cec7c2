package client_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// serverOutage is how long the signaling server stays away in the outage
// tests (issue 12: "server killed for 20 s mid-call").
const serverOutage = 20 * time.Second

// gate refuses a client's signaling dials while shut, so two clients can
// come back to a restarted server seconds apart.
type gate struct{ shut atomic.Bool }

func (g *gate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.shut.Load() {
		return nil, errors.New("gate: held back by the test")
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// received waits for a StatsEvent of p's call with more than n packets
// received beyond what the last one before mark said.
func received(t *testing.T, p *peer, with string, mark, n int) {
	t.Helper()
	base := uint32(0)
	for _, e := range p.ev.All()[:mark] {
		if s, ok := e.(client.StatsEvent); ok && s.With == with {
			base = s.RTPPacketsReceived
		}
	}
	p.ev.WaitSince(t, mark, wait, "audio from "+with, func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == with && s.RTPPacketsReceived > base+uint32(n)
	})
}

func ended(with string) func(client.Event) bool { return callState(with, client.CallEnded) }

// TestCallSurvivesServerOutage (issue 12, broken item 1): the signaling
// server goes away for 20 s in the middle of a call and the two ends come
// back to the new server seconds apart. The first to return must read the
// other's absence from its welcome as "unknown", not "went offline": the
// call goes on with audio both ways, before, during and after.
func TestCallSurvivesServerOutage(t *testing.T) {
	srv := signaltest.StartRestartable(t, signal.Config{})
	tone := func(c *client.Config) {
		c.AudioSource = func(string) (audio.Source, error) { return audio.Open("tone") }
	}
	var bobGate gate
	alice := startClient(t, srv.URL, "alice", nil, tone)
	bob := startClient(t, srv.URL, "bob", nil, func(c *client.Config) {
		tone(c)
		c.AutoAnswer = true
		c.Dial = bobGate.dial
	})
	alice.ev.Wait(t, wait, "alice sees bob", online("bob"))
	if err := alice.Call(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	alice.ev.Wait(t, wait, "alice connected", callState("bob", client.CallConnected))
	bob.ev.Wait(t, wait, "bob connected", callState("alice", client.CallConnected))
	received(t, alice, "bob", alice.ev.Len(), 50)
	received(t, bob, "alice", bob.ev.Len(), 50)

	marks := []int{alice.ev.Len(), bob.ev.Len()}
	bobGate.shut.Store(true)
	srv.Down()
	deadline := time.Now().Add(serverOutage)
	// Media flows while the server is away.
	received(t, alice, "bob", alice.ev.Len(), 100)
	received(t, bob, "alice", bob.ev.Len(), 100)
	time.Sleep(time.Until(deadline)) // the outage itself is the scenario
	srv.Up()
	// Alice signs in again first; bob three seconds later.
	alice.ev.WaitSince(t, marks[0], wait, "alice back", func(e client.Event) bool { r, ok := e.(client.ReadyEvent); return ok && r.Reconnect })
	received(t, alice, "bob", alice.ev.Len(), 100) // ~3 s of audio while bob is not back
	bobGate.shut.Store(false)
	bob.ev.WaitSince(t, marks[1], wait, "bob back", func(e client.Event) bool { r, ok := e.(client.ReadyEvent); return ok && r.Reconnect })
	waitUntil(t, "alice lists bob online", func() bool {
		ps, _ := alice.Presence(context.Background())
		for _, p := range ps {
			if p.Name == "bob" && p.Online() {
				return true
			}
		}
		return false
	})
	received(t, alice, "bob", alice.ev.Len(), 50)
	received(t, bob, "alice", bob.ev.Len(), 50)
	for i, p := range []*peer{alice, bob} {
		with := []string{"bob", "alice"}[i]
		if n := p.ev.CountSince(marks[i], ended(with)); n != 0 {
			t.Fatalf("%s: the call ended during the outage: %v", with, p.ev.All()[marks[i]:])
		}
		if n := p.ev.CountSince(marks[i], offline(with)); n != 0 {
			t.Errorf("%s was shown as offline after the server restart", with)
		}
	}
	// The call is still a working call: a hang-up reaches the other side.
	if err := alice.Hangup(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	bob.ev.WaitSince(t, marks[1], wait, "bob sees the hang-up", ended("alice"))
}
