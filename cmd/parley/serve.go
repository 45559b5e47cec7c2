package main

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"

	"github.com/parley-voice/parley/signal"
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
'parley nat' reads). Everything runs in this one process on embedded defaults.`)
	listen := fs.String("listen", "127.0.0.1:8080", "HTTP/WebSocket address (port 0 picks one)")
	data := fs.String("data", defaultDataDir(), "directory for the name registry (empty: memory only)")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn, error")
	stunf := addSTUNFlags(fs)
	snf := addServeSupernodeFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := newLogger(*logLevel)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	stun, err := startSTUN(ctx, stunf, *listen, log, reg)
	if err != nil {
		return err
	}
	defer stun.close()
	srv, err := signal.New(signal.Config{
		Listen:     *listen,
		DataDir:    *data,
		ICEServers: stun.iceServers(),
		Supernodes: snf.signalConfig(),
		Web:        web.Handler(),
		Metrics:    promhttp.HandlerFor(reg, promhttp.HandlerOpts{}),
		Logger:     log,
	})
	if err != nil {
		return err
	}
	reg.MustRegister(srv.Collector(), srv.SupernodeCollector())
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		srv.Close()
		return fmt.Errorf("listen %s: %w", *listen, err)
	}
	fmt.Printf("Parley is running: open http://%s/ in a browser\n", ln.Addr())
	fmt.Printf("  chat client: go run ./cmd/parley chat --server http://%s --name NAME\n", ln.Addr())
	stun.printInfo(ln.Addr())
	ip, _ := netip.AddrFromSlice(ln.Addr().(*net.TCPAddr).IP)
	on, why, err := snf.builtinEnabled(ip.Unmap())
	if err != nil {
		ln.Close()
		srv.Close()
		return err
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ctx, ln) }()
	if !on {
		fmt.Printf("  built-in supernode: %s\n", why)
		return <-serveErr
	}
	stopSN, err := startBuiltinSupernode(ctx, snf, ln.Addr(), *data, log, reg, os.Stdout)
	if err != nil {
		srv.Close()
		<-serveErr
		return err
	}
	err = <-serveErr
	stopSN()
	return err
}
