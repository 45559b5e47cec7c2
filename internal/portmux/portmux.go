// Package portmux serves several protocols on one TCP port. A server on the
// Internet has one port that every network lets through, TCP 443, and four
// things to offer on it: the call page and signaling WebSocket (HTTPS), the
// same over plain HTTP (a redirect, or the whole service on a private
// network), and TURN over TLS and over TCP (RFC 8656 section 3.1) for
// browsers and clients behind firewalls that block UDP.
//
// Every one of these protocols has the client speak first, so one byte
// tells them apart:
//
//	0x16                      TLS handshake record  -> terminate TLS, then:
//	    ALPN http/1.1 or h2      HTTPS
//	    ALPN stun.turn           TURN over TLS (RFC 7443)
//	    ALPN acme-tls/1          ACME TLS-ALPN-01 check (RFC 8737): closed after the handshake
//	    no ALPN                  the first decrypted byte decides, as below
//	0x00-0x03                 a STUN message (RFC 8489 section 5: the two top
//	                          bits are zero; a TURN client starts with
//	                          Allocate or Binding)  -> TURN over TCP
//	anything else             an HTTP request line  -> HTTP
//
// Connections wait at most Config.Timeout for their first byte and TLS
// handshake, and at most Config.MaxPending wait at once, so idle
// connections cannot pile up before any protocol code runs.
package portmux

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is the protocol of a connection.
type Kind int

// The kinds a Mux tells apart.
const (
	HTTP  Kind = iota // plain HTTP
	HTTPS             // HTTP over TLS
	TURN              // TURN (STUN framing) over plain TCP
	TURNS             // TURN over TLS
	numKinds
)

var kindNames = [numKinds]string{"http", "https", "turn", "turns"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("kind(%d)", int(k))
	}
	return kindNames[k]
}

// ALPN protocol ids (IANA TLS ALPN registry).
const (
	ALPNTURN = "stun.turn"  // RFC 7443
	ALPNACME = "acme-tls/1" // RFC 8737
)

// Config configures a Mux. The zero value serves plain HTTP and TURN only.
type Config struct {
	// TLS terminates connections that start with a TLS handshake. Nil
	// closes them. Its NextProtos should offer "http/1.1" (and "stun.turn",
	// and "acme-tls/1" for ACME); see NextProtos.
	TLS *tls.Config
	// Timeout bounds the wait for a connection's first byte plus its TLS
	// handshake. Zero means 10 s.
	Timeout time.Duration
	// MaxPending bounds the connections being classified at once; more are
	// closed at accept. Zero means 1024.
	MaxPending int
	// Logger receives problems (rate-limited by nature: one line per
	// accept error). Nil discards.
	Logger *slog.Logger
}

// NextProtos is the ALPN list a TLS config shared by HTTPS and TURN should
// offer, in server preference order. HTTP/2 is left out on purpose: the
// signaling WebSocket needs HTTP/1.1, and a page this small gains nothing.
var NextProtos = []string{"http/1.1", ALPNTURN, ALPNACME}

// Stats counts what a Mux did.
type Stats struct {
	Accepted [numKinds]int64 // handed to a listener, by kind
	Refused  int64           // a kind nobody listens for, or TLS without a config
	Timeouts int64           // no first byte or handshake within Timeout
	TLSFail  int64           // TLS handshakes that failed
	Overload int64           // closed at accept: MaxPending were waiting
	ACME     int64           // TLS-ALPN-01 checks answered
}

// Mux splits one listener into one per Kind.
type Mux struct {
	ln      net.Listener
	cfg     Config
	log     *slog.Logger
	subs    [numKinds]*subListener
	pending chan struct{}

	accepted                                   [numKinds]atomic.Int64
	refused, timeouts, tlsFail, overload, acme atomic.Int64

	closeOnce sync.Once
	done      chan struct{}
	wg        sync.WaitGroup // classifying goroutines
}

// New wraps ln. Call Listener for each kind to serve, then Run.
func New(ln net.Listener, cfg Config) *Mux {
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.MaxPending == 0 {
		cfg.MaxPending = 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return &Mux{ln: ln, cfg: cfg, log: cfg.Logger, pending: make(chan struct{}, cfg.MaxPending), done: make(chan struct{})}
}

// Addr is the shared listener's address.
func (m *Mux) Addr() net.Addr { return m.ln.Addr() }

// Listener returns the listener for connections of kind k. Connections of
// a kind whose listener was never asked for, or was closed, are closed.
// Call it before Run.
func (m *Mux) Listener(k Kind) net.Listener {
	if m.subs[k] == nil {
		m.subs[k] = &subListener{m: m, kind: k, conns: make(chan net.Conn), closed: make(chan struct{})}
	}
	return m.subs[k]
}

// Stats returns the counters.
func (m *Mux) Stats() Stats {
	var s Stats
	for k := range m.accepted {
		s.Accepted[k] = m.accepted[k].Load()
	}
	s.Refused, s.Timeouts, s.TLSFail = m.refused.Load(), m.timeouts.Load(), m.tlsFail.Load()
	s.Overload, s.ACME = m.overload.Load(), m.acme.Load()
	return s
}

// Run accepts until ctx is done, Close is called or the listener fails.
// It returns nil after Close or ctx.
func (m *Mux) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { m.Close() })
	defer stop()
	var backoff time.Duration
	for {
		c, err := m.ln.Accept()
		if err != nil {
			select {
			case <-m.done:
				m.wg.Wait()
				return nil
			default:
			}
			// EMFILE and friends: wait and retry, as net/http does.
			var te interface{ Temporary() bool }
			if errors.As(err, &te) && te.Temporary() {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				m.log.Warn("portmux: accept", "err", err, "retry", backoff)
				time.Sleep(backoff)
				continue
			}
			m.Close()
			m.wg.Wait()
			return fmt.Errorf("portmux: accept: %w", err)
		}
		backoff = 0
		select {
		case m.pending <- struct{}{}:
		default:
			m.overload.Add(1)
			c.Close()
			continue
		}
		m.wg.Add(1)
		go func() {
			defer m.wg.Done()
			m.classify(c)
			<-m.pending
		}()
	}
}

// Close stops accepting and closes every kind's listener. Connections
// already handed out are their owners'.
func (m *Mux) Close() error {
	m.closeOnce.Do(func() {
		close(m.done)
		m.ln.Close()
		for _, s := range m.subs {
			if s != nil {
				s.Close()
			}
		}
	})
	return nil
}

// classify reads the first byte (and the TLS handshake) and hands c on.
func (m *Mux) classify(c net.Conn) {
	deadline := time.Now().Add(m.cfg.Timeout)
	c.SetDeadline(deadline)
	pc := &peekConn{Conn: c, r: bufio.NewReaderSize(c, 16)}
	first, err := pc.r.Peek(1)
	if err != nil {
		m.countErr(err)
		c.Close()
		return
	}
	var out net.Conn = pc
	var kind Kind
	switch {
	case first[0] == 0x16: // TLS handshake record (RFC 8446 section 5.1)
		if m.cfg.TLS == nil {
			m.refused.Add(1)
			c.Close()
			return
		}
		tc := tls.Server(pc, m.cfg.TLS)
		if err := tc.Handshake(); err != nil {
			if isTimeout(err) {
				m.timeouts.Add(1)
			} else {
				m.tlsFail.Add(1)
				m.log.Debug("portmux: TLS handshake", "remote", c.RemoteAddr(), "err", err)
			}
			c.Close()
			return
		}
		switch tc.ConnectionState().NegotiatedProtocol {
		case ALPNACME:
			// The CA's TLS-ALPN-01 validation needs the handshake only
			// (RFC 8737 section 3); GetCertificate answered it.
			m.acme.Add(1)
			tc.Close()
			return
		case "http/1.1", "h2":
			out, kind = tc, HTTPS // a *tls.Conn, so http.Request.TLS is set
		case ALPNTURN:
			out, kind = tc, TURNS
		default:
			// No ALPN (a TURN client, or an old HTTP client): the first
			// decrypted byte decides.
			ip := &peekConn{Conn: tc, r: bufio.NewReaderSize(tc, 16)}
			b, err := ip.r.Peek(1)
			if err != nil {
				m.countErr(err)
				tc.Close()
				return
			}
			out, kind = ip, HTTPS
			if isSTUN(b[0]) {
				kind = TURNS
			}
		}
	case isSTUN(first[0]):
		kind = TURN
	default:
		kind = HTTP
	}
	c.SetDeadline(time.Time{})
	m.log.Debug("portmux: connection", "remote", c.RemoteAddr(), "kind", kind, "took", time.Until(deadline.Add(-m.cfg.Timeout)).Abs())
	s := m.subs[kind]
	m.accepted[kind].Add(1) // before the hand-over, so a reader after Accept sees it
	if s == nil || !s.deliver(out) {
		m.accepted[kind].Add(-1)
		m.refused.Add(1)
		out.Close()
	}
}

func (m *Mux) countErr(err error) {
	if isTimeout(err) {
		m.timeouts.Add(1)
	}
}

// isSTUN: the first byte of a STUN message has its two top bits zero, and
// a method below 0x400 keeps the byte at 0x00-0x03 (RFC 8489 section 5).
func isSTUN(b byte) bool { return b <= 0x03 }

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// peekConn is a net.Conn whose first bytes were peeked.
type peekConn struct {
	net.Conn
	r *bufio.Reader
}

func (p *peekConn) Read(b []byte) (int, error) { return p.r.Read(b) }

// subListener is the net.Listener of one kind.
type subListener struct {
	m         *Mux
	kind      Kind
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

// deliver hands c to Accept; false if the listener is closed.
func (s *subListener) deliver(c net.Conn) bool {
	select {
	case <-s.closed:
		return false
	default:
	}
	select {
	case s.conns <- c:
		return true
	case <-s.closed:
		return false
	}
}

func (s *subListener) Accept() (net.Conn, error) {
	select {
	case c := <-s.conns:
		return c, nil
	case <-s.closed:
		return nil, fmt.Errorf("portmux: %s listener: %w", s.kind, net.ErrClosed)
	}
}

func (s *subListener) Close() error {
	s.closeOnce.Do(func() { close(s.closed) })
	return nil
}

func (s *subListener) Addr() net.Addr { return s.m.ln.Addr() }
