package main

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
)

// chatSupernodeFlags let a desktop user opt in as a supernode, Skype style.
type chatSupernodeFlags struct {
	on                              bool
	quic, turnUDP, turnTCP, turnTLS string
	public                          string
	maxMbps                         float64
	allow                           prefixList
}

func addChatSupernodeFlags(fs *flag.FlagSet) *chatSupernodeFlags {
	f := &chatSupernodeFlags{}
	fs.BoolVar(&f.on, "supernode", false, "opt in: also offer this machine as a relay for others (the server promotes it only if it is reachable and fast enough)")
	fs.StringVar(&f.quic, "supernode-quic", "0.0.0.0:4433", "with --supernode: QUIC relay address (UDP; forward it on your router)")
	fs.StringVar(&f.turnUDP, "supernode-turn-udp", "0.0.0.0:3480", "with --supernode: TURN UDP address for browsers (\"off\" disables)")
	fs.StringVar(&f.turnTCP, "supernode-turn-tcp", "0.0.0.0:3480", "with --supernode: TURN TCP address (\"off\" disables)")
	fs.StringVar(&f.turnTLS, "supernode-turn-tls", "0.0.0.0:5349", "with --supernode: TURN TLS address (\"off\" disables)")
	fs.StringVar(&f.public, "supernode-public-addr", "", "with --supernode: the public IP others reach you at")
	fs.Float64Var(&f.maxMbps, "supernode-max-mbps", 10, "with --supernode: the most bandwidth you lend, both directions")
	fs.Var(&f.allow, "supernode-allow-peer", "with --supernode: prefix relaying may reach although private or loopback (tests and private networks only)")
	return f
}

// supernodeName is the name the opted-in supernode signs in under: a user
// of its own, derived from the person's name.
func supernodeName(user string) string {
	n := user
	if len(n) > proto.MaxNameLen-3 {
		n = n[:proto.MaxNameLen-3]
	}
	return n + "-sn"
}

// lockedWriter serialises whole writes (JSON lines from several goroutines).
type lockedWriter struct {
	mu sync.Mutex // guards w
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// startChatSupernode runs the opted-in supernode beside the chat client.
// Decisions are reported to out: as JSON events in --json mode, as text
// lines otherwise (nil: only logged, for the full-screen UI).
func startChatSupernode(ctx context.Context, f *chatSupernodeFlags, server string, key ed25519.PrivateKey, user string, log *slog.Logger, out io.Writer, asJSON bool) (func(), error) {
	cfg := SupernodeConfigFor(server, key, supernodeName(user), log, nil)
	cfg.Label = "opted in by " + user
	cfg.ListenQUIC, cfg.ListenTURNUDP, cfg.ListenTURNTCP, cfg.ListenTURNTLS = f.quic, f.turnUDP, f.turnTCP, f.turnTLS
	cfg.MaxRelayMbps = f.maxMbps
	cfg.AllowPeers = f.allow
	if f.public != "" {
		ip, err := parseIP(f.public)
		if err != nil {
			return nil, fmt.Errorf("--supernode-public-addr: %w", err)
		}
		cfg.PublicAddr = ip
	}
	cfg.OnDecision = func(d supernode.Decision) {
		switch {
		case out == nil:
		case asJSON:
			b, _ := json.Marshal(map[string]any{"event": "supernode", "name": cfg.Name, "state": d.State, "reason": d.Reason, "measured_mbps": round2(d.MeasuredMbps)})
			out.Write(append(b, '\n'))
		default:
			fmt.Fprintf(out, "supernode %s: %s\n", cfg.Name, d)
		}
	}
	sn, err := supernode.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("supernode: %w", err)
	}
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sn.Run(sctx); err != nil && sctx.Err() == nil {
			log.Error("supernode stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}

func parseIP(s string) (netip.Addr, error) {
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%q is not an IP address", s)
	}
	return ip, nil
}
