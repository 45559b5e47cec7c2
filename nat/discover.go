package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/pion/stun/v4"

	"github.com/parley-voice/parley/proto"
)

// DefaultSTUNPort is the STUN port of RFC 5389 section 9, used when
// DiscoverConfig.Server has none.
const DefaultSTUNPort = 3478

// DiscoverConfig configures Discover and Probe. Zero values are documented
// next to each field.
type DiscoverConfig struct {
	// Server is the STUN server's primary address, "host:port", "host"
	// (port 3478) or a "stun:" URI (RFC 7064). Required.
	Server string

	// Conn is the socket to probe from. Nil opens one with Listener on
	// ListenAddr and closes it afterwards. A caller's Conn is not closed;
	// its read deadline is reset to none on return. Use a fresh socket:
	// earlier traffic opens NAT filters and skews the filtering tests.
	Conn net.PacketConn
	// ListenAddr is where to open the socket when Conn is nil. Empty
	// means any address and port of the server's family ("0.0.0.0:0").
	ListenAddr string
	// Listener opens the socket when Conn is nil. Nil means
	// SystemListener. When the socket is bound to a wildcard address,
	// Discover also uses it to test whether the mapped IP is one of ours
	// (it can bind to it), so give the Listener of the network (namespace,
	// vnet) that Conn lives in.
	Listener PacketListener

	// RTO is the first retransmission timeout; it doubles after each
	// transmission (RFC 5389 section 7.2.1). Zero means 100ms, shorter
	// than the RFC's 500ms because every probe here is one round trip to
	// a known server and a filtered answer is an expected outcome.
	RTO time.Duration
	// Timeout bounds one transaction, all retransmissions included: no
	// answer by then counts as "no answer". Zero means 1s.
	Timeout time.Duration
	// MaxTransmits bounds the transmissions per transaction (Rc of RFC
	// 5389 section 7.2.1). Zero means 7.
	MaxTransmits int

	// SkipHairpin skips the RFC 5780 section 4.5 hairpin test.
	SkipHairpin bool

	// Resolve looks up a server host name. Nil uses net.DefaultResolver.
	Resolve func(ctx context.Context, host string) ([]netip.Addr, error)

	// Logger receives DEBUG lines for each test. Nil discards.
	Logger *slog.Logger
}

// Result is everything Probe learned, including what it could not learn.
type Result struct {
	// Report is the summary sent to the signaling server.
	Report *proto.NATReport
	// Server is the resolved primary address; Other is the server's
	// OTHER-ADDRESS (zero when it sent none).
	Server, Other netip.AddrPort
	// ServerChangeIP and ServerChangePort tell which RFC 5780 changes the
	// server offered.
	ServerChangeIP, ServerChangePort bool
	// Notes explains each behaviour left unknown, in words.
	Notes []string
	// Elapsed is how long the probe took.
	Elapsed time.Duration
}

// Discover runs the RFC 5780 behaviour-discovery tests against the STUN
// server and returns the report. UDP being blocked is a result, not an
// error: the report then has UDPBlocked set. Errors are for bad
// configuration, resolution failures, socket failures and ctx.
func Discover(ctx context.Context, cfg DiscoverConfig) (*proto.NATReport, error) {
	r, err := Probe(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return r.Report, nil
}

// Probe is Discover with the details: what the server offered and notes on
// what stayed unknown.
//
// The order of the tests matters. Filtering tests (RFC 5780 section 4.4)
// run right after the first Binding, while the socket has talked to the
// primary address only; the mapping tests II and III (section 4.3) then
// send to the alternate IP, which would open an address-dependent filter
// and make a later filtering test wrongly pass.
func Probe(ctx context.Context, cfg DiscoverConfig) (*Result, error) {
	start := time.Now()
	p, err := newProber(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer p.close()

	res := &Result{Server: p.server, Report: &proto.NATReport{Type: proto.NATUnknown}}
	rep := res.Report
	defer func() { res.Elapsed = time.Since(start) }()
	note := func(format string, args ...any) {
		res.Notes = append(res.Notes, fmt.Sprintf(format, args...))
	}
	rep.LocalAddr = p.local.String()

	// Test I (RFC 5780 section 4.3 test I, RFC 5389 Binding).
	r1, from, ok, err := p.binding(ctx, p.server, 0)
	if err != nil {
		return nil, err
	}
	if !ok {
		rep.UDPBlocked = true
		rep.Type = proto.NATUDPBlocked
		note("no answer from %s over UDP after %s: UDP is blocked or the server is down", p.server, p.timeout)
		return res, nil
	}
	if !r1.success {
		return nil, fmt.Errorf("%w: %s answered a plain Binding with %d %s", ErrServerError, from, r1.code, r1.reason)
	}
	x1 := r1.mapped
	rep.PublicAddr = x1.String()
	noNAT := p.isLocal(x1)
	if noNAT && p.local.Addr().IsUnspecified() {
		rep.LocalAddr = x1.String()
	}
	p.log.Debug("test I", "mapped", x1, "other", r1.other, "origin", r1.origin, "no_nat", noNAT)

	other := r1.other
	res.Other = other
	canIP := other.IsValid() && other.Addr() != p.server.Addr()
	canPort := other.IsValid() && other.Port() != p.server.Port()
	switch {
	case !other.IsValid():
		note("server sent no OTHER-ADDRESS (no RFC 5780 support): mapping and filtering tests impossible")
	case canIP && other.Addr().Is4() != p.server.Addr().Is4():
		note("server's OTHER-ADDRESS %s is of another address family: ignored", other)
		canIP, canPort = false, false
	case !canIP && canPort:
		note("server has one IP (change-port only)")
	}
	res.ServerChangeIP, res.ServerChangePort = canIP, canPort

	// Filtering tests (RFC 5780 section 4.4).
	filtering, fnote, err := p.filtering(ctx, canIP, canPort, other)
	if err != nil {
		return nil, err
	}
	rep.Filtering = filtering
	if fnote != "" {
		note("%s", fnote)
	}

	// Mapping tests (RFC 5780 section 4.3).
	if noNAT {
		rep.Mapping = proto.BehaviorNone
		// No NAT and nothing filtered: "none" on both counts. A host
		// firewall that filters keeps its measured behaviour.
		if rep.Filtering == proto.BehaviorEndpointIndependent {
			rep.Filtering = proto.BehaviorNone
		}
	} else {
		mapping, mnote, err := p.mapping(ctx, x1, canIP, canPort, other)
		if err != nil {
			return nil, err
		}
		rep.Mapping = mapping
		if mnote != "" {
			note("%s", mnote)
		}
	}
	rep.Type = proto.ClassifyNAT(rep.Mapping, rep.Filtering)

	// Hairpin test (RFC 5780 section 4.5): send to our own mapped address
	// from the same socket and see whether it comes back.
	if !p.cfg.SkipHairpin {
		back, err := p.hairpin(ctx, x1)
		if err != nil {
			return nil, err
		}
		rep.Hairpin = "no"
		if back {
			rep.Hairpin = "yes"
		}
		p.log.Debug("hairpin test", "target", x1, "came_back", back)
	}
	if err := rep.Validate(); err != nil {
		return nil, fmt.Errorf("nat: discover produced an invalid report: %w", err)
	}
	return res, nil
}

// filtering runs RFC 5780 section 4.4 tests II and III.
func (p *prober) filtering(ctx context.Context, canIP, canPort bool, other netip.AddrPort) (proto.Behavior, string, error) {
	if !canPort && !canIP {
		return proto.BehaviorUnknown, "", nil
	}
	if canIP {
		// Test II: ask for the answer from IP2:P2.
		r, from, ok, err := p.binding(ctx, p.server, changeIPFlag|changePortFlag)
		if err != nil {
			return "", "", err
		}
		p.log.Debug("filtering test II", "answered", ok, "from", from)
		switch {
		case ok && r.success && from == other:
			return proto.BehaviorEndpointIndependent, "", nil
		case ok && !r.success:
			canIP = false // the server says it cannot; fall through to test III
		case ok:
			return proto.BehaviorUnknown, fmt.Sprintf("change-IP answer came from %s, not %s: server ignores CHANGE-REQUEST", from, other), nil
		}
	}
	if !canPort {
		return proto.BehaviorUnknown, "server cannot change port: filtering unknown", nil
	}
	// Test III: ask for the answer from IP1:P2.
	want := netip.AddrPortFrom(p.server.Addr(), other.Port())
	r, from, ok, err := p.binding(ctx, p.server, changePortFlag)
	if err != nil {
		return "", "", err
	}
	p.log.Debug("filtering test III", "answered", ok, "from", from)
	switch {
	case !ok:
		return proto.BehaviorAddressAndPortDependent, "", nil
	case !r.success:
		return proto.BehaviorUnknown, fmt.Sprintf("server refused change-port with %d %s: filtering unknown", r.code, r.reason), nil
	case from != want:
		return proto.BehaviorUnknown, fmt.Sprintf("change-port answer came from %s, not %s: server ignores CHANGE-REQUEST", from, want), nil
	case canIP:
		return proto.BehaviorAddressDependent, "", nil
	default:
		return proto.BehaviorUnknown, "answers from another port of the same IP pass, but without change-IP the filter may be endpoint-independent or address-dependent", nil
	}
}

// mapping runs RFC 5780 section 4.3 tests II and III.
func (p *prober) mapping(ctx context.Context, x1 netip.AddrPort, canIP, canPort bool, other netip.AddrPort) (proto.Behavior, string, error) {
	switch {
	case canIP:
		// Test II: to IP2:P1. Same mapping as test I -> independent.
		dst2 := netip.AddrPortFrom(other.Addr(), p.server.Port())
		r2, _, ok, err := p.binding(ctx, dst2, 0)
		if err != nil {
			return "", "", err
		}
		if !ok || !r2.success {
			return proto.BehaviorUnknown, fmt.Sprintf("no answer from alternate address %s: mapping unknown", dst2), nil
		}
		p.log.Debug("mapping test II", "dst", dst2, "mapped", r2.mapped)
		if r2.mapped == x1 {
			return proto.BehaviorEndpointIndependent, "", nil
		}
		// Test III: to IP2:P2. Same as test II -> depends on address only.
		r3, _, ok, err := p.binding(ctx, other, 0)
		if err != nil {
			return "", "", err
		}
		if !ok || !r3.success {
			return proto.BehaviorUnknown, fmt.Sprintf("no answer from alternate address %s: cannot tell address-dependent from address-and-port-dependent mapping", other), nil
		}
		p.log.Debug("mapping test III", "dst", other, "mapped", r3.mapped)
		if r3.mapped == r2.mapped {
			return proto.BehaviorAddressDependent, "", nil
		}
		return proto.BehaviorAddressAndPortDependent, "", nil
	case canPort:
		// One IP: only the port can change. A new mapping for a new port
		// proves port dependence; the same mapping leaves EIM and ADM apart.
		dst := netip.AddrPortFrom(p.server.Addr(), other.Port())
		r2, _, ok, err := p.binding(ctx, dst, 0)
		if err != nil {
			return "", "", err
		}
		if !ok || !r2.success {
			return proto.BehaviorUnknown, fmt.Sprintf("no answer from alternate port %s: mapping unknown", dst), nil
		}
		p.log.Debug("mapping test II (port only)", "dst", dst, "mapped", r2.mapped)
		if r2.mapped != x1 {
			return proto.BehaviorAddressAndPortDependent, "", nil
		}
		return proto.BehaviorUnknown, "mapping is kept across server ports, but without change-IP it may be endpoint-independent or address-dependent", nil
	}
	return proto.BehaviorUnknown, "", nil
}

// prober runs STUN transactions from one socket.
type prober struct {
	cfg       DiscoverConfig
	log       *slog.Logger
	conn      net.PacketConn
	ownConn   bool
	stopWatch func() bool
	server    netip.AddrPort
	local     netip.AddrPort
	rto       time.Duration
	timeout   time.Duration
	maxTx     int
	buf       []byte
	in, out   stun.Message
}

func newProber(ctx context.Context, cfg DiscoverConfig) (*prober, error) {
	p := &prober{cfg: cfg, log: cfg.Logger, rto: cfg.RTO, timeout: cfg.Timeout, maxTx: cfg.MaxTransmits}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	switch {
	case p.rto < 0 || p.timeout < 0 || p.maxTx < 0:
		return nil, fmt.Errorf("%w: negative RTO, Timeout or MaxTransmits", ErrBadConfig)
	}
	if p.rto == 0 {
		p.rto = 100 * time.Millisecond
	}
	if p.timeout == 0 {
		p.timeout = time.Second
	}
	if p.maxTx == 0 {
		p.maxTx = 7
	}
	srv, err := resolveServer(ctx, cfg.Server, cfg.Resolve)
	if err != nil {
		return nil, err
	}
	p.server = srv
	p.conn = cfg.Conn
	if p.conn == nil {
		ln := cfg.Listener
		if ln == nil {
			ln = SystemListener{}
		}
		addr := cfg.ListenAddr
		if addr == "" {
			addr = "0.0.0.0:0"
			if !srv.Addr().Is4() {
				addr = "[::]:0"
			}
		}
		c, err := ln.ListenPacket(network(srv.Addr()), addr)
		if err != nil {
			return nil, fmt.Errorf("nat: discover: listen on %s: %w", addr, err)
		}
		p.conn, p.ownConn = c, true
	}
	p.local = addrPortOf(p.conn.LocalAddr())
	if !p.local.IsValid() {
		p.close()
		return nil, fmt.Errorf("%w: socket has no IP address (%v)", ErrBadConfig, p.conn.LocalAddr())
	}
	// Cancelling ctx unblocks a pending read; transact re-checks ctx after
	// every deadline it sets, so the cancel cannot be overwritten.
	conn := p.conn
	p.stopWatch = context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Now()) })
	p.buf = make([]byte, maxDatagram+1)
	return p, nil
}

func (p *prober) close() {
	if p.stopWatch != nil {
		p.stopWatch()
	}
	if p.ownConn {
		_ = p.conn.Close()
	} else {
		_ = p.conn.SetReadDeadline(time.Time{})
	}
}

// isLocal reports whether a mapped address is our own socket address,
// meaning no NAT on the path (RFC 5780 section 4.3 test I). For a socket
// bound to a wildcard address it checks the port and whether the mapped IP
// is ours by binding a throwaway socket to it with the same Listener, which
// asks the socket's own network (namespace, vnet) rather than this
// process's view of the host. A host with net.ipv4.ip_nonlocal_bind set
// binds any IP and would make a port-preserving NAT look like no NAT.
func (p *prober) isLocal(mapped netip.AddrPort) bool {
	if mapped == p.local {
		return true
	}
	if !p.local.Addr().IsUnspecified() || mapped.Port() != p.local.Port() {
		return false
	}
	ln := p.cfg.Listener
	if ln == nil {
		ln = SystemListener{}
	}
	c, err := ln.ListenPacket(network(mapped.Addr()), netip.AddrPortFrom(mapped.Addr(), 0).String())
	if err != nil {
		p.log.Debug("mapped IP is not ours", "ip", mapped.Addr(), "err", err)
		return false
	}
	_ = c.Close()
	return true
}

// binding sends a Binding request with CHANGE-REQUEST flags (0 for none)
// to dst and waits for its response. ok is false when none came in time.
func (p *prober) binding(ctx context.Context, dst netip.AddrPort, change uint32) (resp bindingResponse, from netip.AddrPort, ok bool, err error) {
	tx := stun.NewTransactionID()
	encodeBindingRequest(&p.out, bindingRequest{tx: tx, change: change, hasChange: change != 0})
	pkt := append([]byte(nil), p.out.Raw...)
	ok, err = p.transact(ctx, pkt, dst, func(b []byte, src netip.AddrPort) bool {
		r, perr := parseBindingResponse(&p.in, b)
		if perr != nil || r.tx != tx {
			p.log.Debug("ignoring datagram", "from", src, "err", perr)
			return false
		}
		resp, from = r, src
		return true
	})
	return resp, from, ok, err
}

// hairpin sends a Binding request to target (our own mapped address) and
// reports whether that same request arrives back on our socket.
func (p *prober) hairpin(ctx context.Context, target netip.AddrPort) (bool, error) {
	tx := stun.NewTransactionID()
	encodeBindingRequest(&p.out, bindingRequest{tx: tx})
	pkt := append([]byte(nil), p.out.Raw...)
	return p.transact(ctx, pkt, target, func(b []byte, _ netip.AddrPort) bool {
		r, err := parseBindingRequest(&p.in, b)
		return err == nil && r.tx == tx
	})
}

// transact sends pkt to dst with RFC 5389 section 7.2.1 retransmissions
// (RTO, doubling, at most MaxTransmits sends, within Timeout) until accept
// takes a received datagram. It returns false when nothing was accepted in
// time, and an error only for socket failures or ctx.
func (p *prober) transact(ctx context.Context, pkt []byte, dst netip.AddrPort, accept func([]byte, netip.AddrPort) bool) (bool, error) {
	now := time.Now()
	end := now.Add(p.timeout)
	next := now
	rto := p.rto
	sent := 0
	to := udpAddr(dst)
	for {
		if err := ctx.Err(); err != nil {
			return false, err
		}
		now = time.Now()
		if !now.Before(end) {
			return false, nil
		}
		if sent < p.maxTx && !now.Before(next) {
			if _, err := p.conn.WriteTo(pkt, to); err != nil {
				if errors.Is(err, net.ErrClosed) {
					return false, fmt.Errorf("nat: send to %s: %w", dst, err)
				}
				// No route, filtered by a local firewall...: the same as
				// no answer, which the retransmissions will show.
				p.log.Debug("send failed", "dst", dst, "err", err)
			}
			sent++
			next = now.Add(rto)
			rto *= 2
		}
		deadline := end
		if sent < p.maxTx && next.Before(deadline) {
			deadline = next
		}
		if err := p.conn.SetReadDeadline(deadline); err != nil {
			return false, fmt.Errorf("nat: set read deadline: %w", err)
		}
		if err := ctx.Err(); err != nil {
			return false, err
		}
		n, from, err := p.conn.ReadFrom(p.buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return false, fmt.Errorf("nat: read: %w", err)
		}
		if n > maxDatagram {
			continue
		}
		if accept(p.buf[:n], addrPortOf(from)) {
			return true, nil
		}
	}
}

// resolveServer turns "host:port", "host" or "stun:host[:port]" into an
// address, preferring IPv4 (RFC 4787 behaviours are about IPv4 NAT).
func resolveServer(ctx context.Context, s string, resolve func(context.Context, string) ([]netip.Addr, error)) (netip.AddrPort, error) {
	if s == "" {
		return netip.AddrPort{}, fmt.Errorf("%w: DiscoverConfig.Server is empty", ErrBadConfig)
	}
	s = strings.TrimPrefix(s, "stun:")
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, fmt.Errorf("%w: server %q has port 0", ErrBadConfig, s)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	host, portStr, err := net.SplitHostPort(s)
	port := uint64(DefaultSTUNPort)
	if err != nil {
		host = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]")
	} else if port, err = strconv.ParseUint(portStr, 10, 16); err != nil || port == 0 {
		return netip.AddrPort{}, fmt.Errorf("%w: server %q: bad port", ErrBadConfig, s)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return netip.AddrPortFrom(ip.Unmap(), uint16(port)), nil
	}
	if host == "" || strings.ContainsAny(host, " /?#@") {
		return netip.AddrPort{}, fmt.Errorf("%w: server %q: bad host", ErrBadConfig, s)
	}
	if resolve == nil {
		resolve = func(ctx context.Context, h string) ([]netip.Addr, error) {
			return net.DefaultResolver.LookupNetIP(ctx, "ip", h)
		}
	}
	addrs, err := resolve(ctx, host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%w %q: %v", ErrResolve, host, err)
	}
	var pick netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		if a.Is4() {
			pick = a
			break
		}
		if !pick.IsValid() {
			pick = a
		}
	}
	if !pick.IsValid() {
		return netip.AddrPort{}, fmt.Errorf("%w %q: no addresses", ErrResolve, host)
	}
	return netip.AddrPortFrom(pick, uint16(port)), nil
}
