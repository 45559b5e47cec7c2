package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/prometheus/client_golang/prometheus"
)

// serveSupernodeFlags are `parley serve`'s supernode flags: how the server
// promotes volunteers, and its own built-in supernode role.
type serveSupernodeFlags struct {
	mode          string
	name          string
	quic, turnUDP string
	relayPorts    string
	minMbps       float64
	minUptime     time.Duration
	allow         prefixList
}

func addServeSupernodeFlags(fs *flag.FlagSet) *serveSupernodeFlags {
	f := &serveSupernodeFlags{}
	fs.StringVar(&f.mode, "supernode", "auto", "built-in supernode (relay) role: auto (on when --listen is a public IP), on, off")
	fs.StringVar(&f.name, "supernode-name", "serve-relay", "user name of the built-in supernode")
	fs.StringVar(&f.quic, "supernode-quic", ":443", "built-in supernode's QUIC relay port (UDP), on the --listen IP unless an IP is given")
	fs.StringVar(&f.turnUDP, "supernode-turn-udp", ":3480", "built-in supernode's TURN UDP port for browsers (TURN over TCP and TLS share --listen's port)")
	fs.Float64Var(&f.minMbps, "promote-min-mbps", 2, "least measured bandwidth for promoting a supernode")
	fs.DurationVar(&f.minUptime, "promote-min-uptime", 0, "how long a candidate must be signed in before promotion")
	fs.StringVar(&f.relayPorts, "supernode-relay-ports", "", "UDP port range MIN-MAX of the built-in supernode's relayed traffic, the range to open in a firewall (default: the kernel's ephemeral range)")
	fs.Var(&f.allow, "supernode-allow", "prefix supernodes may advertise and relay to although private or loopback (repeatable; private deployments and tests only)")
	return f
}

// signalConfig is the promotion policy for signal.Config.
func (f *serveSupernodeFlags) signalConfig() signal.SupernodeConfig {
	return signal.SupernodeConfig{MinMbps: f.minMbps, MinUptime: f.minUptime, AllowAddrs: f.allow}
}

// builtinEnabled decides the built-in role: "auto" turns it on only where it
// can serve anyone, on a public address (public: the address people reach
// this server at, see publicIP).
func (f *serveSupernodeFlags) builtinEnabled(public netip.Addr) (bool, string, error) {
	switch f.mode {
	case "on":
		return true, "", nil
	case "off":
		return false, "off (--supernode off)", nil
	case "auto":
		if public.IsValid() && public.IsGlobalUnicast() && !public.IsPrivate() {
			return true, "", nil
		}
		return false, fmt.Sprintf("off: %s is not a public address, so a relay here could serve no one (--supernode on to force)", public), nil
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

// builtinOptions is what `parley serve` hands its built-in supernode.
type builtinOptions struct {
	public   netip.Addr // advertised address
	listenIP netip.Addr // the --listen IP (maybe a wildcard): QUIC and TURN UDP bind there
	httpAddr net.Addr   // the shared TCP port: signaling, TURN TCP and TLS
	tls      bool       // the shared port serves HTTPS
	cert     *tls.Certificate
	// turnTCP and turnTLS are the shared port's TURN connections
	// (internal/portmux); TLS is terminated on turnTLS. A nil turnTCP
	// offers no TURN over plain TCP.
	turnTCP, turnTLS net.Listener
	tlsName          string // DNS name browsers verify TURN-TLS under; empty: none
}

// startBuiltinSupernode runs the server's own supernode next to it: it
// signs in to this server like any volunteer and is promoted on the same
// proof. Its TURN over TCP and TLS share the server's TCP port. It returns
// a function that stops it.
func startBuiltinSupernode(ctx context.Context, f *serveSupernodeFlags, o builtinOptions, dataDir string, log *slog.Logger, reg *prometheus.Registry, out io.Writer) (func(), error) {
	tcp := o.httpAddr.(*net.TCPAddr)
	scheme := "ws"
	if o.tls {
		scheme = "wss"
	}
	host := tcp.IP.String()
	if tcp.IP.IsUnspecified() {
		host = "127.0.0.1"
	}
	server := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(tcp.Port)) + "/ws"
	dir := filepath.Join(dataDir, "supernode")
	if dataDir == "" {
		dir = filepath.Join(os.TempDir(), fmt.Sprintf("parley-serve-relay-%d", os.Getpid()))
	}
	key, err := client.LoadOrCreateIdentity(dir)
	if err != nil {
		return nil, err
	}
	cfg := SupernodeConfigFor(server, key, f.name, log, out)
	cfg.Label = "built into parley serve"
	cfg.ListenQUIC = onIP(f.quic, o.listenIP)
	cfg.ListenTURNUDP = onIP(f.turnUDP, o.listenIP)
	cfg.TURNTCPListener, cfg.TURNTLSListener = o.turnTCP, o.turnTLS
	if o.turnTCP == nil {
		cfg.ListenTURNTCP = "off"
	}
	cfg.TURNTLSName = o.tlsName
	cfg.Certificate = o.cert
	cfg.AllowPeers = f.allow
	if cfg.RelayPorts, err = supernode.ParsePortRange(f.relayPorts); err != nil {
		return nil, err
	}
	cfg.PublicAddr = o.public
	if o.tls {
		// It signs in to this very process by address, under the name of
		// its own certificate: the shared port shows it that certificate
		// (certPicker), which it pins.
		cfg.TLS = proto.PinnedTLSConfig(supernode.Fingerprint(o.cert))
	}
	sn, err := supernode.New(cfg)
	if err != nil {
		return nil, fmt.Errorf("built-in supernode: %w", err)
	}
	reg.MustRegister(sn.Collector())
	a := sn.Addrs()
	shared := "TURN over TLS"
	if a.TURNTCP.IsValid() {
		shared += " and TCP"
	}
	fmt.Fprintf(out, "  built-in supernode %s: QUIC udp %s, TURN udp %s, %s on the shared port %s\n", f.name, a.QUIC, a.TURNUDP, shared, a.TURNTLS)
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
