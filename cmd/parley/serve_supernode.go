package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/prometheus/client_golang/prometheus"
)

// serveSupernodeFlags are `parley serve`'s supernode flags: how the server
// promotes volunteers, and its own built-in supernode role.
type serveSupernodeFlags struct {
	mode                            string
	name                            string
	quic, turnUDP, turnTCP, turnTLS string
	minMbps                         float64
	minUptime                       time.Duration
	allow                           prefixList
}

func addServeSupernodeFlags(fs *flag.FlagSet) *serveSupernodeFlags {
	f := &serveSupernodeFlags{}
	fs.StringVar(&f.mode, "supernode", "auto", "built-in supernode (relay) role: auto (on when --listen is a public IP), on, off")
	fs.StringVar(&f.name, "supernode-name", "serve-relay", "user name of the built-in supernode")
	fs.StringVar(&f.quic, "supernode-quic", ":443", "built-in supernode's QUIC relay port (UDP), on the --listen IP unless an IP is given")
	fs.StringVar(&f.turnUDP, "supernode-turn-udp", ":3480", "built-in supernode's TURN UDP port for browsers")
	fs.StringVar(&f.turnTCP, "supernode-turn-tcp", ":3480", "built-in supernode's TURN TCP port for browsers")
	fs.StringVar(&f.turnTLS, "supernode-turn-tls", ":5349", "built-in supernode's TURN TLS port")
	fs.Float64Var(&f.minMbps, "promote-min-mbps", 2, "least measured bandwidth for promoting a supernode")
	fs.DurationVar(&f.minUptime, "promote-min-uptime", 0, "how long a candidate must be signed in before promotion")
	fs.Var(&f.allow, "supernode-allow", "prefix supernodes may advertise and relay to although private or loopback (repeatable; private deployments and tests only)")
	return f
}

// signalConfig is the promotion policy for signal.Config.
func (f *serveSupernodeFlags) signalConfig() signal.SupernodeConfig {
	return signal.SupernodeConfig{MinMbps: f.minMbps, MinUptime: f.minUptime, AllowAddrs: f.allow}
}

// builtinEnabled decides the built-in role: "auto" turns it on only where it
// can serve anyone, on a public address.
func (f *serveSupernodeFlags) builtinEnabled(listen netip.Addr) (bool, string, error) {
	switch f.mode {
	case "on":
		return true, "", nil
	case "off":
		return false, "off (--supernode off)", nil
	case "auto":
		if listen.IsValid() && listen.IsGlobalUnicast() && !listen.IsPrivate() {
			return true, "", nil
		}
		return false, fmt.Sprintf("off: %s is not a public address, so a relay here could serve no one (--supernode on to force)", listen), nil
	}
	return false, "", fmt.Errorf("--supernode must be auto, on or off, not %q", f.mode)
}

// onIP puts an address given as ":port" on ip.
func onIP(addr string, ip netip.Addr) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host != "" {
		return addr
	}
	if !ip.IsValid() || ip.IsUnspecified() {
		return addr
	}
	return net.JoinHostPort(ip.String(), port)
}

// startBuiltinSupernode runs the server's own supernode next to it: it
// signs in to this server like any volunteer and is promoted on the same
// proof. It returns a function that stops it.
func startBuiltinSupernode(ctx context.Context, f *serveSupernodeFlags, httpAddr net.Addr, dataDir string, log *slog.Logger, reg *prometheus.Registry, out io.Writer) (func(), error) {
	tcp := httpAddr.(*net.TCPAddr)
	ip, _ := netip.AddrFromSlice(tcp.IP)
	ip = ip.Unmap()
	server := "ws://" + httpAddr.String() + "/ws"
	if ip.IsUnspecified() {
		server = fmt.Sprintf("ws://127.0.0.1:%d/ws", tcp.Port)
	}
	var key []byte
	if dataDir != "" {
		k, err := client.LoadOrCreateIdentity(filepath.Join(dataDir, "supernode"))
		if err != nil {
			return nil, err
		}
		key = k
	} else {
		k, err := client.LoadOrCreateIdentity(filepath.Join(os.TempDir(), fmt.Sprintf("parley-serve-relay-%d", os.Getpid())))
		if err != nil {
			return nil, err
		}
		key = k
	}
	cfg := SupernodeConfigFor(server, key, f.name, log, out)
	cfg.Label = "built into parley serve"
	cfg.ListenQUIC = onIP(f.quic, ip)
	cfg.ListenTURNUDP = onIP(f.turnUDP, ip)
	cfg.ListenTURNTCP = onIP(f.turnTCP, ip)
	cfg.ListenTURNTLS = onIP(f.turnTLS, ip)
	cfg.AllowPeers = f.allow
	if !ip.IsUnspecified() {
		cfg.PublicAddr = ip
	}
	sn, err := supernode.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("built-in supernode: %w", err)
	}
	reg.MustRegister(sn.Collector())
	a := sn.Addrs()
	fmt.Fprintf(out, "  built-in supernode %s: QUIC %s, TURN udp %s tcp %s tls %s\n", f.name, a.QUIC, a.TURNUDP, a.TURNTCP, a.TURNTLS)
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := sn.Run(sctx); err != nil && sctx.Err() == nil {
			log.Error("built-in supernode stopped", "err", err)
		}
	}()
	return func() { cancel(); <-done }, nil
}
