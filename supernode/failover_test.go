package supernode_test

import (
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/webrtc/v4"
)

// TestCallSurvivesSupernodeLoss: a relayed call's supernode stops; the
// caller restarts ICE (RFC 8445 section 9) with the new supernode list and
// the call goes on through the other supernode instead of ending.
func TestCallSurvivesSupernodeLoss(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sns := map[string]*supernodetest.Supernode{}
	// Each on its own loopback address, so the relayed address tells which
	// one carries the call.
	for name, ip := range map[string]string{"sna": "127.0.0.2", "snb": "127.0.0.3"} {
		a := ip + ":0"
		sns[name] = supernodetest.Start(t, sig.URL, supernode.Config{Name: name, AllowPeers: supernodetest.Loopback,
			ListenQUIC: a, ListenTURNUDP: a, ListenTURNTCP: a, ListenTURNTLS: a})
		sns[name].WaitState(t, proto.SupernodePromoted, 10*time.Second)
	}
	fast := func(c *client.Config) {
		c.Relay.AlwaysWarm = true
		c.SettingEngine = func(se *webrtc.SettingEngine) {
			client.LoopbackOnly(se)
			se.SetICETimeouts(time.Second, 3*time.Second, 200*time.Millisecond)
		}
	}
	alice := startPeer(t, sig.URL, "alice", fast)
	bob := startPeer(t, sig.URL, "bob", fast)
	alice.ev.Wait(t, 10*time.Second, "bob online", func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bob" && p.Online()
	})
	first := placeCall(t, alice, bob, "bob", "alice")
	if first.Path != "relay" || sns[first.Via] == nil {
		t.Fatalf("call %+v, want relay via sna or snb", first)
	}
	marks := []int{alice.ev.Len(), bob.ev.Len()}
	lost := time.Now()
	sns[first.Via].Stop()

	again := alice.ev.WaitSince(t, marks[0], 30*time.Second, "call back on the other supernode", func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && (c.State == client.CallConnected || c.State == client.CallEnded)
	}).(client.CallEvent)
	if again.State != client.CallConnected || again.Path != "relay" || again.Via == first.Via {
		t.Fatalf("after losing %s: %+v, want connected via the other supernode", first.Via, again)
	}
	t.Logf("path recovered via %s %v after %s stopped", again.Via, time.Since(lost).Round(time.Millisecond), first.Via)
	// Audio flows again on bob's side, and nobody saw the call end.
	bob.ev.WaitSince(t, marks[1], 20*time.Second, "audio after recovery", func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == "alice" && s.Path == "relay"
	})
	n0 := lastRTP(t, bob, "alice")
	deadline := time.Now().Add(10 * time.Second)
	for lastRTP(t, bob, "alice") < n0+25 {
		if time.Now().After(deadline) {
			t.Fatalf("bob's received RTP stuck at %d after recovery", lastRTP(t, bob, "alice"))
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, p := range []*peer{alice, bob} {
		if n := p.ev.Count(func(e client.Event) bool {
			c, ok := e.(client.CallEvent)
			return ok && c.State == client.CallEnded
		}); n != 0 {
			t.Fatalf("the call ended (%d ended events)", n)
		}
	}
}

// lastRTP is the RTP packet count in the latest stats from with.
func lastRTP(t *testing.T, p *peer, with string) uint32 {
	var n uint32
	for _, e := range p.ev.All() {
		if s, ok := e.(client.StatsEvent); ok && s.With == with {
			n = s.RTPPacketsReceived
		}
	}
	return n
}
