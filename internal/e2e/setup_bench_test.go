package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
)

var setupCalls = flag.Int("setup.calls", 5, "calls per pair in BenchmarkCallSetupMatrix")

// BenchmarkCallSetupMatrix times `Call` -> connected for every pair of
// home kinds, with a volunteer supernode on the lab's internet, as users
// meet it: each call between two freshly signed-in clients (a fresh link,
// so ICE runs from scratch), each client's NAT report known (sent at
// sign-in, as a client that probed in the last five minutes does) and its
// relay connections warm. It reports the median over setup.calls calls
// per pair, and the medians of the direct and the relayed pairs; with
// -args -matrix.out=FILE it writes the per-pair table. Run it alone, once:
//
//	go test ./internal/e2e -run '^$' -bench CallSetupMatrix -benchtime 1x -args -matrix.out=setup.md
func BenchmarkCallSetupMatrix(b *testing.B) {
	for b.Loop() {
		w := newWorld(b)
		startRelaySignal(b, w)
		host := w.lab.AddPublicHost("sn")
		startLabSupernode(b, w, host, "sn1", host.Addrs[0]).WaitState(b, proto.SupernodePromoted, 30*time.Second)
		homesA, homesB := map[natlab.NATKind]*natlab.Home{}, map[natlab.NATKind]*natlab.Home{}
		for i, k := range natlab.Kinds {
			homesA[k] = w.lab.AddHome(fmt.Sprintf("a%d", i), k)
			homesB[k] = w.lab.AddHome(fmt.Sprintf("b%d", i), k)
		}
		type result struct {
			a, b  natlab.NATKind
			times []time.Duration
			paths map[outcome]int
		}
		var results []result
		var directMeds, relayedMeds []time.Duration
		n := 0
		for i, a := range natlab.Kinds {
			for _, k := range natlab.Kinds[i:] {
				r := result{a: a, b: k, paths: map[outcome]int{}}
				for range *setupCalls {
					n++
					d, path := timedCall(b, w, homesA[a], homesB[k], fmt.Sprintf("s%03d", n))
					r.times = append(r.times, d)
					r.paths[path]++
				}
				slices.Sort(r.times)
				med := r.times[len(r.times)/2]
				switch {
				case r.paths[direct] == len(r.times):
					directMeds = append(directMeds, med)
				case r.paths[relay] == len(r.times):
					relayedMeds = append(relayedMeds, med)
				}
				b.Logf("%s -> %s: median %s over %d calls %v, paths %v", a, k, med.Round(time.Millisecond), len(r.times), r.times, r.paths)
				results = append(results, r)
			}
		}
		slices.Sort(directMeds)
		slices.Sort(relayedMeds)
		if len(directMeds) > 0 {
			b.ReportMetric(float64(directMeds[len(directMeds)/2].Microseconds())/1000, "direct-p50-ms")
			b.ReportMetric(float64(directMeds[len(directMeds)-1].Microseconds())/1000, "direct-worst-pair-ms")
		}
		if len(relayedMeds) > 0 {
			b.ReportMetric(float64(relayedMeds[len(relayedMeds)/2].Microseconds())/1000, "relayed-p50-ms")
			b.ReportMetric(float64(relayedMeds[len(relayedMeds)-1].Microseconds())/1000, "relayed-worst-pair-ms")
		}
		// The table: one cell per unordered pair, both ways.
		cell := map[[2]natlab.NATKind]string{}
		for _, r := range results {
			var ps []string
			for _, p := range []outcome{direct, relay} {
				if r.paths[p] > 0 {
					ps = append(ps, string(p))
				}
			}
			s := fmt.Sprintf("%s %d ms", strings.Join(ps, "/"), r.times[len(r.times)/2].Milliseconds())
			cell[[2]natlab.NATKind{r.a, r.b}], cell[[2]natlab.NATKind{r.b, r.a}] = s, s
		}
		var t strings.Builder
		fmt.Fprintf(&t, "| median of %d | %s |\n|---|%s\n", *setupCalls, strings.Join(kindNames(), " | "), strings.Repeat("---|", len(natlab.Kinds)))
		for _, a := range natlab.Kinds {
			row := []string{a.String()}
			for _, k := range natlab.Kinds {
				row = append(row, cell[[2]natlab.NATKind{a, k}])
			}
			fmt.Fprintf(&t, "| %s |\n", strings.Join(row, " | "))
		}
		b.Logf("call set-up, Call -> connected, median of %d calls per pair:\n%s", *setupCalls, t.String())
		if *matrixOut != "" {
			if err := os.WriteFile(*matrixOut, []byte(t.String()), 0o644); err != nil {
				b.Error(err)
			}
		}
	}
}

// timedCall signs in a caller in ha and a callee in hb, waits until each
// knows the other's NAT type and its relays are warm, and times the call
// to connected; it returns that and the path the call settled on.
func timedCall(b *testing.B, w *world, ha, hb *natlab.Home, prefix string) (time.Duration, outcome) {
	report := func(h *natlab.Home) peerOpts {
		return func(_ *natlab.Home, cfg *client.Config) {
			cfg.NATReport = &proto.NATReport{Type: h.Kind.NATType(), Mapping: h.Kind.Mapping(), Filtering: h.Kind.Filtering()}
		}
	}
	alice := startLabPeer(b, w, ha, prefix+"-a", relayInHome, report(ha))
	bob := startLabPeer(b, w, hb, prefix+"-b", relayInHome, report(hb))
	defer alice.stop()
	defer bob.stop()
	alice.ev.Wait(b, 20*time.Second, "sees bob's NAT", func(s stamped) bool {
		p, ok := s.ev.(client.PresenceEvent)
		return ok && p.Name == bob.name && p.Online() && p.NAT == hb.Kind.NATType()
	})
	for _, p := range []*peer{alice, bob} {
		if p.home.Kind == natlab.UDPBlocked || !proto.NeedsRelay(p.home.Kind.NATType(), proto.NATSymmetric) {
			continue // no warm-up: TLS, or no relay expected
		}
		p.ev.Wait(b, 20*time.Second, p.name+": relay warm", func(s stamped) bool {
			r, ok := s.ev.(client.RelayEvent)
			return ok && r.Warm
		})
	}
	t0 := time.Now()
	if err := alice.Call(context.Background(), bob.name); err != nil {
		b.Fatal(err)
	}
	s := alice.ev.Wait(b, 2*noPathWithin, "call settles", func(s stamped) bool { return callSettled(bob.name)(s.ev) })
	if ce := s.ev.(client.CallEvent); ce.State != client.CallConnected {
		b.Fatalf("%s -> %s: %+v", ha, hb, ce)
	}
	d := s.at.Sub(t0)
	st := alice.ev.Wait(b, 15*time.Second, "audio", func(s stamped) bool { return audioFrom(bob.name, 25)(s.ev) }).ev.(client.StatsEvent)
	alice.Hangup(context.Background(), bob.name)
	return d, outcome(st.Path)
}
