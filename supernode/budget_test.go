package supernode_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
)

// flow is relayed voice between a QUIC client's allocation and a plain
// UDP peer on loopback: 160-byte packets every interval, both ways.
type flow struct {
	relay    net.PacketConn
	peer     *net.UDPConn
	up, down atomic.Int64 // packets received at the peer, at the client
	stop     func()
}

func startFlow(t testing.TB, relay net.PacketConn, interval time.Duration) *flow {
	t.Helper()
	peer, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &flow{relay: relay, peer: peer}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	read := func(c net.PacketConn, n *atomic.Int64) {
		defer wg.Done()
		buf := make([]byte, 2048)
		for ctx.Err() == nil {
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if k, _, err := c.ReadFrom(buf); err == nil && k == 160 {
				n.Add(1)
			}
		}
	}
	wg.Add(3)
	go read(peer, &f.up)
	go read(relay, &f.down)
	go func() {
		defer wg.Done()
		pkt := make([]byte, 160)
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var peerAt net.Addr // the relayed address, learnt from the first packet
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			relay.WriteTo(pkt, peer.LocalAddr())
			if peerAt == nil {
				peerAt = relay.LocalAddr()
			}
			peer.WriteTo(pkt, peerAt)
		}
	}()
	f.stop = func() { cancel(); wg.Wait(); peer.Close() }
	t.Cleanup(f.stop)
	return f
}

// TestVoiceFillsTheBudget: on default limits a supernode admits voice
// sessions until its Mbit/s budget (wire bytes) is full — not a fixed
// session count — refuses the next one with a reason the client acts on,
// and carries the admitted ones without dropping their packets.
func TestVoiceFillsTheBudget(t *testing.T) {
	sig := loopbackSignal(t, nil)
	const budget = 1.0 // Mbit/s: 6 voice sessions of 152 kbit/s
	sn := supernodetest.Start(t, sig.URL, supernode.Config{MaxRelayMbps: budget, AllowPeers: supernodetest.Loopback})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	if st := sn.Status(); st.MaxSessions != 26 {
		t.Fatalf("default MaxSessions for %.0f Mbit/s: %d, want 26 (4 per voice session the budget carries)", budget, st.MaxSessions)
	}
	var relays []net.PacketConn
	var refusal *proto.Error
	for i := 0; refusal == nil; i++ {
		if i > 10 {
			t.Fatal("more than 10 voice sessions admitted on a 1 Mbit/s budget")
		}
		info := signIn(t, sig.URL, fmt.Sprintf("user%d", i)).list(1).Supernodes[0]
		relay, perr := tryAllocateQUIC(t, info)
		if perr != nil {
			refusal = perr
			break
		}
		relays = append(relays, relay)
	}
	if len(relays) != 6 || refusal.Code != proto.CodeOverBudget || !strings.Contains(refusal.Message, "bandwidth budget") {
		t.Fatalf("%d sessions admitted, then %v; want 6, then over_budget for bandwidth", len(relays), refusal)
	}
	var flows []*flow
	for _, r := range relays {
		flows = append(flows, startFlow(t, r, 20*time.Millisecond))
	}
	waitFor(t, 10*time.Second, "voice both ways on every session", func() bool {
		for _, f := range flows {
			if f.up.Load() < 100 || f.down.Load() < 100 {
				return false
			}
		}
		return true
	})
	st := sn.Stats()
	t.Logf("6 voice sessions at %.2f Mbit/s on the wire (budget %.1f); refused the 7th: %s", st.WireMbps, budget, refusal.Message)
	if st.SessionDrops+st.Shed+st.SlowDrops+st.SendErrors != 0 || st.StreamRefused != 0 {
		t.Fatalf("the supernode dropped admitted voice: %+v", st)
	}
	if st.BandwidthFull != 1 {
		t.Fatalf("BandwidthFull %d", st.BandwidthFull)
	}
}

// TestShedNewestFlow: when admitted sessions outgrow the budget (one
// raises its bitrate), the newest flow is ended whole and counted; the
// older call keeps every packet.
func TestShedNewestFlow(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{MaxRelayMbps: 0.5, AllowPeers: supernodetest.Loopback})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	old := startFlow(t, allocateQUIC(t, signIn(t, sig.URL, "alice").list(1).Supernodes[0]), 20*time.Millisecond)
	waitFor(t, 10*time.Second, "the first call flowing", func() bool { return old.down.Load() > 20 })
	// ~810 kbit/s on the wire (under its own 1000 kbit/s session budget):
	// with the first call, far past the 0.5 Mbit/s total.
	hog := startFlow(t, allocateQUIC(t, signIn(t, sig.URL, "mallory").list(1).Supernodes[0]), 4*time.Millisecond)
	waitFor(t, 10*time.Second, "the newest flow shed", func() bool { return sn.Stats().Shed == 1 })
	waitFor(t, 10*time.Second, "its allocation gone", func() bool { return sn.Stats().Sessions == 1 })
	shedAt := hog.up.Load()
	before := old.up.Load() + old.down.Load()
	waitFor(t, 10*time.Second, "the first call still flowing", func() bool { return old.up.Load()+old.down.Load() > before+100 })
	if hog.up.Load() > shedAt+5 {
		t.Fatalf("the shed flow still reaches its peer: %d -> %d packets", shedAt, hog.up.Load())
	}
	if st := sn.Stats(); st.Shed != 1 || st.SessionDrops != 0 {
		t.Fatalf("shed %d flows, dropped %d packets of calls: %+v", st.Shed, st.SessionDrops, st)
	}
}
