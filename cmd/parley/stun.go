package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/prometheus/client_golang/prometheus"
)

// stunFlags are the flags of `parley serve` for its embedded STUN service
// (nat.Server: RFC 5389 Binding with RFC 5780 behaviour discovery).
type stunFlags struct {
	addr, alt, publicHost string
	off                   bool
}

func addSTUNFlags(fs *flag.FlagSet) *stunFlags {
	f := &stunFlags{}
	fs.StringVar(&f.addr, "stun", "", "STUN service UDP address IP:PORT (default: the --listen IP, port 3478; port 0 when --listen has port 0)")
	fs.StringVar(&f.alt, "stun-alt", "", "RFC 5780 alternate address: IP, IP:PORT or :PORT. A second IP enables change-IP tests; the default, the same IP with port+1, offers change-port only")
	fs.StringVar(&f.publicHost, "public-host", "", "host name or IP clients reach this server at, used in the stun: URLs handed to clients (default: the STUN IP; required in practice when it is a wildcard or private)")
	fs.BoolVar(&f.off, "no-stun", false, "do not run the STUN service (clients get no ICE servers from this server)")
	return f
}

// stunPlan is what the flags resolve to: the server's sockets and the
// host clients are told to use.
type stunPlan struct {
	cfg      nat.ServerConfig
	urlHost  string // host part of the stun: URL; empty: decide after listening
	wildcard bool   // the primary IP is 0.0.0.0 or ::
}

// planSTUN turns the flags and the signaling listen address into a STUN
// server config. Rules (documented in the flag help):
//   - --stun empty: the IP of --listen (resolved if it is a name; 0.0.0.0
//     when it has no host) and port 3478, or port 0 when --listen's port is
//     0, so test servers never collide on 3478.
//   - --stun-alt empty: the same IP and the primary port + 1 (change-port
//     only, RFC 5780 section 4.1 with one address); with an IP, change-IP
//     too. Port 0 in either picks free ports.
//   - --public-host wins for the URL host; otherwise the primary IP when it
//     is specific.
func planSTUN(ctx context.Context, f *stunFlags, listen string) (*stunPlan, error) {
	lhost, lport, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("--listen %q: %w", listen, err)
	}
	var primary netip.AddrPort
	if f.addr == "" {
		ip, err := resolveIP(ctx, lhost)
		if err != nil {
			return nil, fmt.Errorf("STUN address from --listen: %w", err)
		}
		port := uint16(nat.DefaultSTUNPort)
		if lport == "0" {
			port = 0
		}
		primary = netip.AddrPortFrom(ip, port)
	} else {
		primary, err = parseAddrPort(ctx, f.addr, "--stun")
		if err != nil {
			return nil, err
		}
	}
	var alt netip.AddrPort
	if f.alt == "" {
		p := primary.Port()
		if p != 0 {
			p++
			if p == 0 {
				return nil, fmt.Errorf("--stun port %d leaves no room for the alternate port; set --stun-alt", primary.Port())
			}
		}
		alt = netip.AddrPortFrom(netip.Addr{}, p)
	} else {
		alt, err = parseAlt(ctx, f.alt, primary)
		if err != nil {
			return nil, err
		}
	}
	p := &stunPlan{
		cfg:      nat.ServerConfig{Primary: primary, Alternate: alt},
		urlHost:  f.publicHost,
		wildcard: primary.Addr().IsUnspecified(),
	}
	if p.wildcard && alt.Addr().IsValid() && alt.Addr() != primary.Addr() {
		return nil, fmt.Errorf("--stun-alt with a second IP needs a specific --stun IP, not %s", primary.Addr())
	}
	if p.urlHost == "" && !p.wildcard {
		p.urlHost = primary.Addr().String()
	}
	return p, nil
}

// resolveIP turns a listen host into one IP: "" is 0.0.0.0, a name is
// looked up (first IPv4, else first address).
func resolveIP(ctx context.Context, host string) (netip.Addr, error) {
	if host == "" {
		return netip.IPv4Unspecified(), nil
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return ip.Unmap(), nil
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return netip.Addr{}, fmt.Errorf("resolve %q: %v", host, err)
	}
	for _, ip := range ips {
		if ip.Unmap().Is4() {
			return ip.Unmap(), nil
		}
	}
	return ips[0], nil
}

// parseAddrPort parses HOST:PORT with HOST an IP or a name.
func parseAddrPort(ctx context.Context, s, flagName string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: want IP:PORT: %w", flagName, s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s %q: bad port: %w", flagName, s, err)
	}
	ip, err := resolveIP(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%s: %w", flagName, err)
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

// parseAlt parses --stun-alt: "IP" (port: primary+1), "IP:PORT" or ":PORT".
func parseAlt(ctx context.Context, s string, primary netip.AddrPort) (netip.AddrPort, error) {
	if ip, err := netip.ParseAddr(s); err == nil {
		p := primary.Port()
		if p != 0 {
			p++
		}
		return netip.AddrPortFrom(ip.Unmap(), p), nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--stun-alt %q: want IP, IP:PORT or :PORT: %w", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--stun-alt %q: bad port: %w", s, err)
	}
	if host == "" {
		return netip.AddrPortFrom(netip.Addr{}, uint16(n)), nil
	}
	ip, err := resolveIP(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("--stun-alt: %w", err)
	}
	return netip.AddrPortFrom(ip, uint16(n)), nil
}

// stunService is the running STUN server of `parley serve`.
type stunService struct {
	srv  *nat.Server
	urls []string // stun: URLs handed to clients
	done chan error
}

// startSTUN opens the STUN sockets, registers their counters and starts
// serving. A nil service (and nil error) means --no-stun. public, when
// valid, is the address clients are told to use: an IP needs no DNS
// lookup, and clients inside networks without working DNS still find it.
func startSTUN(ctx context.Context, f *stunFlags, listen string, public netip.Addr, log *slog.Logger, reg prometheus.Registerer) (*stunService, error) {
	if f.off {
		return nil, nil
	}
	plan, err := planSTUN(ctx, f, listen)
	if err != nil {
		return nil, err
	}
	if public.IsValid() && !public.IsUnspecified() && f.addr == "" {
		plan.urlHost = public.String()
	}
	plan.cfg.Logger = log
	srv, err := nat.NewServer(plan.cfg)
	if errors.Is(err, syscall.EADDRINUSE) {
		return nil, fmt.Errorf("STUN service: %w (another parley serve on this machine? give this one its own --stun IP:PORT, or --no-stun)", err)
	}
	if err != nil {
		return nil, fmt.Errorf("STUN service: %w", err)
	}
	addrs := srv.Addrs()
	host := plan.urlHost
	if host == "" {
		host = guessHost(addrs.Primary.Addr())
		log.Warn("STUN: listening on a wildcard address; telling clients to use "+host+" (set --public-host to the name or IP clients reach)", "stun", addrs.Primary)
	}
	s := &stunService{srv: srv, done: make(chan error, 1)}
	if host != "" {
		s.urls = []string{stunURL(host, addrs.Primary.Port())}
	}
	if reg != nil {
		registerSTUNMetrics(reg, srv)
	}
	go func() {
		err := srv.Run(ctx)
		if err != nil && !errors.Is(err, nat.ErrClosed) {
			log.Error("STUN service stopped", "err", err)
		}
		s.done <- err
	}()
	log.Info("STUN service", "primary", addrs.Primary, "change_port", addrs.ChangePort, "change_ip", addrs.ChangeIP, "urls", s.urls)
	return s, nil
}

// close stops the server and waits for Run.
func (s *stunService) close() error {
	if s == nil {
		return nil
	}
	cerr := s.srv.Close()
	err := <-s.done
	if err != nil && !errors.Is(err, nat.ErrClosed) && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("STUN service: %w", err)
	}
	return cerr
}

// iceServers is the signal.Config.ICEServers function: the same stun: URLs
// for everyone (TURN credentials, when relays exist, are per user).
func (s *stunService) iceServers() func(string) []proto.ICEServer {
	if s == nil || len(s.urls) == 0 {
		return nil
	}
	urls := s.urls
	return func(string) []proto.ICEServer {
		return []proto.ICEServer{{URLs: append([]string(nil), urls...)}}
	}
}

// stunURL formats an RFC 7064 stun: URI; IPv6 literals get brackets.
func stunURL(host string, port uint16) string {
	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.String()
		if ip.Is6() {
			host = "[" + host + "]"
		}
	}
	return "stun:" + host + ":" + strconv.Itoa(int(port))
}

// guessHost picks an address of this machine to advertise when the STUN
// server listens on a wildcard: the first global unicast address of the
// family (listing interfaces sends no packet). Empty when there is none.
func guessHost(wild netip.Addr) string {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return ""
	}
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := pfx.Addr().Unmap()
		if ip.IsGlobalUnicast() && ip.Is4() == wild.Is4() {
			return ip.String()
		}
	}
	return ""
}

// registerSTUNMetrics exports the STUN server's counters.
func registerSTUNMetrics(reg prometheus.Registerer, srv *nat.Server) {
	counter := func(name, help string, v func(nat.ServerStats) uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "parley_stun_" + name, Help: help},
			func() float64 { return float64(v(srv.Stats())) })
	}
	reg.MustRegister(
		counter("requests_total", "STUN Binding requests received.", func(s nat.ServerStats) uint64 { return s.Requests }),
		counter("responses_total", "STUN success responses sent.", func(s nat.ServerStats) uint64 { return s.Responses }),
		counter("error_responses_total", "STUN error responses sent (400, 420).", func(s nat.ServerStats) uint64 { return s.ErrorResponses }),
		counter("bad_packets_total", "Datagrams to the STUN ports that were not valid STUN.", func(s nat.ServerStats) uint64 { return s.BadPackets }),
		counter("write_errors_total", "STUN responses the socket failed to send.", func(s nat.ServerStats) uint64 { return s.WriteErrors }),
	)
}

// printInfo tells the operator where STUN runs and how to check a NAT.
func (s *stunService) printInfo(serverURL string) {
	if s == nil {
		fmt.Println("  STUN: off (--no-stun)")
		return
	}
	a := s.srv.Addrs()
	alt := a.ChangePort.String()
	if a.ChangeIP.IsValid() {
		alt += ", " + a.ChangeIP.String() + ", " + a.ChangeBoth.String()
	}
	fmt.Printf("  STUN: udp %s (RFC 5780 alternates %s), clients use %v\n", a.Primary, alt, s.urls)
	fmt.Printf("  your NAT: %s nat --server %s\n", self(), serverURL)
}
