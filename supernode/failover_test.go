package supernode_test

import (
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/audiogap"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

// TestCallSurvivesSupernodeLoss: a relayed call's supernode stops. Each
// client holds relay candidates on both supernodes, so the call's standby
// pair through the other one is checked and warm: the link switches to it
// (client/path.go) and audio goes on through the other supernode; nobody
// sees the call end.
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
	heard := &audiogap.Recorder{}
	alice := startPeer(t, sig.URL, "alice", func(c *client.Config) { c.Relay.AlwaysWarm = true })
	bob := startPeer(t, sig.URL, "bob", func(c *client.Config) {
		c.Relay.AlwaysWarm = true
		c.AudioSink = func(string) (client.AudioSink, error) { return heard, nil }
	})
	alice.ev.Wait(t, 10*time.Second, "bob online", func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bob" && p.Online()
	})
	first := placeCall(t, alice, bob, "bob", "alice")
	if first.Path != "relay" || sns[first.Via] == nil {
		t.Fatalf("call %+v, want relay via sna or snb", first)
	}
	other := map[string]string{"sna": "snb", "snb": "sna"}[first.Via]
	testutil.Eventually(t, 10*time.Second, "audio at bob", func() bool { return heard.Count() >= 25 })
	mark := bob.ev.Len()
	lost := time.Now()
	sns[first.Via].Stop()

	// Audio flows again at bob's, through the other supernode.
	bob.ev.WaitSince(t, mark, 20*time.Second, "audio via "+other, func(e client.Event) bool {
		s, ok := e.(client.StatsEvent)
		return ok && s.With == "alice" && s.Path == "relay" && s.Via == other
	})
	n0 := heard.Count()
	testutil.Eventually(t, 10*time.Second, "25 more packets after the move", func() bool { return heard.Count() >= n0+25 })
	t.Logf("%s stopped: audio at bob via %s, %s", first.Via, other, heard.LongestGap(lost.Add(-time.Second), time.Now()))
	for _, p := range []*peer{alice, bob} {
		if n := p.ev.Count(func(e client.Event) bool {
			c, ok := e.(client.CallEvent)
			return ok && c.State == client.CallEnded
		}); n != 0 {
			t.Fatalf("the call ended (%d ended events)", n)
		}
	}
}
