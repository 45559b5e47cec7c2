package client

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

// TestRefusedStreamsMoveToAnotherSupernode opens more relay streams at
// once than a supernode has room for: the ones over its limit are refused
// with over_budget (never admitted and then failed with a TURN 486), and
// the client moves — ICE is offered the other supernode at once, and the
// server sends a list without the full one.
func TestRefusedStreamsMoveToAnotherSupernode(t *testing.T) {
	sig := signaltest.Start(t, signal.Config{Supernodes: signal.SupernodeConfig{
		AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes: 64 << 10, MinMbps: 1, ProbeTimeout: time.Second, Heartbeat: 200 * time.Millisecond,
	}})
	small := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snsmall", MaxSessions: 2})
	big := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snbig"})
	for _, sn := range []*supernodetest.Supernode{small, big} {
		sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	}
	c, ev := runTestClient(t, Config{Server: sig.URL, Name: "alice", SettingEngine: LoopbackOnly, Relay: RelayConfig{AlwaysWarm: true}})
	ev.Wait(t, 10*time.Second, "both supernodes listed", func(e Event) bool {
		r, ok := e.(RelayEvent)
		return ok && r.Warm && len(c.relay.snapshot()) == 2
	})
	var smallQUIC string
	for _, sn := range c.relay.snapshot() {
		if sn.ID == "snsmall" {
			smallQUIC = sn.QUIC
		}
	}
	c.relay.mu.Lock()
	c.relay.primary = "snsmall" // as if it had answered first
	c.relay.mu.Unlock()
	mark := ev.Len()

	// Five calls gather at once: five relay streams to snsmall.
	const n = 5
	var wg sync.WaitGroup
	var mu sync.Mutex
	var ok []net.Conn
	var refused []*proto.Error
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := c.relay.Dial("tcp", smallQUIC)
			mu.Lock()
			defer mu.Unlock()
			var pe *proto.Error
			switch {
			case err == nil:
				ok = append(ok, conn)
			case errors.As(err, &pe):
				refused = append(refused, pe)
			default:
				t.Errorf("dial: %v", err)
			}
		}()
	}
	wg.Wait()
	defer func() {
		for _, conn := range ok {
			conn.Close()
		}
	}()
	if len(ok) != 2 || len(refused) != n-2 {
		t.Fatalf("%d streams admitted, %d refused; want 2 and %d", len(ok), len(refused), n-2)
	}
	for _, pe := range refused {
		if pe.Code != proto.CodeOverBudget || !strings.Contains(pe.Message, "is full") {
			t.Fatalf("refusal %v, want over_budget: full", pe)
		}
	}
	// The client moved: one event naming the new choice, ICE offered snbig.
	moved := ev.WaitSince(t, mark, 5*time.Second, "moved off snsmall", func(e Event) bool {
		r, ok := e.(RelayEvent)
		return ok && strings.HasPrefix(r.Reason, "refused by snsmall")
	}).(RelayEvent)
	if moved.Supernode != "snbig" {
		t.Fatalf("after the refusal the client prefers %q, want snbig", moved.Supernode)
	}
	servers := c.relay.iceServers(nil, 2) // two asked for (a call that may relay): the refusing one is still left out
	if len(servers) != 1 || !strings.Contains(servers[0].URLs[0], big.Addrs().QUIC.String()) {
		t.Fatalf("ICE servers after the refusal: %+v, want snbig's QUIC address", servers)
	}
	// And the server answered with a list that leaves snsmall out.
	testutil.Eventually(t, 5*time.Second, "a list without snsmall", func() bool {
		l := c.relay.snapshot()
		return len(l) == 1 && l[0].ID == "snbig"
	})
	if n := ev.Count(func(e Event) bool {
		r, ok := e.(RelayEvent)
		return ok && strings.HasPrefix(r.Reason, "refused by")
	}); n != 1 {
		t.Fatalf("%d refusal events for one burst, want 1", n)
	}
	// A stream to snbig is admitted.
	var bigQUIC string
	for _, sn := range c.relay.snapshot() {
		bigQUIC = sn.QUIC
	}
	conn, err := c.relay.Dial("tcp", bigQUIC)
	if err != nil {
		t.Fatalf("relay stream to snbig: %v", err)
	}
	conn.Close()
	if st := small.Stats(); st.StreamRefused != 0 || st.SessionsFull != n-2 {
		t.Fatalf("snsmall: %d TURN refusals of admitted streams, %d full refusals", st.StreamRefused, st.SessionsFull)
	}
}

// snapshot is the current list (tests).
func (r *relayer) snapshot() []proto.SupernodeInfo {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]proto.SupernodeInfo(nil), r.list...)
}
