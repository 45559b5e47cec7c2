// Package relaybench is `parley bench relay`: it starts a relay pinned to
// one core — Parley's real supernode (promoted by a real signaling server
// in this process), Debian's coturn, or a batched UDP forwarder — and
// drives it from the other core with voice-like flows through each path
// (TURN UDP with ChannelData, TURN TCP and TLS, Parley's QUIC relay
// stream), measuring delivered packets, loss, one-way latency, the relay's
// CPU per packet and its memory per flow. It says when the generator, not
// the relay, was the limit.
//
// A flow is one allocation (one relayed call leg): its client and its peer
// each have their own loopback address (127.16.x.y and 127.80.x.y), spoken
// for by two wildcard sockets with IP_PKTINFO, so the generator sends and
// receives in batches while the relay sees thousands of distinct clients.
// Even flows send client -> peer, odd ones peer -> client; each packet
// carries its flow, sequence number and send time.
package relaybench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"
)

// Config says what to run. Zero values are documented.
type Config struct {
	// Exe is the parley binary the relays run as (`parley supernode`,
	// `parley bench forwarder`). Required.
	Exe string
	// RelayCPU and GenCPU are the cores for the relay (taskset) and for
	// this process's generator.
	RelayCPU, GenCPU int
	// RelayProcs is GOMAXPROCS of Go relays (the core stays one). Zero
	// means 1.
	RelayProcs int
	// Flows is the number of flows of the paced runs. Zero means 1000.
	Flows int
	// PPS is each flow's packet rate, Size its packets' size. Zero means
	// 50 and 160 (20 ms of 64 kbit/s Opus with RTP and SRTP).
	PPS  float64
	Size int
	// Duration is each run's measured window (after 2 s of warm-up). Zero
	// means 10 s.
	Duration time.Duration
	// Paths to measure on the Parley supernode. Nil means udp, quic, tcp, tls.
	Paths []string
	// Compare runs coturn and the batched forwarder too (UDP), and prints
	// the ratios.
	Compare bool
	// MaxRate adds the saturation runs (the generator sends as fast as it
	// can) for udp and quic.
	MaxRate bool
	// MaxRateFlows is the number of flows of the saturation runs. Zero
	// means 100.
	MaxRateFlows int
	// MemoryFlows adds a QUIC run with this many connections at MemoryPPS
	// each, for the memory per relayed connection. Zero skips it.
	MemoryFlows int
	MemoryPPS   float64
	// CoturnThreads is coturn's --relay-threads (zero: its default, one
	// per CPU it sees).
	CoturnThreads int
	// Out receives the report; Log progress. Nil: stdout; discard.
	Out io.Writer
	Log *slog.Logger
}

// Result is one run.
type Result struct {
	Relay, Path, Mode string
	Flows             int
	OfferedPPS        float64 // what the generator was asked to send
	SentPPS           float64 // what it sent (the measured window)
	DeliveredPPS      float64
	Loss              float64 // of everything sent, after a drain
	P50, P99, P999    time.Duration
	RelayCPU          float64       // cores
	CPUPerPacket      time.Duration // relay CPU per delivered packet
	PerCore           float64       // delivered packets per second per relay core
	RSSKB, BaseRSSKB  int64
	RSSPerFlowKB      float64
	GenCPU            float64
	Note              string
}

type plan struct {
	relay, path, mode string
	flows             int
	pps               float64
}

func (c *Config) defaults() error {
	if c.Exe == "" {
		return fmt.Errorf("relaybench: Config.Exe is required")
	}
	if c.Flows == 0 {
		c.Flows = 1000
	}
	if c.RelayProcs == 0 {
		c.RelayProcs = 1
	}
	if c.PPS == 0 {
		c.PPS = 50
	}
	if c.Size == 0 {
		c.Size = 160
	}
	if c.Size < 16 || c.Size > 1200 {
		return fmt.Errorf("relaybench: packet size %d outside 16–1200", c.Size)
	}
	if c.Duration == 0 {
		c.Duration = 10 * time.Second
	}
	if c.Paths == nil {
		c.Paths = []string{PathUDP, PathQUIC, PathTCP, PathTLS}
	}
	if c.MaxRateFlows == 0 {
		c.MaxRateFlows = 100
	}
	if c.MemoryPPS == 0 {
		c.MemoryPPS = 1
	}
	if c.Out == nil {
		c.Out = os.Stdout
	}
	if c.Log == nil {
		c.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

func (c *Config) plans() []plan {
	var ps []plan
	for _, p := range c.Paths {
		ps = append(ps, plan{"parley", p, "paced", c.Flows, c.PPS})
		if c.Compare && p == PathUDP {
			ps = append(ps, plan{"coturn", p, "paced", c.Flows, c.PPS}, plan{"forwarder", p, "paced", c.Flows, c.PPS})
		}
	}
	if c.MaxRate {
		for _, p := range c.Paths {
			if p != PathUDP && p != PathQUIC {
				continue
			}
			ps = append(ps, plan{"parley", p, "max", c.MaxRateFlows, 0})
			if c.Compare && p == PathUDP {
				ps = append(ps, plan{"coturn", p, "max", c.MaxRateFlows, 0}, plan{"forwarder", p, "max", c.MaxRateFlows, 0})
			}
		}
	}
	if c.MemoryFlows > 0 {
		ps = append(ps, plan{"parley", PathQUIC, "memory", c.MemoryFlows, c.MemoryPPS})
	}
	return ps
}

// Run runs every planned measurement and prints the report (and the
// ratios with Compare). It returns the results.
func Run(ctx context.Context, cfg Config) ([]Result, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := pinSelf(cfg.GenCPU); err != nil {
		return nil, err
	}
	l, err := newLab(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer l.close()
	fmt.Fprintf(cfg.Out, "parley bench relay: %d flows x %.0f pps x %d B (%.0f packets/s offered) for %s per run; relay on CPU %d (GOMAXPROCS=%d), generator on CPU %d\n\n",
		cfg.Flows, cfg.PPS, cfg.Size, float64(cfg.Flows)*cfg.PPS, cfg.Duration, cfg.RelayCPU, cfg.RelayProcs, cfg.GenCPU)
	printHeader(cfg.Out)
	var results []Result
	for _, p := range cfg.plans() {
		if ctx.Err() != nil {
			return results, ctx.Err()
		}
		cfg.Log.Info("relaybench: run", "relay", p.relay, "path", p.path, "mode", p.mode, "flows", p.flows)
		r, err := l.run(ctx, p)
		if err != nil {
			r = Result{Relay: p.relay, Path: p.path, Mode: p.mode, Flows: p.flows, Note: "failed: " + err.Error()}
		}
		printResult(cfg.Out, r)
		results = append(results, r)
	}
	if cfg.Compare {
		printRatios(cfg.Out, results)
	}
	return results, nil
}

// warmUp is sent before the window: allocations settle, caches warm.
const warmUp = 2 * time.Second

func (l *lab) start(ctx context.Context, p plan) (*target, error) {
	switch p.relay {
	case "coturn":
		return l.startCoturn(ctx)
	case "forwarder":
		return l.startForwarder(ctx, p.flows)
	}
	return l.startParley(ctx, p.flows)
}

// run measures one plan on a fresh relay.
func (l *lab) run(ctx context.Context, p plan) (Result, error) {
	r := Result{Relay: p.relay, Path: p.path, Mode: p.mode, Flows: p.flows}
	t, err := l.start(ctx, p)
	if err != nil {
		return r, err
	}
	defer t.stop()
	time.Sleep(500 * time.Millisecond) // idle: the baseline
	r.BaseRSSKB = rssKB(t.pid)
	g, err := newGenerator(t, p.path, p.flows, l.cfg.Size)
	if err != nil {
		return r, err
	}
	defer g.close()
	if err := g.setup(ctx); err != nil {
		return r, fmt.Errorf("set-up: %w", err)
	}
	total := warmUp + l.cfg.Duration
	done := make(chan struct{})
	go func() {
		defer close(done)
		if p.mode == "max" {
			g.flat(ctx, total)
		} else {
			g.paced(ctx, p.pps, total)
		}
	}()
	select {
	case <-time.After(warmUp):
	case <-ctx.Done():
		<-done
		return r, ctx.Err()
	}
	g.measure.Store(g.now())
	cpu0, _ := cpuTime(t.pid)
	gen0, _ := cpuTime(os.Getpid())
	sent0, recv0, t0 := g.sent.Load(), g.recv.Load(), time.Now()
	<-done
	cpu1, _ := cpuTime(t.pid)
	gen1, _ := cpuTime(os.Getpid())
	sent1, recv1, el := g.sent.Load(), g.recv.Load(), time.Since(t0).Seconds()
	r.RSSKB = rssKB(t.pid)
	time.Sleep(500 * time.Millisecond) // stragglers
	if s := g.sent.Load(); s > 0 {
		r.Loss = max(0, 1-float64(g.recv.Load())/float64(s))
	}
	r.OfferedPPS = p.pps * float64(p.flows)
	r.SentPPS = float64(sent1-sent0) / el
	r.DeliveredPPS = float64(recv1-recv0) / el
	r.RelayCPU = (cpu1 - cpu0).Seconds() / el
	r.GenCPU = (gen1 - gen0).Seconds() / el
	if recv1 > recv0 {
		r.CPUPerPacket = time.Duration(float64(cpu1-cpu0) / float64(recv1-recv0))
	}
	if r.RelayCPU > 0 {
		r.PerCore = r.DeliveredPPS / r.RelayCPU
	}
	q := g.hist.quantiles(0.5, 0.99, 0.999)
	r.P50, r.P99, r.P999 = q[0], q[1], q[2]
	if p.flows > 0 {
		r.RSSPerFlowKB = float64(r.RSSKB-r.BaseRSSKB) / float64(p.flows)
	}
	var notes []string
	switch {
	case p.mode == "max" && r.RelayCPU < 0.85:
		notes = append(notes, fmt.Sprintf("the generator is the limit: the relay used only %.0f%% of its core", r.RelayCPU*100))
	case p.mode != "max" && r.SentPPS < 0.97*r.OfferedPPS:
		notes = append(notes, fmt.Sprintf("the generator is the limit: it sent %.0f of %.0f packets/s", r.SentPPS, r.OfferedPPS))
	}
	if lag := time.Duration(float64(g.lagged.Load()) / max(r.OfferedPPS, 1) * 1e9); p.mode != "max" && lag > 20*time.Millisecond {
		notes = append(notes, fmt.Sprintf("the generator fell up to %s behind its schedule", lag.Round(time.Millisecond)))
	}
	if r.GenCPU > 0.95 && p.mode != "max" {
		notes = append(notes, fmt.Sprintf("generator at %.0f%% of its core", r.GenCPU*100))
	}
	r.Note = strings.Join(notes, "; ")
	return r, nil
}

func printHeader(w io.Writer) {
	fmt.Fprintf(w, "%-9s %-4s %-6s %6s %9s %9s %7s %7s %7s %7s %6s %6s %7s %6s %7s  %s\n",
		"relay", "path", "mode", "flows", "sent/s", "deliv/s", "loss", "p50ms", "p99ms", "p99.9ms", "CPU", "µs/pkt", "pkt/s/core", "RSSMB", "KB/flow", "note")
}

func printResult(w io.Writer, r Result) {
	if r.DeliveredPPS == 0 && r.Note != "" {
		fmt.Fprintf(w, "%-9s %-4s %-6s %6d  %s\n", r.Relay, r.Path, r.Mode, r.Flows, r.Note)
		return
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	fmt.Fprintf(w, "%-9s %-4s %-6s %6d %9.0f %9.0f %6.2f%% %7.2f %7.2f %7.2f %5.0f%% %6.1f %10.0f %6.1f %7.1f  %s\n",
		r.Relay, r.Path, r.Mode, r.Flows, r.SentPPS, r.DeliveredPPS, r.Loss*100, ms(r.P50), ms(r.P99), ms(r.P999),
		r.RelayCPU*100, float64(r.CPUPerPacket)/1e3, r.PerCore, float64(r.RSSKB)/1024, r.RSSPerFlowKB, r.Note)
}

// printRatios prints what the targets compare.
func printRatios(w io.Writer, rs []Result) {
	find := func(relay, path, mode string) *Result {
		for i := range rs {
			if rs[i].Relay == relay && rs[i].Path == path && rs[i].Mode == mode && rs[i].DeliveredPPS > 0 {
				return &rs[i]
			}
		}
		return nil
	}
	fmt.Fprintf(w, "\nratios\n")
	line := func(what string, v float64, target string, ok bool) {
		mark := "ok"
		if !ok {
			mark = "MISSED"
		}
		fmt.Fprintf(w, "  %-62s %7.2f  (target %s) %s\n", what, v, target, mark)
	}
	pu, cu, fu := find("parley", PathUDP, "paced"), find("coturn", PathUDP, "paced"), find("forwarder", PathUDP, "paced")
	if pu != nil && cu != nil {
		v := float64(pu.CPUPerPacket) / float64(cu.CPUPerPacket)
		line("TURN UDP CPU per packet, parley / coturn (paced)", v, "<= 0.67", v <= 0.67)
		line("TURN UDP p99 latency, parley / coturn (paced)", float64(pu.P99)/float64(cu.P99), "<= 1", pu.P99 <= cu.P99)
	}
	if pu != nil && fu != nil {
		line("TURN UDP CPU per packet, parley / forwarder (paced)", float64(pu.CPUPerPacket)/float64(fu.CPUPerPacket), "info", true)
	}
	pm, cm, fm := find("parley", PathUDP, "max"), find("coturn", PathUDP, "max"), find("forwarder", PathUDP, "max")
	if pm != nil && cm != nil {
		v := pm.PerCore / cm.PerCore
		line("TURN UDP delivered packets per core at saturation, parley / coturn", v, ">= 1.5", v >= 1.5)
	}
	if pm != nil && fm != nil {
		v := float64(pm.CPUPerPacket) / float64(fm.CPUPerPacket)
		line("TURN UDP CPU per packet at max rate, parley / forwarder", v, "<= 1.5", v <= 1.5)
	}
	if qm := find("parley", PathQUIC, "max"); qm != nil && fm != nil {
		v := float64(qm.CPUPerPacket) / float64(fm.CPUPerPacket)
		line("QUIC CPU per packet at max rate, parley / forwarder", v, "<= 1.5", v <= 1.5)
	}
	if q := find("parley", PathQUIC, "paced"); q != nil {
		us := float64(q.CPUPerPacket) / 1e3
		line("QUIC CPU µs per packet (paced)", us, "<= 12", us <= 12)
		line("QUIC p99 one-way ms (paced)", float64(q.P99)/1e6, "< 5", q.P99 < 5*time.Millisecond)
		line("QUIC loss % (paced)", q.Loss*100, "0", q.Loss == 0)
	}
	if pu != nil {
		line("TURN UDP loss % (paced)", pu.Loss*100, "0", pu.Loss == 0)
	}
	if m := find("parley", PathQUIC, "memory"); m != nil {
		line(fmt.Sprintf("QUIC memory per relayed connection at %d, KB", m.Flows), m.RSSPerFlowKB, "<= 40", m.RSSPerFlowKB <= 40)
	}
}
