package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/audiogap"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/pion/webrtc/v4"
)

// runBenchFailover is `parley bench failover`: relayed calls on loopback
// whose supernode is SIGKILLed mid-call.
func runBenchFailover(ctx context.Context, args []string) error {
	fs := newFlagSet("bench failover", "[flags]", `
Measures failover on this machine, on loopback only: a signaling server in
this process, two supernodes as child processes of this binary (on
127.0.0.2 and 127.0.0.3), and two clients that may only relay. Each run
places a call, lets audio flow for a second, SIGKILLs the supernode that
carries it (its packets just stop, as when a volunteer's machine dies) and
measures the longest silence each side hears until audio flows through the
other supernode. Also times the relayed call set-up.`)
	runs := fs.Int("runs", 5, "failovers to time (each with fresh supernodes and clients)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *runs < 1 || *runs > 100 {
		return errors.New("--runs must be 1–100")
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	srv, url, err := startBenchServer(sctx, signal.SupernodeConfig{AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeTimeout: 2 * time.Second, Heartbeat: time.Second, RetryAfter: time.Hour})
	if err != nil {
		return err
	}

	var setups, gaps []time.Duration
	for i := range *runs {
		setup, g, err := benchFailoverRun(sctx, exe, url, srv, i)
		if err != nil {
			return fmt.Errorf("run %d: %w", i+1, err)
		}
		setups = append(setups, setup)
		gaps = append(gaps, g...)
	}
	fmt.Fprintf(os.Stdout, "parley bench failover: loopback, %d runs (two supernode processes, relay-only clients)\n\n", *runs)
	fmt.Fprintf(os.Stdout, "%-44s %9s %9s %9s\n", "", "p50", "p90", "max")
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"relayed call → connected", setups},
		{"supernode SIGKILLed: longest audio gap", gaps},
	} {
		p := percentiles(row.d)
		fmt.Fprintf(os.Stdout, "%-44s %9s %9s %9s\n", row.name, fmtMs(p[0]), fmtMs(p[1]), fmtMs(p[2]))
	}
	return nil
}

// benchFailoverRun is one run: fresh supernodes and clients, a relayed
// call, the carrying supernode SIGKILLed. It returns the set-up time and
// the longest gap each side heard.
func benchFailoverRun(ctx context.Context, exe, url string, srv *signal.Server, i int) (time.Duration, []time.Duration, error) {
	procs := map[string]*exec.Cmd{}
	defer func() {
		for _, p := range procs {
			p.Process.Kill()
			p.Wait()
		}
	}()
	for j, ip := range []string{"127.0.0.2", "127.0.0.3"} {
		name := fmt.Sprintf("bsn%d-%d", i, j)
		dir, err := os.MkdirTemp("", "parley-bench-sn")
		if err != nil {
			return 0, nil, err
		}
		defer os.RemoveAll(dir)
		a := ip + ":0"
		cmd := exec.CommandContext(ctx, exe, "supernode", "--server", url, "--name", name, "--profile", dir,
			"--public-addr", ip, "--listen-quic", a, "--listen-turn-udp", a, "--listen-turn-tcp", a, "--listen-turn-tls", a,
			"--allow-peer", "127.0.0.0/8", "--status-addr", "", "--discover-nat=false", "--log-level", "error")
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			return 0, nil, err
		}
		procs[name] = cmd
	}
	deadline := time.Now().Add(30 * time.Second)
	for promoted := 0; promoted < 2; {
		if time.Now().After(deadline) {
			return 0, nil, errors.New("the supernodes were not promoted within 30 s")
		}
		time.Sleep(50 * time.Millisecond)
		promoted = 0
		for _, sn := range srv.Supernodes() {
			if procs[sn.ID] != nil && sn.State == proto.SupernodePromoted {
				promoted++
			}
		}
	}
	heardA, heardB := &audiogap.Recorder{}, &audiogap.Recorder{}
	mk := func(name string, answer bool, heard *audiogap.Recorder) (*benchClient, error) {
		return startBenchClient(ctx, client.Config{Server: url, Name: name, AutoAnswer: answer,
			ICETransportPolicy: webrtc.ICETransportPolicyRelay, Relay: client.RelayConfig{AlwaysWarm: true},
			AudioSink: func(string) (client.AudioSink, error) { return heard, nil }})
	}
	a, err := mk(fmt.Sprintf("bfa%d", i), false, heardA)
	if err != nil {
		return 0, nil, err
	}
	defer a.stop()
	b, err := mk(fmt.Sprintf("bfb%d", i), true, heardB)
	if err != nil {
		return 0, nil, err
	}
	defer b.stop()
	// Relays warm on both sides, and the callee online for the caller
	// (one wait per client: events are read once).
	if _, err := b.waitFor(func(e client.Event) bool { r, ok := e.(client.RelayEvent); return ok && r.Warm }); err != nil {
		return 0, nil, fmt.Errorf("callee's relay warm-up: %w", err)
	}
	warm, online := false, false
	if _, err := a.waitFor(func(e client.Event) bool {
		switch e := e.(type) {
		case client.RelayEvent:
			warm = warm || e.Warm
		case client.PresenceEvent:
			online = online || e.Name == b.c.Name() && e.Online()
		}
		return warm && online
	}); err != nil {
		return 0, nil, fmt.Errorf("caller's relay warm-up (%v) and the callee online (%v): %w", warm, online, err)
	}
	t0 := time.Now()
	if err := a.c.Call(ctx, b.c.Name()); err != nil {
		return 0, nil, err
	}
	e, err := a.waitFor(func(e client.Event) bool {
		c, ok := e.(client.CallEvent)
		return ok && (c.State == client.CallConnected || c.State == client.CallEnded)
	})
	if err != nil {
		return 0, nil, fmt.Errorf("call: %w", err)
	}
	setup := time.Since(t0)
	ce := e.(client.CallEvent)
	if ce.State != client.CallConnected || ce.Path != "relay" || procs[ce.Via] == nil {
		return 0, nil, fmt.Errorf("call %+v, want connected through one of the supernodes", ce)
	}
	if err := waitCount(10*time.Second, 50, heardA, heardB); err != nil {
		return 0, nil, fmt.Errorf("audio before the kill: %w", err)
	}
	killed := time.Now()
	if err := procs[ce.Via].Process.Signal(syscall.SIGKILL); err != nil {
		return 0, nil, err
	}
	na, nb := heardA.Count(), heardB.Count()
	if err := waitCount(20*time.Second, 50, &offset{heardA, na}, &offset{heardB, nb}); err != nil {
		return 0, nil, fmt.Errorf("audio after killing %s: %w", ce.Via, err)
	}
	now := time.Now()
	ga, gb := heardA.LongestGap(killed.Add(-time.Second), now), heardB.LongestGap(killed.Add(-time.Second), now)
	a.c.Hangup(ctx, b.c.Name())
	return setup, []time.Duration{ga.Longest, gb.Longest}, nil
}

// counter is anything with a packet count.
type counter interface{ Count() int }

// offset counts what arrived after base.
type offset struct {
	r    *audiogap.Recorder
	base int
}

func (o *offset) Count() int { return o.r.Count() - o.base }

// waitCount waits until every counter reaches n.
func waitCount(d time.Duration, n int, cs ...counter) error {
	deadline := time.Now().Add(d)
	for {
		ok := true
		var got []string
		for _, c := range cs {
			got = append(got, fmt.Sprint(c.Count()))
			ok = ok && c.Count() >= n
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s packets of %d after %s", strings.Join(got, " and "), n, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
