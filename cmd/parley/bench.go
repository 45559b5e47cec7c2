package main

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/signal"
)

func runBench(ctx context.Context, args []string) error {
	if len(args) > 0 {
		switch args[0] {
		case "files":
			return runBenchFiles(ctx, args[1:]) // bench_files.go
		case "relay":
			return runBenchRelay(ctx, args[1:]) // bench_relay.go
		case "forwarder":
			return runBenchForwarder(ctx, args[1:]) // bench_relay.go (for bench relay --compare)
		case "failover":
			return runBenchFailover(ctx, args[1:]) // bench_failover.go
		case "signal":
			return runBenchSignal(ctx, args[1:]) // bench_signal.go
		}
	}
	fs := newFlagSet("bench", "[flags] | bench files [flags] | bench relay [flags] | bench failover [flags] | bench signal [flags]", `
Measures Parley on this machine, on loopback only: it starts a signaling
server and pairs of clients in this process, then times sign-in, call set-up
(to the chat data channel and to the first audio packet) and chat delivery
over the data channel. Prints medians and tails. "parley bench files" times
file transfer (see parley bench files -h); "parley bench relay" measures the
supernode as a relay (with --compare, beside coturn and a batched UDP
forwarder; see parley bench relay -h); "parley bench failover" a relayed
call's recovery when its supernode is killed (see parley bench failover -h);
"parley bench signal" loads the signaling server with N signed-in users
(sign-ins/s, memory per user, routing latency; see parley bench signal -h).`)
	calls := fs.Int("calls", 20, "call set-ups to time (each with a fresh pair of clients)")
	msgs := fs.Int("messages", 200, "chat messages to time over one data channel")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *calls < 1 || *calls > 1000 || *msgs < 1 || *msgs > 100000 {
		return errors.New("--calls must be 1–1000 and --messages 1–100000")
	}
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	_, url, err := startBenchServer(sctx, signal.SupernodeConfig{})
	if err != nil {
		return err
	}

	var signIn, toDC, toRTP, chatRTT []time.Duration
	for i := 0; i < *calls; i++ {
		a, b, err := benchPair(sctx, url, i, &signIn)
		if err != nil {
			return err
		}
		start := time.Now()
		if err := a.c.Call(ctx, b.c.Name()); err != nil {
			return err
		}
		var dcAt, rtpAt time.Duration
		if _, err := a.waitFor(func(e client.Event) bool {
			switch e := e.(type) {
			case client.LinkEvent:
				if e.State == "open" && dcAt == 0 {
					dcAt = time.Since(start)
				}
			case client.AudioEvent:
				if rtpAt == 0 {
					rtpAt = time.Since(start)
				}
			}
			return dcAt != 0 && rtpAt != 0
		}); err != nil {
			return fmt.Errorf("call %d: %w (data channel after %v, audio after %v)", i, err, dcAt, rtpAt)
		}
		toDC, toRTP = append(toDC, dcAt), append(toRTP, rtpAt)
		if i == 0 {
			for j := 0; j < *msgs; j++ {
				t0 := time.Now()
				id, err := a.c.Send(ctx, b.c.Name(), fmt.Sprintf("message %d", j))
				if err != nil {
					return err
				}
				if _, err := a.waitFor(func(e client.Event) bool { d, ok := e.(client.DeliveredEvent); return ok && d.ID == id }); err != nil {
					return fmt.Errorf("message %d: %w", j, err)
				}
				chatRTT = append(chatRTT, time.Since(t0))
			}
		}
		a.stop()
		b.stop()
	}
	fmt.Fprintf(os.Stdout, "parley bench: loopback, %d call set-ups, %d chat messages\n\n", *calls, *msgs)
	fmt.Fprintf(os.Stdout, "%-34s %9s %9s %9s\n", "", "p50", "p90", "max")
	for _, row := range []struct {
		name string
		d    []time.Duration
	}{
		{"sign-in (connect, auth, welcome)", signIn},
		{"call → data channel open", toDC},
		{"call → first RTP received", toRTP},
		{"chat send → delivered (direct)", chatRTT},
	} {
		p := percentiles(row.d)
		fmt.Fprintf(os.Stdout, "%-34s %9s %9s %9s\n", row.name, fmtMs(p[0]), fmtMs(p[1]), fmtMs(p[2]))
	}
	return nil
}

// startBenchServer runs a signaling server on loopback (with supernode
// policy sn) until ctx ends, and returns it and its WebSocket URL.
func startBenchServer(ctx context.Context, sn signal.SupernodeConfig) (*signal.Server, string, error) {
	srv, err := signal.New(signal.Config{RateLimit: 10000, RateBurst: 10000, Supernodes: sn})
	if err != nil {
		return nil, "", err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		srv.Close()
		return nil, "", err
	}
	go srv.Serve(ctx, ln)
	return srv, "ws://" + ln.Addr().String() + "/ws", nil
}

type benchClient struct {
	c      *client.Client
	events <-chan client.Event
	stop   func()
}

// waitFor reads events until match accepts one, for up to 10 s.
func (b *benchClient) waitFor(match func(client.Event) bool) (client.Event, error) {
	return b.waitForLong(10*time.Second, match)
}

// waitForLong is waitFor with another deadline (a big file takes longer).
func (b *benchClient) waitForLong(d time.Duration, match func(client.Event) bool) (client.Event, error) {
	timeout := time.After(d)
	for {
		select {
		case e, ok := <-b.events:
			if !ok {
				return nil, errors.New("client stopped")
			}
			if match(e) {
				return e, nil
			}
		case <-timeout:
			return nil, errors.New("timed out")
		}
	}
}

func benchPair(ctx context.Context, url string, i int, signIn *[]time.Duration) (*benchClient, *benchClient, error) {
	mk := func(name string, answer bool) (*benchClient, error) {
		start := time.Now()
		bc, err := startBenchClient(ctx, client.Config{Server: url, Name: name, AutoAnswer: answer})
		if err != nil {
			return nil, err
		}
		*signIn = append(*signIn, time.Since(start))
		return bc, nil
	}
	a, err := mk(fmt.Sprintf("bench-a%d", i), false)
	if err != nil {
		return nil, nil, err
	}
	b, err := mk(fmt.Sprintf("bench-b%d", i), true)
	if err != nil {
		a.stop()
		return nil, nil, err
	}
	if _, err := a.waitFor(func(e client.Event) bool {
		p, ok := e.(client.PresenceEvent)
		return ok && p.Name == b.c.Name() && p.Online()
	}); err != nil {
		a.stop()
		b.stop()
		return nil, nil, err
	}
	return a, b, nil
}

// startBenchClient runs a client with cfg (a fresh key, ICE on loopback)
// until ctx ends or its stop, and waits for it to sign in.
func startBenchClient(ctx context.Context, cfg client.Config) (*benchClient, error) {
	_, cfg.Key, _ = ed25519.GenerateKey(nil)
	cfg.SettingEngine = client.LoopbackOnly
	c, err := client.New(cfg)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { c.Run(cctx); close(done) }()
	bc := &benchClient{c: c, events: c.Events(), stop: func() {
		cancel()
		<-done
		for range c.Events() {
		}
	}}
	if _, err := bc.waitFor(func(e client.Event) bool { _, ok := e.(client.ReadyEvent); return ok }); err != nil {
		bc.stop()
		return nil, fmt.Errorf("sign-in: %w", err)
	}
	return bc, nil
}

// percentiles returns p50, p90 and max.
func percentiles(d []time.Duration) [3]time.Duration {
	if len(d) == 0 {
		return [3]time.Duration{}
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return [3]time.Duration{s[len(s)/2], s[len(s)*9/10], s[len(s)-1]}
}

func fmtMs(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d.Microseconds())/1000) }
