package supernode_test

import (
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

// TestOverloadMovesUsersWithoutCuttingCalls: a relayed call fills its
// supernode (2 of 2 sessions); the server demotes it as overloaded and
// takes it off its users' lists, yet the call in progress keeps flowing
// through it (the client retires the connection only after the call).
// When another supernode is promoted the users get it and warm it.
func TestOverloadMovesUsersWithoutCuttingCalls(t *testing.T) {
	sig := loopbackSignal(t, nil)
	full := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snfull", MaxSessions: 2, AllowPeers: supernodetest.Loopback})
	full.WaitState(t, proto.SupernodePromoted, 10*time.Second)

	warm := func(c *client.Config) { c.Relay.AlwaysWarm = true }
	alice := startPeer(t, sig.URL, "alice", warm)
	bob := startPeer(t, sig.URL, "bob", warm)
	for _, p := range []*peer{alice, bob} {
		p.ev.Wait(t, 10*time.Second, "warm", func(e client.Event) bool {
			r, ok := e.(client.RelayEvent)
			return ok && r.Warm && r.Supernode == "snfull"
		})
	}
	alice.ev.Wait(t, 10*time.Second, "bob online", func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == "bob" && p.Online()
	})
	ce := placeCall(t, alice, bob, "bob", "alice")
	if ce.Path != "relay" || ce.Via != "snfull" {
		t.Fatalf("call %+v, want relay via snfull", ce)
	}
	st := full.WaitState(t, proto.SupernodeDemoted, 10*time.Second)
	if !strings.Contains(st.Reason, "overloaded: 2 of 2 sessions") {
		t.Fatalf("demotion reason %q", st.Reason)
	}
	mark := alice.ev.Len()
	alice.ev.WaitSince(t, 0, 10*time.Second, "snfull taken off the list", func(e client.Event) bool {
		r, ok := e.(client.RelayEvent)
		return ok && r.Supernode == "" && strings.Contains(r.Reason, "snfull demoted: overloaded")
	})
	spare := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snspare", AllowPeers: supernodetest.Loopback})
	spare.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	alice.ev.WaitSince(t, mark, 10*time.Second, "moved to snspare", func(e client.Event) bool {
		r, ok := e.(client.RelayEvent)
		return ok && r.Supernode == "snspare" && r.Warm
	})
	// The call goes on: more audio arrives over the next seconds, and it
	// does not end.
	rtp := func(since int) uint32 {
		s := bob.ev.WaitSince(t, since, 10*time.Second, "stats", func(e client.Event) bool {
			s, ok := e.(client.StatsEvent)
			return ok && s.With == "alice"
		}).(client.StatsEvent)
		return s.RTPPacketsReceived
	}
	before := rtp(bob.ev.Len())
	time.Sleep(2 * time.Second)
	after := rtp(bob.ev.Len())
	if after < before+50 {
		t.Fatalf("audio stalled after the move: %d -> %d packets", before, after)
	}
	if n := alice.ev.Count(func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.State == client.CallEnded
	}); n != 0 {
		t.Fatalf("the call ended during the move: %v", alice.ev.All()[mark:])
	}
	t.Logf("call via snfull kept flowing after its demotion (%d -> %d packets at bob); users moved to snspare", before, after)
}
