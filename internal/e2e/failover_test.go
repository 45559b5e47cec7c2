package e2e

import (
	"context"
	"flag"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/audiogap"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
)

// failoverRuns is how many times each failover test runs; `make soak`
// asks for 10 (issue 13: every run under 800 ms).
var failoverRuns = flag.Int("failover.runs", 1, "runs of each failover test (make soak: 10)")

// maxAudioGap is the longest silence a failover may cause (issue 13).
const maxAudioGap = 800 * time.Millisecond

// TestFailoverSupernodeKilled: a call between two symmetric NATs relays
// through one of two supernodes, each a real `parley supernode` process
// on its own public host. The one carrying the call is SIGKILLed mid-call:
// its packets just stop. The standby pair through the other supernode,
// allocated and checked since the call began, takes over without an ICE
// restart: the longest silence each side hears must stay under
// maxAudioGap, the call must not end, and a chat message sent meanwhile
// arrives once.
func TestFailoverSupernodeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab with supernode processes")
	}
	bin := parleyBinary(t)
	var gaps []time.Duration
	for i := range *failoverRuns {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) {
			gaps = append(gaps, supernodeKilledRun(t, bin)...)
		})
	}
	t.Logf("longest audio gaps over %d runs (both directions): %s", *failoverRuns, fmtGaps(gaps))
}

func supernodeKilledRun(t *testing.T, bin string) []time.Duration {
	w := newWorld(t)
	startRelaySignal(t, w)
	procs := map[string]*exec.Cmd{}
	for _, name := range []string{"sna", "snb"} {
		procs[name] = startSupernodeProcess(t, w, w.lab.AddPublicHost(name), bin, name)
	}
	testutil.Eventually(t, 30*time.Second, "sna and snb promoted", func() bool {
		n := 0
		for _, sn := range w.sig.Supernodes() {
			if sn.State == proto.SupernodePromoted {
				n++
			}
		}
		return n == 2
	})
	ha := w.lab.AddHome("fa", natlab.Symmetric)
	hb := w.lab.AddHome("fb", natlab.Symmetric)
	c := startCall(t, w, ha, hb)
	if c.first.Path != "relay" || procs[c.first.Via] == nil {
		t.Fatalf("call %+v, want relayed through sna or snb", c.first)
	}
	other := map[string]string{"sna": "snb", "snb": "sna"}[c.first.Via]

	at := time.Now()
	if err := syscall.Kill(procs[c.first.Via].Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	t.Logf("SIGKILLed %s (pid %d), which carried the call", c.first.Via, procs[c.first.Via].Process.Pid)
	return c.failedOver(t, at, "relay", other)
}

// TestFailoverDirectPathCut: a direct call between a port-restricted and a
// full-cone home, with a supernode on the internet. The lab cuts the two
// homes off from each other (their packets vanish; each still reaches
// everyone else): the call's standby, its relayed pair through the
// supernode, takes over with a silence under maxAudioGap, the call goes
// on and a chat message sent meanwhile arrives once. When the cut heals,
// renomination moves the call back to a direct pair.
func TestFailoverDirectPathCut(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab")
	}
	var gaps []time.Duration
	for i := range *failoverRuns {
		t.Run(fmt.Sprintf("run%d", i+1), func(t *testing.T) {
			gaps = append(gaps, directPathCutRun(t)...)
		})
	}
	t.Logf("longest audio gaps over %d runs (both directions): %s", *failoverRuns, fmtGaps(gaps))
}

func directPathCutRun(t *testing.T) []time.Duration {
	w := newWorld(t)
	startRelaySignal(t, w)
	host := w.lab.AddPublicHost("sn")
	startLabSupernode(t, w, host, "sn1", host.Addrs[0]).WaitState(t, proto.SupernodePromoted, 30*time.Second)
	ha := w.lab.AddHome("fa", natlab.PortRestricted)
	hb := w.lab.AddHome("fb", natlab.FullCone)
	c := startCall(t, w, ha, hb)
	if c.first.Path != "direct" {
		t.Fatalf("call %+v, want direct", c.first)
	}
	at := time.Now()
	heal := w.lab.Cut(ha.WAN, hb.WAN)
	gaps := c.failedOver(t, at, "relay", "sn1")

	mark := c.bob.ev.Len()
	healed := time.Now()
	heal()
	s := c.bob.ev.WaitSince(t, mark, 20*time.Second, "direct again", func(s stamped) bool {
		st, ok := s.ev.(client.StatsEvent)
		return ok && st.With == c.alice.name && st.Path == "direct"
	})
	t.Logf("cut healed: direct again after %s", s.at.Sub(healed).Round(time.Millisecond))
	return gaps
}

// failoverCall is a connected call whose audio both sides record.
type failoverCall struct {
	alice, bob     *peer
	heardA, heardB *audiogap.Recorder // what alice and bob receive
	first          client.CallEvent   // the caller's connected event
}

// startCall signs in alice in ha and bob in hb (each relaying from its
// home), has alice call bob and waits for a second of audio both ways.
func startCall(t *testing.T, w *world, ha, hb *natlab.Home) *failoverCall {
	c := &failoverCall{heardA: &audiogap.Recorder{}, heardB: &audiogap.Recorder{}}
	c.alice = w.startPeer(t, ha, "alice", true, relayInHome, withSink(c.heardA))
	c.bob = w.startPeer(t, hb, "bob", true, relayInHome, withSink(c.heardB))
	for _, p := range []*peer{c.alice, c.bob} {
		p.wait(t, 30*time.Second, "NAT report", isNATDone)
	}
	c.alice.wait(t, 15*time.Second, "sees bob", isOnline("bob"))
	if err := c.alice.Call(context.Background(), "bob"); err != nil {
		t.Fatal(err)
	}
	c.first = c.alice.wait(t, 20*time.Second, "call settles", callSettled("bob")).ev.(client.CallEvent)
	if c.first.State != client.CallConnected {
		t.Fatalf("call %+v, want connected", c.first)
	}
	testutil.Eventually(t, 10*time.Second, "a second of audio both ways", func() bool {
		return c.heardA.Count() >= 50 && c.heardB.Count() >= 50
	})
	t.Logf("call connected %s via %q; audio flowing", c.first.Path, c.first.Via)
	return c
}

// failedOver checks what follows a path's death at `at`: audio flows
// again both ways on a path of kind path via via, the call never ended,
// and a chat message sent right after the loss arrives once. It returns
// the longest silence each side heard.
func (c *failoverCall) failedOver(t *testing.T, at time.Time, path, via string) []time.Duration {
	ctx := context.Background()
	id, err := c.alice.Send(ctx, "bob", "sent while the path fails")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []*peer{c.alice, c.bob} {
		other := map[string]string{"alice": "bob", "bob": "alice"}[p.name]
		p.ev.Wait(t, 20*time.Second, p.name+": audio via "+via, func(s stamped) bool {
			st, ok := s.ev.(client.StatsEvent)
			return ok && s.at.After(at) && st.With == other && st.Path == path && st.Via == via
		})
	}
	na, nb := c.heardA.Count(), c.heardB.Count()
	testutil.Eventually(t, 10*time.Second, "another second of audio both ways", func() bool {
		return c.heardA.Count() >= na+50 && c.heardB.Count() >= nb+50
	})
	now := time.Now()
	ga, gb := c.heardA.LongestGap(at.Add(-time.Second), now), c.heardB.LongestGap(at.Add(-time.Second), now)
	t.Logf("after the loss: alice heard %s, bob heard %s", ga, gb)
	for who, g := range map[string]audiogap.Gap{"alice": ga, "bob": gb} {
		if g.Longest >= maxAudioGap {
			t.Errorf("%s heard nothing for %s (from %s after the loss), want under %s",
				who, g.Longest.Round(time.Millisecond), g.From.Sub(at).Round(time.Millisecond), maxAudioGap)
		}
	}
	// The chat message: delivered, shown once.
	c.alice.wait(t, 20*time.Second, "receipt for the message", func(e client.Event) bool {
		d, ok := e.(client.DeliveredEvent)
		return ok && d.ID == id
	})
	isMsg := func(e client.Event) bool { m, ok := e.(client.MessageEvent); return ok && m.ID == id }
	c.bob.wait(t, 5*time.Second, "the message", isMsg)
	if n := c.bob.ev.Count(func(s stamped) bool { return isMsg(s.ev) }); n != 1 {
		t.Errorf("bob was shown the message %d times, want once", n)
	}
	for _, p := range []*peer{c.alice, c.bob} {
		if n := p.ev.Count(func(s stamped) bool {
			ce, ok := s.ev.(client.CallEvent)
			return ok && ce.State == client.CallEnded
		}); n != 0 {
			t.Errorf("%s: the call ended", p.name)
		}
	}
	return []time.Duration{ga.Longest, gb.Longest}
}

// startSupernodeProcess runs `parley supernode` inside host, as an
// operator would on a public machine: QUIC on UDP 443, TURN on 3478 and
// TLS on TCP 443, signed in to w's server.
func startSupernodeProcess(t *testing.T, w *world, host *natlab.Host, bin, name string) *exec.Cmd {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cmd, err := host.Run(ctx, bin, "supernode", "--server", w.sigURL, "--name", name,
		"--profile", t.TempDir(), "--public-addr", host.Addrs[0].String(),
		"--listen-quic", "0.0.0.0:443", "--listen-turn-udp", "0.0.0.0:3478",
		"--listen-turn-tcp", "0.0.0.0:3478", "--listen-turn-tls", "0.0.0.0:443",
		"--status-addr", "", "--discover-nat=false", "--log-level", "warn")
	if err != nil {
		t.Fatal(err)
	}
	return cmd
}

// withSink gives a lab client's calls an audio sink.
func withSink(s client.AudioSink) peerOpts {
	return func(_ *natlab.Home, cfg *client.Config) {
		cfg.AudioSink = func(string) (client.AudioSink, error) { return s, nil }
	}
}

// fmtGaps renders gaps sorted, with their maximum.
func fmtGaps(gaps []time.Duration) string {
	s := slices.Clone(gaps)
	slices.Sort(s)
	parts := make([]string, len(s))
	for i, g := range s {
		parts[i] = g.Round(time.Millisecond).String()
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(parts, " ") + " (max " + s[len(s)-1].Round(time.Millisecond).String() + ")"
}
