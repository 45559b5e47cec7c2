package main

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The standalone supernode's default ports stay clear of a parley serve on
// the same machine (its STUN on UDP 3478 and 3479, its built-in supernode's
// TURN on UDP 3480 and QUIC on UDP 443, the page and TURN over TCP/TLS on TCP
// 443 and 80): both start with their defaults (TestSupernodeDefaultsBesideServe).
const (
	snDefaultQUIC    = "0.0.0.0:4433"
	snDefaultTURNUDP = "0.0.0.0:3481"
	snDefaultTURNTCP = "0.0.0.0:3478"
	snDefaultTURNTLS = "0.0.0.0:5349"
)

// runSupernode is `parley supernode`: the opt-in relay daemon.
func runSupernode(ctx context.Context, args []string) error {
	return runSupernodeTo(ctx, args, os.Stdout)
}

// prefixList is a repeatable netip.Prefix flag.
type prefixList []netip.Prefix

func (p *prefixList) String() string {
	s := make([]string, len(*p))
	for i, x := range *p {
		s[i] = x.String()
	}
	return strings.Join(s, ",")
}

func (p *prefixList) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		pre, err := netip.ParsePrefix(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("not a prefix (like 10.0.0.0/8): %q", f)
		}
		*p = append(*p, pre)
	}
	return nil
}

func runSupernodeTo(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("supernode", "--server URL --name NAME [flags]", `
Offers this machine as a Parley supernode: a relay for people whose NATs
keep them from reaching each other directly. It carries their encrypted
calls and chats (it cannot read them) over QUIC for Parley clients and over
TURN (UDP, TCP, TLS) for browsers.

The signaling server decides. It probes the advertised ports from an address
this machine has never contacted (so a NAT without a port forward fails),
checks that the endpoint holds this identity key, measures bandwidth, and
promotes it — or refuses, with a reason printed here and on the status page.
While promoted it sends heartbeats; when it stops, the server moves its users
to another supernode. Every decision is printed on stdout.

Behind a home router, forward the QUIC port (UDP) and the TURN ports to this
machine keeping the port numbers, and pass --public-addr.`)
	server := fs.String("server", "http://127.0.0.1:8080", "signaling server URL")
	name := fs.String("name", "", "the supernode's user name (lowercase letters, digits, - _ .); its id in tokens")
	label := fs.String("label", "", "free-form label for status pages")
	profile := fs.String("profile", "", "directory of the identity key (default: parley/NAME in the user config dir, ~/.config/parley/NAME on Linux)")
	quicAddr := fs.String("listen-quic", snDefaultQUIC, "QUIC relay address, UDP (port 0 picks one); 443 reaches the most networks where no parley serve runs beside it")
	turnUDP := fs.String("listen-turn-udp", snDefaultTURNUDP, "TURN UDP address for browsers (\"off\" disables)")
	turnTCP := fs.String("listen-turn-tcp", snDefaultTURNTCP, "TURN TCP address for browsers (\"off\" disables)")
	turnTLS := fs.String("listen-turn-tls", snDefaultTURNTLS, "TURN TLS address for browsers and UDP-blocked clients; 443 reaches the most networks (\"off\" disables)")
	public := fs.String("public-addr", "", "the public IP others reach this machine at (default: the QUIC listen IP, or the one STUN sees)")
	maxSessions := fs.Int("max-sessions", 0, "most concurrent relay sessions (0: sized from --max-relay-mbps, 4 per 152 kbit/s voice call it carries)")
	maxMbps := fs.Float64("max-relay-mbps", 50, "relay budget: what the relay sends, Mbit/s on the wire (headers included); new calls are admitted while they fit")
	sessKbps := fs.Float64("max-session-kbps", 1000, "bandwidth budget of one session, kbit/s on the wire (a voice call is 152)")
	perUser := fs.Int("max-allocs-per-user", 8, "most concurrent sessions of one user")
	relayPorts := fs.String("relay-ports", "", "UDP port range MIN-MAX for relayed traffic, the range to open in a firewall (default: the kernel's ephemeral range)")
	var allow prefixList
	fs.Var(&allow, "allow-peer", "prefix relaying may reach although private/loopback (repeatable; tests and private networks only)")
	statusAddr := fs.String("status-addr", "127.0.0.1:8091", "status page, /status.json and /metrics (empty: none)")
	discover := fs.Bool("discover-nat", true, "find this machine's NAT with the server's STUN service and report it")
	logLevel := fs.String("log-level", "info", "log level on stderr: debug, info, warn, error")
	caFile := addCAFlag(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *name == "" {
		fs.Usage()
		return errors.New("--name is required")
	}
	*name = strings.ToLower(*name)
	if err := proto.ValidateRegisterName(*name); err != nil {
		return err
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	if *profile == "" {
		*profile = defaultProfile(*name)
	}
	tlsConf, err := clientTLS(*caFile)
	if err != nil {
		return err
	}
	key, err := client.LoadOrCreateIdentity(*profile)
	if err != nil {
		return err
	}
	cert, err := supernode.LoadOrCreateCert(*profile, *name) // a fingerprint that survives restarts
	if err != nil {
		return err
	}
	cfg := SupernodeConfigFor(*server, key, *name, log, out)
	cfg.TLS, cfg.Certificate = tlsConf, cert
	cfg.Label = *label
	cfg.ListenQUIC, cfg.ListenTURNUDP, cfg.ListenTURNTCP, cfg.ListenTURNTLS = *quicAddr, *turnUDP, *turnTCP, *turnTLS
	cfg.MaxSessions, cfg.MaxRelayMbps, cfg.MaxSessionKbps, cfg.MaxAllocationsPerUser = *maxSessions, *maxMbps, *sessKbps, *perUser
	cfg.AllowPeers = allow
	if cfg.RelayPorts, err = supernode.ParsePortRange(*relayPorts); err != nil {
		return err
	}
	if *public != "" {
		ip, err := netip.ParseAddr(*public)
		if err != nil {
			return fmt.Errorf("--public-addr %q is not an IP address", *public)
		}
		cfg.PublicAddr = ip
	}
	if *discover {
		if r := discoverNAT(ctx, *server, tlsConf, log); r != nil {
			cfg.NAT = r
			fmt.Fprintf(out, "parley supernode: NAT %s, public address %s\n", r.Type, r.PublicAddr)
		}
	}
	srv, err := supernode.New(cfg)
	if err != nil {
		return err
	}
	a := srv.Addrs()
	fmt.Fprintf(out, "parley supernode %s: QUIC %s, TURN udp %s tcp %s tls %s, public %s\n  certificate fingerprint %s\n",
		*name, a.QUIC, a.TURNUDP, a.TURNTCP, a.TURNTLS, srv.PublicAddr(), srv.Fingerprint())
	if *statusAddr != "" {
		stop, addr, err := serveStatus(srv, *statusAddr, log)
		if err != nil {
			srv.Close()
			return err
		}
		defer stop()
		fmt.Fprintf(out, "  status page http://%s/\n", addr)
	}
	return srv.Run(ctx)
}

// SupernodeConfigFor is the supernode Config of a daemon or of a desktop
// user who opts in (`parley chat --supernode`): signed in as name with the
// given identity, every decision printed to out (nil: not printed) and
// logged. The chat passes its own key and a name of its own for the
// supernode (e.g. NAME+"-sn", within proto.MaxNameLen): a supernode signs
// in as a user of its own. Listen addresses, limits and PublicAddr keep
// supernode.Config's defaults unless the caller sets them; a desktop user
// without CAP_NET_BIND_SERVICE sets ListenQUIC and ListenTURNTLS to a high
// port (e.g. 0.0.0.0:4433) and forwards it. Run it with supernode.New and
// Run(ctx) next to the chat client; Close stops it (the server is told
// it is draining).
func SupernodeConfigFor(server string, key ed25519.PrivateKey, name string, log *slog.Logger, out io.Writer) supernode.Config {
	return supernode.Config{
		Server: server,
		Key:    key,
		Name:   name,
		Logger: log,
		OnDecision: func(d supernode.Decision) {
			if out != nil {
				fmt.Fprintf(out, "parley supernode: %s\n", d)
			}
		},
	}
}

// discoverNAT runs the RFC 5780 tests against the server's STUN service;
// failures are logged, not fatal (the server's probe decides anyway).
func discoverNAT(ctx context.Context, server string, tlsConf *tls.Config, log *slog.Logger) *proto.NATReport {
	stunURL, err := fetchSTUN(ctx, server, tlsConf)
	if err != nil {
		log.Warn("supernode: no STUN service to learn the NAT from", "err", err)
		return nil
	}
	dctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := nat.Discover(dctx, nat.DiscoverConfig{Server: stunURL})
	if err != nil {
		log.Warn("supernode: NAT discovery", "err", err)
		return nil
	}
	return r
}

// serveStatus serves the status page, /status.json and /metrics.
func serveStatus(srv *supernode.Server, addr string, log *slog.Logger) (func(), string, error) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(srv.Collector(), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.Handle("/", srv.StatusHandler())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("status page: listen %s: %w", addr, err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Warn("supernode: status page", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		<-done
	}, ln.Addr().String(), nil
}
