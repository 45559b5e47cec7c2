package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
)

// TestImpairedCall calls between two port-restricted homes whose links both
// delay every packet 40 ms ± 5 ms and drop 5 % of them, in each direction
// (the round trip crosses four impaired hops: ~160 ms, ~19 % loss). The
// call must still connect directly and audio must keep flowing both ways
// at most of its 50 packets/s, with the loss visible in the receiver's
// statistics.
func TestImpairedCall(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	w := newWorld(t)
	ha := w.lab.AddHome("ia", natlab.PortRestricted)
	hb := w.lab.AddHome("ib", natlab.PortRestricted)
	im := natlab.Impairment{Delay: 40 * time.Millisecond, Jitter: 5 * time.Millisecond, Loss: 0.05}
	im.Seed = 1
	w.lab.Impair(ha, im)
	im.Seed = 2
	w.lab.Impair(hb, im)

	alice := w.startPeer(t, ha, "alice", false)
	bob := w.startPeer(t, hb, "bob", false)
	alice.wait(t, 20*time.Second, "sees bob", isOnline("bob"))
	ctx := context.Background()
	t0 := time.Now()
	if err := alice.Call(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	s := alice.wait(t, noPathWithin+10*time.Second, "call settles", callSettled("bob"))
	ce := s.ev.(client.CallEvent)
	if ce.State != client.CallConnected || ce.Path != "direct" {
		t.Fatalf("call over the impaired link: %+v after %s, want connected directly", ce, s.at.Sub(t0))
	}
	t.Logf("connected in %s", s.at.Sub(t0).Round(time.Millisecond))

	// Audio rate over a 3 s window, on both sides.
	for _, p := range []struct{ rx, tx *peer }{{alice, bob}, {bob, alice}} {
		first := p.rx.wait(t, 15*time.Second, "audio from "+p.tx.name, audioFrom(p.tx.name, 25))
		n1 := first.ev.(client.StatsEvent).RTPPacketsReceived
		mark := p.rx.ev.Len()
		var last stamped
		p.rx.ev.WaitSince(t, mark, 15*time.Second, p.rx.name+": 3 s more audio", func(s stamped) bool {
			if st, ok := s.ev.(client.StatsEvent); ok && st.With == p.tx.name && s.at.Sub(first.at) >= 3*time.Second {
				last = s
				return true
			}
			return false
		})
		st := last.ev.(client.StatsEvent)
		secs := last.at.Sub(first.at).Seconds()
		rate := float64(st.RTPPacketsReceived-n1) / secs
		t.Logf("%s <- %s: %.1f packets/s over %.1fs, lost %d, jitter %.1f ms, rtt %.0f ms, path %s/%s",
			p.rx.name, p.tx.name, rate, secs, st.PacketsLost, st.JitterMs, st.RTTms, st.LocalCandidate, st.RemoteCandidate)
		// 50 packets/s sent; 1 - 0.95^2 ~ 10 % are lost on the way.
		if rate < 30 {
			t.Errorf("%s receives %.1f packets/s from %s, want most of 50", p.rx.name, rate, p.tx.name)
		}
		if st.PacketsLost <= 0 {
			t.Errorf("%s reports no lost packets from %s over a 10 %% lossy path", p.rx.name, p.tx.name)
		}
	}
	// The impairment is really on the path: round trip through four
	// delayed hops, and packets dropped in both homes.
	rtt := alice.wait(t, 15*time.Second, "an RTT measurement", func(e client.Event) bool {
		st, ok := e.(client.StatsEvent)
		return ok && st.RTTms > 0
	}).ev.(client.StatsEvent).RTTms
	if rtt < 120 {
		t.Errorf("RTT %.0f ms, want about 160 ms through two homes delayed 40 ms each way", rtt)
	}
	for _, h := range []*natlab.Home{ha, hb} {
		st := w.lab.ImpairStats(h)
		t.Logf("%s: %+v", h, st)
		if st.Dropped == 0 || st.Passed == 0 {
			t.Errorf("%s impairment stats %+v: want packets passed and dropped", h, st)
		}
	}
	if err := alice.Hangup(ctx, "bob"); err != nil {
		t.Fatal(err)
	}
	bob.wait(t, 15*time.Second, "call ended", func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && c.With == "alice" && c.State == client.CallEnded
	})
}
