package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/turn/v5"
	"github.com/quic-go/quic-go"
)

// Server is a supernode. New opens its listeners; Run signs in to the
// signaling server and serves until ctx ends or Close is called.
type Server struct {
	cfg    Config
	log    *slog.Logger
	cert   *tls.Certificate
	fp     string
	public netip.Addr
	policy peerPolicy
	relays relayPorts
	users  userCounts
	stats  stats
	logLim logLimiter
	adm    admission
	gov    governor
	// dp is the TURN UDP data plane (nil where the platform or the
	// listener does not allow it: pion/turn then does everything).
	dp     *dataplane
	chanMu sync.Mutex // serialises channel-table replacement (relayConn.setChannel)
	// relayCtr counts relay stream frames and datagrams, all connections.
	relayCtr relayconn.Counters

	quicPC  net.PacketConn
	quicTr  *quic.Transport
	quicLn  *quic.Listener
	turnUDP net.PacketConn
	turnTCP net.Listener
	turnTLS net.Listener
	streams *streamListener
	turn    *turn.Server

	// promo is what the signaling server gave at promotion (nil before);
	// accepting says whether new sessions are admitted (promoted now).
	promo     atomic.Pointer[promotion]
	accepting atomic.Bool

	mu          sync.Mutex // guards the fields below
	state       proto.SupernodeState
	reason      string
	history     []Decision
	connected   bool
	running     bool
	closed      bool
	conns       map[*quic.Conn]struct{}
	streamConns map[netip.AddrPort]*streamConn // synthetic stream address -> its stream
	nextPort    uint16
	cancel      context.CancelFunc
	done        chan struct{}
	started     time.Time // New; uptime on the status page (status.go)

	wg sync.WaitGroup // QUIC connection and stream goroutines
}

// promotion is what a promotion carries.
type promotion struct {
	id        string
	secret    []byte
	tokenKey  ed25519.PublicKey
	heartbeat time.Duration
}

// New validates cfg, fills defaults and opens every listener, so Addrs and
// Fingerprint are known before Run.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	s := &Server{
		started:     time.Now(),
		cfg:         cfg,
		log:         cfg.Logger.With("supernode", cfg.Name),
		conns:       map[*quic.Conn]struct{}{},
		streamConns: map[netip.AddrPort]*streamConn{},
		done:        make(chan struct{}),
	}
	s.cert = cfg.Certificate
	if s.cert == nil {
		c, err := SelfSignedCert(cfg.Name)
		if err != nil {
			return nil, err
		}
		s.cert = c
	}
	s.fp = Fingerprint(s.cert)
	if err := s.listen(); err != nil {
		s.closeListeners()
		return nil, err
	}
	if err := s.choosePublic(); err != nil {
		s.closeListeners()
		return nil, err
	}
	s.policy = peerPolicy{allow: cfg.AllowPeers, own: map[netip.Addr]bool{s.public: true}}
	for _, a := range []netip.AddrPort{s.Addrs().QUIC, s.Addrs().TURNUDP} {
		if a.Addr().IsValid() && !a.Addr().IsUnspecified() {
			s.policy.own[a.Addr()] = true
		}
	}
	t, err := s.newTURN()
	if err != nil {
		s.closeListeners()
		return nil, err
	}
	s.turn = t
	if s.dp != nil {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.dp.run()
			s.dp.lis.Close()
		}()
	}
	return s, nil
}

// listen opens the QUIC and TURN listeners.
func (s *Server) listen() error {
	c := &s.cfg
	pc, err := c.PacketListener.ListenPacket("udp", c.ListenQUIC)
	if err != nil {
		return fmt.Errorf("supernode: listen QUIC %s: %w", c.ListenQUIC, err)
	}
	s.quicPC = pc
	s.quicTr = &quic.Transport{Conn: pc}
	tlsConf := &tls.Config{Certificates: []tls.Certificate{*s.cert}, NextProtos: []string{proto.RelayALPN}, MinVersion: tls.VersionTLS13}
	s.quicLn, err = s.quicTr.Listen(tlsConf, quicConfig())
	if err != nil {
		return fmt.Errorf("supernode: QUIC listener: %w", err)
	}
	s.streams = newStreamListener(net.TCPAddrFromAddrPort(addrPort(pc.LocalAddr())))
	if c.ListenTURNUDP != "off" {
		if s.turnUDP, err = c.PacketListener.ListenPacket("udp", c.ListenTURNUDP); err != nil {
			return fmt.Errorf("supernode: listen TURN UDP %s: %w", c.ListenTURNUDP, err)
		}
	}
	if c.TURNTCPListener != nil {
		s.turnTCP = c.TURNTCPListener
	} else if c.ListenTURNTCP != "off" {
		if s.turnTCP, err = c.Listen("tcp", c.ListenTURNTCP); err != nil {
			return fmt.Errorf("supernode: listen TURN TCP %s: %w", c.ListenTURNTCP, err)
		}
	}
	if c.TURNTLSListener != nil {
		s.turnTLS = c.TURNTLSListener
	} else if c.ListenTURNTLS != "off" {
		if s.turnTLS, err = c.Listen("tcp", c.ListenTURNTLS); err != nil {
			return fmt.Errorf("supernode: listen TURN TLS %s: %w", c.ListenTURNTLS, err)
		}
	}
	return nil
}

// choosePublic settles the address advertised to others.
func (s *Server) choosePublic() error {
	switch q := addrPort(s.quicPC.LocalAddr()).Addr(); {
	case s.cfg.PublicAddr.IsValid():
		s.public = s.cfg.PublicAddr.Unmap()
	case q.IsValid() && !q.IsUnspecified():
		s.public = q
	case s.cfg.NAT != nil && s.cfg.NAT.PublicAddr != "":
		ap, err := netip.ParseAddrPort(s.cfg.NAT.PublicAddr)
		if err != nil {
			return fmt.Errorf("%w: NAT report public address: %v", ErrBadConfig, err)
		}
		s.public = ap.Addr().Unmap()
	default:
		return fmt.Errorf("%w: cannot tell this machine's public address: set PublicAddr (--public-addr) or listen on a specific IP", ErrBadConfig)
	}
	return nil
}

// bindIP is the IP relay sockets bind to: the QUIC listener's, if specific.
func (s *Server) bindIP() string {
	q := addrPort(s.quicPC.LocalAddr()).Addr()
	if q.IsValid() && !q.IsUnspecified() {
		return q.String()
	}
	if s.public.Is6() {
		return "::"
	}
	return "0.0.0.0"
}

// Addrs are the bound listener addresses (zero when disabled).
type Addrs struct {
	QUIC    netip.AddrPort
	TURNUDP netip.AddrPort
	TURNTCP netip.AddrPort
	TURNTLS netip.AddrPort
}

// Addrs returns the bound addresses.
func (s *Server) Addrs() Addrs {
	a := Addrs{QUIC: addrPort(s.quicPC.LocalAddr())}
	if s.turnUDP != nil {
		a.TURNUDP = addrPort(s.turnUDP.LocalAddr())
	}
	if s.turnTCP != nil {
		a.TURNTCP = addrPort(s.turnTCP.Addr())
	}
	if s.turnTLS != nil {
		a.TURNTLS = addrPort(s.turnTLS.Addr())
	}
	return a
}

// Fingerprint is the pin of the certificate this supernode presents.
func (s *Server) Fingerprint() string { return s.fp }

// PublicAddr is the IP advertised to others.
func (s *Server) PublicAddr() netip.Addr { return s.public }

// registration is what the supernode offers the signaling server.
func (s *Server) registration() *proto.SupernodeRegister {
	adv := func(a netip.AddrPort) string {
		if !a.IsValid() {
			return ""
		}
		return netip.AddrPortFrom(s.public, a.Port()).String()
	}
	a := s.Addrs()
	r := &proto.SupernodeRegister{
		Label:        s.cfg.Label,
		QUIC:         adv(a.QUIC),
		TURNUDP:      adv(a.TURNUDP),
		TURNTCP:      adv(a.TURNTCP),
		TURNTLS:      adv(a.TURNTLS),
		TURNTLSName:  s.cfg.TURNTLSName,
		Fingerprint:  s.fp,
		NAT:          s.cfg.NAT,
		MaxSessions:  s.cfg.MaxSessions,
		MaxRelayMbps: s.cfg.MaxRelayMbps,
		Version:      "parley-supernode/1",
	}
	r.MaxSessionKbps = s.cfg.MaxSessionKbps // users keep file transfers under it during calls
	return r
}

// Run serves the relay and keeps a signaling session (registering,
// answering probes, sending heartbeats) until ctx ends or Close is called.
// It returns nil after a clean shutdown.
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
	ctx, cancel := context.WithCancel(ctx)
	s.cancel = cancel
	s.mu.Unlock()
	defer close(s.done)
	defer cancel()

	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		s.serveQUIC(ctx)
	}()
	go func() {
		defer s.wg.Done()
		s.govern(ctx)
	}()
	s.log.Info("supernode: serving", "quic", s.Addrs().QUIC, "turn_udp", s.Addrs().TURNUDP,
		"turn_tcp", s.Addrs().TURNTCP, "turn_tls", s.Addrs().TURNTLS, "public", s.public, "fingerprint", s.fp)
	err := s.signalLoop(ctx)
	s.shutdown()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// Close stops Run (announcing the shutdown to the signaling server) and
// closes every listener and relay. Safe to call more than once.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	running, cancel := s.running, s.cancel
	s.mu.Unlock()
	if running {
		cancel()
		<-s.done
		return nil
	}
	s.shutdown()
	return nil
}

// shutdown closes listeners and connections and waits for goroutines.
func (s *Server) shutdown() {
	s.mu.Lock()
	s.closed = true
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	s.accepting.Store(false)
	s.closeListeners()
	for _, c := range conns {
		c.CloseWithError(0, "supernode shutting down")
	}
	s.wg.Wait()
}

func (s *Server) closeListeners() {
	if s.turn != nil {
		s.turn.Close() // closes the TURN listeners, the stream listener and allocations
	} else {
		for _, c := range []interface{ Close() error }{s.turnUDP, s.turnTCP, s.turnTLS} {
			if c != nil {
				c.Close()
			}
		}
		if s.streams != nil {
			s.streams.Close()
		}
	}
	if s.quicLn != nil {
		s.quicLn.Close()
	}
	if s.quicTr != nil {
		s.quicTr.Close()
	}
	if s.quicPC != nil {
		s.quicPC.Close()
	}
}

// stateReason is the current state and reason, for refusals.
func (s *Server) stateReason() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.state == "" {
		return "not registered yet"
	}
	return string(s.state) + ": " + s.reason
}

// logLimiter lets through a few lines per second of per-packet logging.
type logLimiter struct {
	mu     sync.Mutex // guards below
	window time.Time
	n      int
}

func (s *Server) limitedLog(msg string, args ...any) {
	l := &s.logLim
	l.mu.Lock()
	now := time.Now()
	if now.Sub(l.window) > time.Second {
		l.window, l.n = now, 0
	}
	l.n++
	ok := l.n <= 5
	l.mu.Unlock()
	if ok {
		s.log.Warn("supernode: "+msg, args...)
	}
}
