package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"

	"github.com/parley-voice/parley/internal/relaybench"
)

// runBenchRelay is `parley bench relay`.
func runBenchRelay(ctx context.Context, args []string) error {
	fs := newFlagSet("bench relay", "[flags]", `
Measures a relay at the wire's limit, on loopback: a real supernode (promoted
by a signaling server in this process) pinned to one core with GOMAXPROCS=1,
driven from the other core by voice-like flows (one allocation each; even
flows send client -> peer, odd ones peer -> client) through TURN UDP
(ChannelData), TURN TCP and TLS, and Parley's QUIC relay stream. Reports sent
and delivered packets/s, loss, one-way latency p50/p99/p99.9, the relay's CPU
per packet and per core, its memory and memory per flow, and says when the
generator rather than the relay was the limit.

--compare runs Debian's coturn (turnserver, in the foreground on loopback with
use-auth-secret; apt-get install coturn, with a policy-rc.d that keeps its
service from starting) and a batched UDP forwarder under the same generator,
and prints the ratios. A full run takes a few minutes.`)
	compare := fs.Bool("compare", false, "also measure coturn and a batched UDP forwarder, and print the ratios")
	flows := fs.Int("flows", 1000, "flows of the paced runs")
	pps := fs.Float64("pps", 50, "packets per second of each flow")
	size := fs.Int("size", 160, "packet size in bytes (160: 20 ms of 64 kbit/s Opus with RTP and SRTP)")
	dur := fs.Duration("duration", 0, "measured window of each run, after 2 s of warm-up (default 10s)")
	paths := fs.String("paths", "udp,quic,tcp,tls", "paths through the supernode: udp, quic, tcp, tls")
	maxRate := fs.Bool("max-rate", true, "add saturation runs (udp, quic): the generator sends as fast as it can")
	maxFlows := fs.Int("max-rate-flows", 100, "flows of the saturation runs")
	memFlows := fs.Int("memory-flows", 5000, "QUIC connections of the memory run (0: none)")
	memPPS := fs.Float64("memory-pps", 1, "packets per second of each memory-run flow")
	relayCPU := fs.Int("relay-cpu", 0, "CPU the relay is pinned to")
	relayProcs := fs.Int("relay-procs", 1, "GOMAXPROCS of the supernode and forwarder (the core stays one; 2+ lets the data plane's thread block in epoll_wait)")
	genCPU := fs.Int("gen-cpu", 1, "CPU the generator is pinned to")
	coturnThreads := fs.Int("coturn-threads", 0, "coturn's --relay-threads (0: its default)")
	soak := fs.Duration("soak", 0, "instead: a soak of this long — one supernode on its default limits filled with voice to its budget, 5% of sessions replaced every 10 s; fails on growth in goroutines or memory, or loss")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *soak > 0 {
		exe, err := os.Executable()
		if err != nil {
			return err
		}
		return relaybench.Soak(ctx, relaybench.SoakConfig{Exe: exe, RelayCPU: *relayCPU, GenCPU: *genCPU, RelayProcs: *relayProcs, Duration: *soak})
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *flows < 1 || *flows > 50000 || *memFlows < 0 || *memFlows > 50000 || *pps <= 0 || *pps > 10000 {
		return errors.New("--flows and --memory-flows must be 1–50000 (0 for no memory run) and --pps 0–10000")
	}
	var ps []string
	for _, p := range strings.Split(*paths, ",") {
		switch p = strings.TrimSpace(p); p {
		case relaybench.PathUDP, relaybench.PathQUIC, relaybench.PathTCP, relaybench.PathTLS:
			ps = append(ps, p)
		default:
			return fmt.Errorf("unknown path %q (udp, quic, tcp, tls)", p)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	_, err = relaybench.Run(ctx, relaybench.Config{
		Exe: exe, RelayCPU: *relayCPU, RelayProcs: *relayProcs, GenCPU: *genCPU, Flows: *flows, PPS: *pps, Size: *size, Duration: *dur,
		Paths: ps, Compare: *compare, MaxRate: *maxRate, MaxRateFlows: *maxFlows, MemoryFlows: *memFlows, MemoryPPS: *memPPS,
		CoturnThreads: *coturnThreads,
	})
	return err
}

// runBenchForwarder is `parley bench forwarder`, the batched UDP forwarder
// that `bench relay --compare` runs pinned to a core (not for people).
func runBenchForwarder(ctx context.Context, args []string) error {
	fs := newFlagSet("bench forwarder", "--listen ADDR --flows N", `
The batched UDP forwarder 'parley bench relay --compare' measures as the floor
(ChannelData in, payload out and back, recvmmsg/sendmmsg, nothing else). It
prints its addresses as one JSON line and forwards until interrupted.`)
	listen := fs.String("listen", "127.0.0.1:0", "listen address")
	flows := fs.Int("flows", 1000, "relay sockets to open")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ap, err := netip.ParseAddrPort(*listen)
	if err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	f, err := relaybench.NewForwarder(ap, *flows)
	if err != nil {
		return err
	}
	defer f.Close()
	info := relaybench.ForwarderInfo{Listen: f.Addr().String()}
	for _, r := range f.RelayAddrs() {
		info.Relays = append(info.Relays, r.String())
	}
	if err := json.NewEncoder(os.Stdout).Encode(info); err != nil {
		return err
	}
	return f.Run(ctx)
}
