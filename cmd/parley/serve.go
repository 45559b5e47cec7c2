package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/parley-voice/parley/internal/portmux"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/web"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func defaultDataDir() string {
	if d := os.Getenv("XDG_DATA_HOME"); d != "" {
		return filepath.Join(d, "parley", "server")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "share", "parley", "server")
	}
	return "parley-data"
}

func runServe(ctx context.Context, args []string) error {
	fs := newFlagSet("serve", "[flags]", `
Runs the signaling server: identity, presence, call set-up and chat fallback
over WebSocket at /ws, the browser call page at /, /healthz and /metrics,
and a STUN service (UDP, RFC 5389/5780) whose stun: URL clients receive as
their ICE server (also listed unauthenticated at /api/ice, which
'parley nat' reads). Everything runs in this one process on embedded defaults.

On the Internet: --listen :443 with --acme DOMAIN (or --tls-cert/--tls-key)
serves HTTPS, and TCP 443 also carries TURN over TLS and TCP for the
built-in supernode, so people behind firewalls that pass only 443 can call.
Open TCP 443 (and 80 for the redirect), UDP 443 (QUIC relay for native
clients), UDP 3478-3480 (STUN, TURN) and the relayed traffic's ports
(--supernode-relay-ports 49152-65535).`)
	listen := fs.String("listen", "127.0.0.1:8080", "TCP address of the web page, WebSocket and (on a public address) TURN over TCP/TLS; :443 on a server (port 0 picks one)")
	data := fs.String("data", defaultDataDir(), "directory for the name registry, offline mail, ACME certificates and the built-in supernode's keys (empty: memory only)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	mailboxMessages := fs.Int("mailbox-messages", 200, "most sealed messages waiting on the server for one offline user (senders hold the rest and send them later)")
	var allowOrigins stringList
	fs.Var(&allowOrigins, "allow-origin", "extra browser origin (https://host[:port]) allowed to open the WebSocket, e.g. a TLS proxy's (repeatable)")
	stunf := addSTUNFlags(fs)
	snf := addServeSupernodeFlags(fs)
	tf := addTLSFlags(fs)
	nf := addStateFlags(fs) // serve_nats.go
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	if *data != "" {
		unlock, err := lockDataDir(*data) // one server per data directory
		if err != nil {
			return err
		}
		defer unlock()
	}
	st, err := tf.setup(*data, log)
	if err != nil {
		return err
	}
	if stunf.publicHost == "" && st != nil && net.ParseIP(st.names[0]) == nil {
		stunf.publicHost = st.names[0] // people reach us by the certificate's name
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	tcp := ln.Addr().(*net.TCPAddr)
	listenIP, _ := netip.AddrFromSlice(tcp.IP)
	listenIP = listenIP.Unmap()
	public := publicIP(ctx, listenIP, stunf.publicHost, log)
	builtin, why, err := snf.builtinEnabled(public)
	if err != nil {
		ln.Close()
		return err
	}
	var relayCert *tls.Certificate
	if builtin {
		if relayCert, err = builtinCert(*data, snf.name); err != nil {
			ln.Close()
			return err
		}
	}
	muxCfg := portmux.Config{Logger: log}
	if st != nil || relayCert != nil {
		p := &certPicker{ca: st, relay: relayCert}
		muxCfg.TLS = &tls.Config{GetCertificate: p.GetCertificate, NextProtos: portmux.NextProtos, MinVersion: tls.VersionTLS12}
	}
	mux := portmux.New(ln, muxCfg)
	registerMuxMetrics(reg, mux)

	stun, err := startSTUN(ctx, stunf, *listen, public, log, reg)
	if err != nil {
		ln.Close()
		return err
	}
	defer stun.close()
	var hosts []string
	if stunf.publicHost != "" {
		hosts = append(hosts, stunf.publicHost)
	}
	if st != nil {
		hosts = append(hosts, st.names...)
	}
	status := &statusSource{started: time.Now()} // /status and /status.json (serve_status.go)
	cfg := signal.Config{
		Listen:         *listen,
		DataDir:        *data,
		ICEServers:     stun.iceServers(),
		Supernodes:     snf.signalConfig(),
		Web:            withStatus(web.Handler(), status),
		Metrics:        promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		AllowedOrigins: allowOrigins,
		Offline:        signal.OfflineLimits{MaxMessages: *mailboxMessages},
		PublicHosts:    hosts,
		Logger:         log,
	}
	if err := nf.config(&cfg); err != nil {
		ln.Close()
		return err
	}
	fmt.Println("  " + nf.describe(*data))
	srv, err := signal.New(cfg)
	if err != nil {
		ln.Close()
		return err
	}
	reg.MustRegister(srv.Collector(), srv.SupernodeCollector())
	status.srv.Store(srv)

	// The page and WebSocket: HTTPS when configured, and plain HTTP on the
	// same port then only redirects.
	web := mux.Listener(portmux.HTTP)
	var stops []func()
	if st != nil {
		web = mux.Listener(portmux.HTTPS)
		stops = append(stops, serveHTTP(mux.Listener(portmux.HTTP), st.httpHandler(tcp.Port), log))
		ra, err := tf.redirectAddr(ln.Addr(), true)
		if err != nil {
			srv.Close()
			ln.Close()
			return err
		}
		if ra != "" {
			if rl, err := net.Listen("tcp", ra); err != nil {
				log.Warn("HTTP redirect not served (HTTPS works without it)", "addr", ra, "err", err)
			} else {
				stops = append(stops, serveHTTP(rl, st.httpHandler(tcp.Port), log))
				fmt.Printf("  http://%s redirects to HTTPS\n", rl.Addr())
			}
		}
	} else if _, err := tf.redirectAddr(ln.Addr(), false); err != nil {
		srv.Close()
		ln.Close()
		return err
	}
	defer func() {
		for _, stop := range stops {
			stop()
		}
	}()

	muxDone := make(chan error, 1)
	go func() { muxDone <- mux.Run(ctx) }()
	defer func() {
		mux.Close()
		if err := <-muxDone; err != nil {
			log.Warn("port multiplexer", "err", err)
		}
	}()
	stun.printInfo(printServing(os.Stdout, ln.Addr(), stunf.publicHost, st != nil))
	fmt.Print(st.caNote(tf.certFile))

	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, web) }()
	if !builtin {
		fmt.Printf("  built-in supernode: %s\n", why)
		return <-serveErr
	}
	opts := builtinOptions{
		public: public, listenIP: listenIP, httpAddr: ln.Addr(), tls: st != nil,
		cert: relayCert, turnTLS: mux.Listener(portmux.TURNS),
	}
	if st == nil {
		// Without HTTPS browsers have no use for TURN over TLS, and TURN
		// over plain TCP is what the port offers them. With HTTPS, TLS is
		// the one they get: firewalls that inspect 443 pass TLS only.
		opts.turnTCP = mux.Listener(portmux.TURN)
	}
	if st != nil && stunf.publicHost != "" && st.covers(stunf.publicHost) && net.ParseIP(stunf.publicHost) == nil {
		opts.tlsName = stunf.publicHost // browsers get turns:NAME:443
	}
	stopSN, err := startBuiltinSupernode(ctx, snf, opts, *data, log, reg, os.Stdout)
	if err != nil {
		srv.Close()
		<-serveErr
		return err
	}
	err = <-serveErr
	stopSN()
	return err
}

// printServing tells the operator (w: stdout) the URL people open, and
// returns it.
func printServing(w io.Writer, addr net.Addr, publicHost string, https bool) string {
	tcp := addr.(*net.TCPAddr)
	scheme, defPort := "http", 80
	if https {
		scheme, defPort = "https", 443
	}
	host := publicHost
	if host == "" {
		host = tcp.IP.String()
		if tcp.IP.IsUnspecified() {
			host = "127.0.0.1"
		}
	}
	hp := net.JoinHostPort(host, strconv.Itoa(tcp.Port))
	if tcp.Port == defPort {
		hp = host
		if ip, err := netip.ParseAddr(host); err == nil && ip.Is6() {
			hp = "[" + host + "]"
		}
	}
	url := scheme + "://" + hp
	fmt.Fprintf(w, "Parley is running: open %s/ in a browser\n", url)
	fmt.Fprintf(w, "  chat client: %s chat --server %s --name NAME\n", self(), url)
	if !https && !isLocalHost(host) {
		// Browsers grant WebCrypto (the identity key) and the microphone
		// only to a secure context: http://localhost, or HTTPS.
		fmt.Fprintf(w, "  note: browsers on other computers can sign in only over HTTPS: add --tls-cert FILE --tls-key FILE or --acme DOMAIN (README: Deploy on the Internet)\n")
	}
	return url
}

// isLocalHost reports whether host names this computer only (a browser's
// secure context includes http:// to these).
func isLocalHost(host string) bool {
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// publicIP is the address people reach this server at: the --listen IP
// when it is a specific one; else --public-host's address; else the first
// public address of this machine's interfaces.
func publicIP(ctx context.Context, listen netip.Addr, publicHost string, log *slog.Logger) netip.Addr {
	if listen.IsValid() && !listen.IsUnspecified() {
		return listen
	}
	if publicHost != "" {
		ip, err := resolveIP(ctx, publicHost)
		if err == nil {
			return ip
		}
		log.Warn("cannot resolve --public-host; guessing this machine's public address from its interfaces", "host", publicHost, "err", err)
	}
	if h := guessHost(netip.IPv4Unspecified()); h != "" {
		ip, _ := netip.ParseAddr(h)
		return ip
	}
	return listen
}

// builtinCert is the built-in supernode's certificate, kept in the data
// directory so its pinned fingerprint survives restarts.
func builtinCert(dataDir, name string) (*tls.Certificate, error) {
	if dataDir == "" {
		return supernode.SelfSignedCert(name)
	}
	return supernode.LoadOrCreateCert(filepath.Join(dataDir, "supernode"), name)
}

// serveHTTP serves h on ln until the returned stop is called.
func serveHTTP(ln net.Listener, h http.Handler, log *slog.Logger) (stop func()) {
	hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := hs.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			log.Warn("http redirect", "err", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		hs.Shutdown(ctx)
		<-done
	}
}

// registerMuxMetrics exports the shared port's counters.
func registerMuxMetrics(reg prometheus.Registerer, m *portmux.Mux) {
	conns := prometheus.NewDesc("parley_port_connections_total", "Connections on the shared TCP port handed on, by protocol.", []string{"protocol"}, nil)
	drops := prometheus.NewDesc("parley_port_dropped_total", "Connections on the shared TCP port closed before any protocol, by reason.", []string{"reason"}, nil)
	reg.MustRegister(collectorFunc{descs: []*prometheus.Desc{conns, drops}, collect: func(ch chan<- prometheus.Metric) {
		s := m.Stats()
		for k := portmux.HTTP; k <= portmux.TURNS; k++ {
			ch <- prometheus.MustNewConstMetric(conns, prometheus.CounterValue, float64(s.Accepted[k]), k.String())
		}
		for reason, v := range map[string]int64{"refused": s.Refused, "timeout": s.Timeouts, "tls_failed": s.TLSFail, "overload": s.Overload, "acme_check": s.ACME} {
			ch <- prometheus.MustNewConstMetric(drops, prometheus.CounterValue, float64(v), reason)
		}
	}})
}

// collectorFunc is a prometheus.Collector made of a function.
type collectorFunc struct {
	descs   []*prometheus.Desc
	collect func(chan<- prometheus.Metric)
}

func (c collectorFunc) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}
func (c collectorFunc) Collect(ch chan<- prometheus.Metric) { c.collect(ch) }

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return fmt.Sprint(*l) }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
