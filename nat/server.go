package nat

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// ServerConfig configures a STUN server. The zero value of each field is
// documented next to it.
type ServerConfig struct {
	// Primary is IP1:P1, where clients send their first Binding request.
	// Required unless Conns.Primary is set. Port 0 picks a free port.
	// The IP may be unspecified (0.0.0.0 or ::) only when Alternate has
	// no IP: a wildcard socket cannot name its own address, so such a
	// server leaves out RESPONSE-ORIGIN and OTHER-ADDRESS.
	Primary netip.AddrPort

	// Alternate is IP2:P2, the second IP and second port of RFC 5780
	// section 4.1 that answer CHANGE-REQUEST.
	//
	//   - Alternate.Addr() set (and different from Primary's IP): the server
	//     listens on IP1:P1, IP1:P2, IP2:P1 and IP2:P2 and supports
	//     change-IP and change-port.
	//   - Alternate.Addr() zero (or equal to Primary's IP): the server has
	//     one IP. It listens on IP1:P1 and IP1:P2, supports change-port
	//     only, reports OTHER-ADDRESS as IP1:P2, and answers a change-IP
	//     request with error 420 so clients learn what it cannot do.
	//
	// Alternate.Port() 0 picks a free port (the same on both IPs). Build
	// a port-only value with netip.AddrPortFrom(netip.Addr{}, port).
	Alternate netip.AddrPort

	// BindingOnly turns the server into a plain RFC 5389 Binding server on
	// Primary alone: no OTHER-ADDRESS, CHANGE-REQUEST answered with 420.
	BindingOnly bool

	// Conns, when Conns.Primary is non-nil, are already-open sockets to
	// serve instead of listening; Primary, Alternate, BindingOnly and
	// Listener are then ignored. The server owns them and closes them on
	// Close.
	Conns ServerConns

	// Listener opens the sockets. Nil means SystemListener (real
	// sockets); tests pass a *vnet.Net.
	Listener PacketListener

	// Logger receives lifecycle (INFO) and rate-limited per-packet (DEBUG,
	// WARN) messages. Nil discards.
	Logger *slog.Logger
}

// ServerConns are already-open sockets for an embedded server. Only Primary
// is required. ChangePort enables change-port; ChangeIP and ChangeBoth
// together (with ChangePort) enable change-IP. Their local addresses must
// be consistent: ChangePort on Primary's IP, ChangeIP on Primary's port,
// ChangeBoth on ChangeIP's IP and ChangePort's port.
type ServerConns struct {
	Primary    net.PacketConn // IP1:P1
	ChangePort net.PacketConn // IP1:P2
	ChangeIP   net.PacketConn // IP2:P1
	ChangeBoth net.PacketConn // IP2:P2
}

// ServerAddrs are the addresses a Server answers on; absent ones are zero.
type ServerAddrs struct {
	Primary    netip.AddrPort // IP1:P1
	ChangePort netip.AddrPort // IP1:P2
	ChangeIP   netip.AddrPort // IP2:P1
	ChangeBoth netip.AddrPort // IP2:P2, what OTHER-ADDRESS names with two IPs
}

// ServerStats is a snapshot of a Server's counters.
type ServerStats struct {
	Requests, Responses, ErrorResponses, Ignored, BadPackets, WriteErrors uint64
}

// Server is a STUN server for RFC 5389 Binding and RFC 5780 behaviour
// discovery. Create it with NewServer, serve with Run, stop with Close.
type Server struct {
	// Requests counts Binding requests received (answered or refused).
	Requests atomic.Uint64
	// Responses counts success responses sent.
	Responses atomic.Uint64
	// ErrorResponses counts error responses sent (400, 420).
	ErrorResponses atomic.Uint64
	// Ignored counts well-formed STUN messages that need no answer:
	// Binding indications, responses, other methods.
	Ignored atomic.Uint64
	// BadPackets counts datagrams that are not valid STUN; they are dropped.
	BadPackets atomic.Uint64
	// WriteErrors counts responses the socket failed to send.
	WriteErrors atomic.Uint64

	log     *slog.Logger
	socks   [2][2]*sock // [ip index][port index]; nil where absent
	all     []*sock
	twoIP   bool
	badLogs logLimiter

	mu      sync.Mutex // guards the fields below
	running bool
	closed  bool
	done    chan struct{} // closed when Run's goroutines have exited
}

// sock is one of the server's sockets.
type sock struct {
	conn     net.PacketConn
	addr     netip.AddrPort
	ip, port int // indices into Server.socks
}

// NewServer validates cfg, opens (or adopts) the sockets and returns a
// server ready to Run. On error every socket it opened or was given is
// closed.
func NewServer(cfg ServerConfig) (*Server, error) {
	s := &Server{log: cfg.Logger, done: make(chan struct{})}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.badLogs.every = time.Second
	var err error
	if cfg.Conns.Primary != nil {
		err = s.adopt(cfg.Conns)
	} else {
		err = s.listen(cfg)
	}
	if err != nil {
		for _, c := range []net.PacketConn{cfg.Conns.Primary, cfg.Conns.ChangePort, cfg.Conns.ChangeIP, cfg.Conns.ChangeBoth} {
			if c != nil {
				_ = c.Close()
			}
		}
		s.closeSockets()
		return nil, err
	}
	for i := range s.socks {
		for j := range s.socks[i] {
			if sk := s.socks[i][j]; sk != nil {
				s.all = append(s.all, sk)
			}
		}
	}
	return s, nil
}

func (s *Server) put(c net.PacketConn, ip, port int) *sock {
	sk := &sock{conn: c, addr: addrPortOf(c.LocalAddr()), ip: ip, port: port}
	s.socks[ip][port] = sk
	return sk
}

// adopt takes over already-open sockets after checking they form the
// RFC 5780 section 4.1 square of addresses.
func (s *Server) adopt(c ServerConns) error {
	p := s.put(c.Primary, 0, 0)
	if !p.addr.IsValid() {
		return fmt.Errorf("%w: primary conn has no IP address (%v)", ErrBadConfig, c.Primary.LocalAddr())
	}
	if (c.ChangeIP == nil) != (c.ChangeBoth == nil) {
		return fmt.Errorf("%w: ChangeIP and ChangeBoth conns go together", ErrBadConfig)
	}
	if c.ChangeIP != nil && c.ChangePort == nil {
		return fmt.Errorf("%w: change-IP conns need a ChangePort conn too", ErrBadConfig)
	}
	if c.ChangePort != nil {
		pp := s.put(c.ChangePort, 0, 1)
		if pp.addr.Addr() != p.addr.Addr() || pp.addr.Port() == p.addr.Port() {
			return fmt.Errorf("%w: ChangePort conn %s must share IP with primary %s on another port", ErrBadConfig, pp.addr, p.addr)
		}
	}
	if c.ChangeIP != nil {
		if p.addr.Addr().IsUnspecified() {
			return fmt.Errorf("%w: change-IP needs a specific primary IP, not %s", ErrBadConfig, p.addr.Addr())
		}
		ip := s.put(c.ChangeIP, 1, 0)
		both := s.put(c.ChangeBoth, 1, 1)
		p2 := s.socks[0][1].addr.Port()
		switch {
		case ip.addr.Addr() == p.addr.Addr() || ip.addr.Addr().Is4() != p.addr.Addr().Is4() || ip.addr.Addr().IsUnspecified():
			return fmt.Errorf("%w: ChangeIP conn %s needs a second specific IP of primary's family", ErrBadConfig, ip.addr)
		case ip.addr.Port() != p.addr.Port():
			return fmt.Errorf("%w: ChangeIP conn %s must use primary's port %d", ErrBadConfig, ip.addr, p.addr.Port())
		case both.addr != netip.AddrPortFrom(ip.addr.Addr(), p2):
			return fmt.Errorf("%w: ChangeBoth conn %s must be %s", ErrBadConfig, both.addr, netip.AddrPortFrom(ip.addr.Addr(), p2))
		}
		s.twoIP = true
	}
	return nil
}

// listen opens the sockets described by cfg. When it picks ports it may
// retry a few times: a port free on one IP can be taken on the other.
func (s *Server) listen(cfg ServerConfig) error {
	ln := cfg.Listener
	if ln == nil {
		ln = SystemListener{}
	}
	ip1 := cfg.Primary.Addr().Unmap()
	if !ip1.IsValid() {
		return fmt.Errorf("%w: Primary address is required", ErrBadConfig)
	}
	ip2 := cfg.Alternate.Addr().Unmap()
	twoIP := !cfg.BindingOnly && ip2.IsValid() && ip2 != ip1
	if twoIP {
		switch {
		case ip1.IsUnspecified() || ip2.IsUnspecified():
			return fmt.Errorf("%w: change-IP needs two specific IPs, got %s and %s", ErrBadConfig, ip1, ip2)
		case ip1.Is4() != ip2.Is4():
			return fmt.Errorf("%w: primary %s and alternate %s differ in family", ErrBadConfig, ip1, ip2)
		}
	}
	p1, p2 := cfg.Primary.Port(), cfg.Alternate.Port()
	if !cfg.BindingOnly && p1 != 0 && p1 == p2 {
		return fmt.Errorf("%w: primary and alternate port are both %d", ErrBadConfig, p1)
	}
	const attempts = 8
	var lastErr error
	for range attempts {
		var opened []net.PacketConn
		open := func(ip netip.Addr, port uint16) (net.PacketConn, error) {
			c, err := ln.ListenPacket(network(ip), netip.AddrPortFrom(ip, port).String())
			if err != nil {
				return nil, fmt.Errorf("nat: listen on %s: %w", netip.AddrPortFrom(ip, port), err)
			}
			opened = append(opened, c)
			return c, nil
		}
		err := func() error {
			c11, err := open(ip1, p1)
			if err != nil {
				return err
			}
			s.put(c11, 0, 0)
			if cfg.BindingOnly {
				return nil
			}
			c12, err := open(ip1, p2)
			if err != nil {
				return err
			}
			s.put(c12, 0, 1)
			if s.socks[0][1].addr.Port() == s.socks[0][0].addr.Port() {
				return fmt.Errorf("%w: listener gave the same port twice", ErrBadConfig)
			}
			if !twoIP {
				return nil
			}
			c21, err := open(ip2, s.socks[0][0].addr.Port())
			if err != nil {
				return err
			}
			s.put(c21, 1, 0)
			c22, err := open(ip2, s.socks[0][1].addr.Port())
			if err != nil {
				return err
			}
			s.put(c22, 1, 1)
			s.twoIP = true
			return nil
		}()
		if err == nil {
			return nil
		}
		lastErr = err
		for _, c := range opened {
			_ = c.Close()
		}
		s.socks = [2][2]*sock{}
		if p1 != 0 && p2 != 0 {
			break // fixed ports: retrying cannot help
		}
	}
	return lastErr
}

// Addrs reports the addresses the server answers on.
func (s *Server) Addrs() ServerAddrs {
	var a ServerAddrs
	for i, dst := range []*netip.AddrPort{&a.Primary, &a.ChangePort, &a.ChangeIP, &a.ChangeBoth} {
		if sk := s.socks[i/2][i%2]; sk != nil {
			*dst = sk.addr
		}
	}
	return a
}

// CanChangeIP reports whether the server answers change-IP requests.
func (s *Server) CanChangeIP() bool { return s.twoIP }

// CanChangePort reports whether the server answers change-port requests.
func (s *Server) CanChangePort() bool { return s.socks[0][1] != nil }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() ServerStats {
	return ServerStats{
		Requests:       s.Requests.Load(),
		Responses:      s.Responses.Load(),
		ErrorResponses: s.ErrorResponses.Load(),
		Ignored:        s.Ignored.Load(),
		BadPackets:     s.BadPackets.Load(),
		WriteErrors:    s.WriteErrors.Load(),
	}
}

// Run serves every socket until ctx is done or Close is called, then
// closes the sockets. It returns nil after such a stop, or the first
// socket error that ended serving.
func (s *Server) Run(ctx context.Context) error {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return ErrClosed
	case s.running:
		s.mu.Unlock()
		return ErrRunning
	}
	s.running = true
	s.mu.Unlock()
	defer close(s.done)

	stop := context.AfterFunc(ctx, s.shutdown)
	defer stop()
	s.log.Info("stun server running", "addrs", s.Addrs(), "change_ip", s.CanChangeIP(), "change_port", s.CanChangePort())

	errc := make(chan error, len(s.all))
	for _, sk := range s.all {
		go func() { errc <- s.serve(sk) }()
	}
	var first error
	for range s.all {
		if err := <-errc; err != nil && first == nil {
			first = err
			s.shutdown() // one socket failed: stop the others
		}
	}
	s.log.Info("stun server stopped", "err", first)
	return first
}

// Close stops the server, closes its sockets and waits for Run to return.
// It is safe to call more than once.
func (s *Server) Close() error {
	s.shutdown()
	s.mu.Lock()
	running := s.running
	s.mu.Unlock()
	if running {
		<-s.done
	}
	return nil
}

// shutdown marks the server closed and closes the sockets, which ends the
// read loops.
func (s *Server) shutdown() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	s.mu.Unlock()
	s.closeSockets()
}

func (s *Server) closeSockets() {
	for i := range s.socks {
		for j := range s.socks[i] {
			if sk := s.socks[i][j]; sk != nil {
				_ = sk.conn.Close()
			}
		}
	}
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// handler holds one read loop's reusable messages, so that answering a
// request allocates little.
type handler struct {
	req, resp stun.Message
}

// serve reads and answers datagrams on one socket until it is closed.
func (s *Server) serve(sk *sock) error {
	buf := make([]byte, maxDatagram+1)
	var h handler
	errStreak := 0
	for {
		n, from, err := sk.conn.ReadFrom(buf)
		if err != nil {
			if s.isClosed() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return fmt.Errorf("nat: socket %s closed under the server: %w", sk.addr, err)
			}
			// Transient errors (ICMP-induced, deadline set by an embedder):
			// back off a little, give up if they never stop.
			errStreak++
			if errStreak > 100 {
				return fmt.Errorf("nat: read on %s: %w", sk.addr, err)
			}
			if ok, dropped := s.badLogs.allow(); ok {
				s.log.Warn("stun read error", "addr", sk.addr, "err", err, "suppressed", dropped)
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		errStreak = 0
		if n > maxDatagram {
			s.drop(addrPortOf(from), fmt.Errorf("%w: datagram over %d bytes", ErrMalformed, maxDatagram))
			continue
		}
		src := addrPortOf(from)
		out, resp := s.handle(&h, sk, buf[:n], src)
		if resp == nil {
			continue
		}
		if _, err := out.conn.WriteTo(resp, udpAddr(src)); err != nil {
			s.WriteErrors.Add(1)
			if ok, dropped := s.badLogs.allow(); ok {
				s.log.Warn("stun write failed", "from", out.addr, "to", src, "err", err, "suppressed", dropped)
			}
		}
	}
}

func (s *Server) drop(from netip.AddrPort, err error) {
	s.BadPackets.Add(1)
	if ok, dropped := s.badLogs.allow(); ok {
		s.log.Debug("stun packet dropped", "from", from, "err", err, "suppressed", dropped)
	}
}

// handle answers one datagram that arrived on in from src. It returns the
// socket to answer from and the response bytes (valid until the next call
// with the same h), or a nil response when the datagram gets no answer.
func (s *Server) handle(h *handler, in *sock, pkt []byte, src netip.AddrPort) (*sock, []byte) {
	req, err := parseBindingRequest(&h.req, pkt)
	switch {
	case errors.Is(err, ErrNotOurs):
		s.Ignored.Add(1)
		return nil, nil
	case err != nil:
		s.drop(src, err)
		return nil, nil
	case req.indication:
		// RFC 5389 section 7.3.2: indications get no response.
		s.Ignored.Add(1)
		return nil, nil
	case !src.IsValid():
		s.drop(src, fmt.Errorf("%w: source is not an IP address", ErrMalformed))
		return nil, nil
	}
	s.Requests.Add(1)

	resp := bindingResponse{tx: req.tx}
	out := in
	switch {
	case len(req.unknown) > 0:
		// RFC 5389 section 7.3.1: unknown comprehension-required attributes.
		resp.code, resp.reason, resp.unknown = codeUnknownAttr, reasonUnknown, req.unknown
	case req.change != 0:
		// RFC 5780 section 6.1: answer from the address that differs in
		// the requested parts; if we have none, say so with a 420.
		ip, port := in.ip, in.port
		if req.change&changeIPFlag != 0 {
			ip ^= 1
		}
		if req.change&changePortFlag != 0 {
			port ^= 1
		}
		if target := s.socks[ip][port]; target != nil {
			out = target
			resp.success = true
		} else {
			resp.code, resp.reason = codeUnknownAttr, reasonUnknown
			resp.unknown = []stun.AttrType{stun.AttrChangeRequest}
		}
	default:
		resp.success = true
	}
	if resp.success {
		resp.mapped = src
		if !out.addr.Addr().IsUnspecified() {
			resp.origin = out.addr // RFC 5780 section 7.3
		}
		resp.other = s.otherAddress(in)
	}
	if err := encodeBindingResponse(&h.resp, resp); err != nil {
		// Only a mapped address pion cannot encode gets here.
		s.drop(src, err)
		return nil, nil
	}
	if resp.success {
		s.Responses.Add(1)
	} else {
		s.ErrorResponses.Add(1)
	}
	return out, h.resp.Raw
}

// otherAddress is OTHER-ADDRESS for a request that arrived on in (RFC 5780
// section 7.4): the socket differing in IP and port, or with one IP the
// socket differing in port. Zero when unknown or a wildcard.
func (s *Server) otherAddress(in *sock) netip.AddrPort {
	var o *sock
	if s.twoIP {
		o = s.socks[in.ip^1][in.port^1]
	} else {
		o = s.socks[in.ip][in.port^1]
	}
	if o == nil || o.addr.Addr().IsUnspecified() {
		return netip.AddrPort{}
	}
	return o.addr
}

// logLimiter lets one log line through per interval and counts the rest.
type logLimiter struct {
	every   time.Duration
	mu      sync.Mutex // guards the fields below
	next    time.Time
	dropped int
}

// allow reports whether a line may be logged now and how many were
// suppressed since the last one.
func (l *logLimiter) allow() (bool, int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if now.Before(l.next) {
		l.dropped++
		return false, 0
	}
	l.next = now.Add(l.every)
	d := l.dropped
	l.dropped = 0
	return true, d
}
