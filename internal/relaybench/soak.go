package relaybench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// SoakConfig is a soak: one supernode on its default limits, filled with
// voice sessions up to its budget, with churn, for a while.
type SoakConfig struct {
	// Exe, RelayCPU, GenCPU and RelayProcs as in Config.
	Exe                          string
	RelayCPU, GenCPU, RelayProcs int
	// Duration of the soak. Zero means 5 minutes.
	Duration time.Duration
	// Churn is the share of sessions ended and replaced every 10 s. Zero
	// means 5%.
	Churn float64
	// Out receives the report; nil is stdout.
	Out io.Writer
}

// soakSample is one look at the relay.
type soakSample struct {
	at                      time.Duration
	sessions, goroutines    int
	rssKB                   int64
	sent, recv              int64
	shed, drops, bwRefusals int64
	busy                    int64
}

// Soak runs the soak and returns an error when the relay's goroutines or
// memory grew, or admitted voice lost packets.
func Soak(ctx context.Context, sc SoakConfig) error {
	cfg := Config{Exe: sc.Exe, RelayCPU: sc.RelayCPU, GenCPU: sc.GenCPU, RelayProcs: sc.RelayProcs, Out: sc.Out}
	if err := cfg.defaults(); err != nil {
		return err
	}
	if sc.Duration == 0 {
		sc.Duration = 5 * time.Minute
	}
	if sc.Churn == 0 {
		sc.Churn = 0.05
	}
	if err := pinSelf(cfg.GenCPU); err != nil {
		return err
	}
	l, err := newLab(ctx, cfg)
	if err != nil {
		return err
	}
	defer l.close()
	// Default limits: only the loopback peers (startSupernode) and one
	// user's quota (the generator's flows share a user) are opened.
	t, status, err := l.startSupernode(ctx, "soaksn", "--max-allocs-per-user", "100000")
	if err != nil {
		return err
	}
	defer t.stop()
	const pps = 50
	const most = 4000 // well past a 50 Mbit/s budget's ~330 voice sessions
	g, err := newGenerator(t, PathUDP, most, 160)
	if err != nil {
		return err
	}
	defer g.close()
	// Fill: voice sessions (50 packets/s each way) until the supernode
	// says its budget is full.
	n := 0
	for ; n < most; n++ {
		f := g.flows[n]
		f.both = true
		if err := g.setupFlow(ctx, f); err != nil {
			if strings.Contains(err.Error(), "486") {
				break
			}
			return fmt.Errorf("relaybench: soak set-up of session %d: %w", n, err)
		}
	}
	if n == 0 || n == most {
		return fmt.Errorf("relaybench: soak: %d sessions admitted; the budget never bound", n)
	}
	g.slots = g.slots[:n]
	fmt.Fprintf(cfg.Out, "parley bench relay --soak: a supernode on its default limits (50 Mbit/s) admitted %d voice sessions (50 packets/s of 160 B each way) before refusing; %s with %.0f%% of them replaced every 10 s\n\n",
		n, sc.Duration, sc.Churn*100)
	fmt.Fprintf(cfg.Out, "%8s %8s %10s %8s %10s %10s %7s %6s %7s %9s\n", "time", "sessions", "goroutines", "RSS MB", "sent", "received", "loss", "shed", "drops", "refused")
	g.measure.Store(0)
	sctx, cancel := context.WithTimeout(ctx, sc.Duration)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		g.paced(sctx, pps, sc.Duration)
	}()
	churn := time.NewTicker(10 * time.Second)
	defer churn.Stop()
	refill := time.NewTicker(time.Second)
	defer refill.Stop()
	sample := time.NewTicker(10 * time.Second)
	defer sample.Stop()
	start := time.Now()
	var samples []soakSample
	take := func() soakSample {
		s := soakSample{at: time.Since(start).Round(time.Second), rssKB: rssKB(t.pid), sent: g.sent.Load(), recv: g.recv.Load()}
		m := scrape(status)
		s.goroutines, s.sessions = int(m["go_goroutines"]), int(m["parley_supernode_sessions"])
		s.shed = int64(m[`parley_supernode_refusals_total{reason="shed_bandwidth"}`])
		s.drops = int64(m[`parley_supernode_refusals_total{reason="session_bandwidth"}`] + m[`parley_supernode_refusals_total{reason="slow_path_full"}`] + m[`parley_supernode_refusals_total{reason="send_buffer_full"}`])
		s.bwRefusals = int64(m[`parley_supernode_refusals_total{reason="bandwidth_full"}`] + m[`parley_supernode_refusals_total{reason="sessions_full"}`] +
			m[`parley_supernode_refusals_total{reason="busy"}`] + m[`parley_supernode_refusals_total{reason="user_over_quota"}`])
		s.busy = int64(m[`parley_supernode_refusals_total{reason="busy"}`])
		return s
	}
	show := func(s soakSample, prev soakSample) {
		loss := 0.0
		if d := s.sent - prev.sent; d > 0 {
			loss = max(0, 1-float64(s.recv-prev.recv)/float64(d))
		}
		fmt.Fprintf(cfg.Out, "%8s %8d %10d %8.1f %10d %10d %6.3f%% %6d %7d %9d\n", s.at, s.sessions, s.goroutines, float64(s.rssKB)/1024, s.sent, s.recv, loss*100, s.shed, s.drops, s.bwRefusals)
	}
	samples = append(samples, take())
	show(samples[0], soakSample{})
	rng := rand.New(rand.NewPCG(1, 2))
	var churned, refusedNew int
loop:
	for {
		select {
		case <-sctx.Done():
			break loop
		case <-sample.C:
			s := take()
			if len(samples)%3 == 0 {
				show(s, samples[len(samples)-3])
			}
			samples = append(samples, s)
		case <-churn.C:
			k := max(1, int(float64(n)*sc.Churn))
			for range k {
				slot := rng.IntN(n)
				old := g.slots[slot].Load()
				if old == nil {
					continue
				}
				g.remove(old)
				f := g.newFlow(slot)
				f.both = true
				if err := g.setupFlow(sctx, f); err != nil {
					refusedNew++ // full (or not handed out at 95%): the slot waits for the refill
					continue
				}
				churned++
			}
		case <-refill.C:
			for slot := range n { // slots a refusal left empty
				if g.slots[slot].Load() == nil {
					f := g.newFlow(slot)
					f.both = true
					if g.setupFlow(sctx, f) != nil {
						break
					}
					churned++
				}
			}
		}
	}
	wg.Wait()
	time.Sleep(time.Second)
	last := take()
	show(last, samples[len(samples)-1])
	samples = append(samples, last)
	return soakVerdict(cfg.Out, samples, churned, refusedNew)
}

// soakVerdict splits the soak after its first minute (warm-up and the
// fill) into halves and compares them: the most goroutines beyond one per
// session (pion's per-allocation reader) and the most memory. The load
// moves between 80 and 100% of the budget (the server stops handing out
// a supernode at 95% and again from 80%), so maxima, not single samples,
// are compared. Loss is judged over the whole soak.
func soakVerdict(w io.Writer, s []soakSample, churned, refused int) error {
	if len(s) < 9 {
		return errors.New("relaybench: soak too short to judge (needs 2 minutes)")
	}
	rest := s[6:]
	first, second := rest[:len(rest)/2], rest[len(rest)/2:]
	peak := func(xs []soakSample) (extra int, rss int64) {
		for _, x := range xs {
			extra, rss = max(extra, x.goroutines-x.sessions), max(rss, x.rssKB)
		}
		return
	}
	g1, r1 := peak(first)
	g2, r2 := peak(second)
	late := s[len(s)-1]
	loss := 0.0
	if late.sent > 0 {
		loss = max(0, 1-float64(late.recv)/float64(late.sent))
	}
	fmt.Fprintf(w, "\n%d sessions replaced (%d new sessions refused while full, %d as busy); loss %.4f%%; shed %d flows; dropped %d packets\n",
		churned, refused, late.busy, loss*100, late.shed, late.drops)
	fmt.Fprintf(w, "goroutines beyond one per session, most: %d then %d; RSS, most: %.1f then %.1f MB\n",
		g1, g2, float64(r1)/1024, float64(r2)/1024)
	var errs []string
	if g2 > g1+5 {
		errs = append(errs, "goroutines grew")
	}
	if float64(r2) > float64(r1)*1.10 {
		errs = append(errs, "memory grew more than 10%")
	}
	if loss > 0.001 {
		errs = append(errs, fmt.Sprintf("admitted voice lost %.3f%% of its packets", loss*100))
	}
	if late.shed > 0 || late.drops > 0 {
		errs = append(errs, "the supernode dropped admitted voice")
	}
	if len(errs) > 0 {
		return fmt.Errorf("relaybench: soak failed: %s", strings.Join(errs, "; "))
	}
	fmt.Fprintln(w, "soak passed: no growth in goroutines or memory, no loss of admitted voice")
	return nil
}

// scrape reads a Prometheus text page into name{labels} -> value.
func scrape(base string) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get(base + "/metrics") //nolint:noctx // loopback, bounded by the client's default transport
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}
