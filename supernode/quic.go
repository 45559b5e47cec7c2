package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/relayconn"
	"github.com/parley-voice/parley/proto"
	"github.com/quic-go/quic-go"
)

// helloTimeout bounds the wait for a stream's first frame.
const helloTimeout = 5 * time.Second

// quicConfig is the relay listener's: TURN over TCP framing on streams,
// ChannelData optionally as datagrams (README: stream vs datagram),
// keepalives so idle warm connections survive NAT timeouts.
func quicConfig() *quic.Config {
	return &quic.Config{
		EnableDatagrams:    true, // ChannelData beside the stream (internal/relayconn)
		MaxIdleTimeout:     60 * time.Second,
		KeepAlivePeriod:    15 * time.Second,
		MaxIncomingStreams: 64,
		// A voice stream needs little window; keep memory per connection low.
		InitialStreamReceiveWindow:     64 << 10,
		MaxStreamReceiveWindow:         1 << 20,
		InitialConnectionReceiveWindow: 128 << 10,
		MaxConnectionReceiveWindow:     4 << 20,
	}
}

// serveQUIC accepts QUIC connections until the listener closes.
func (s *Server) serveQUIC(ctx context.Context) {
	for {
		conn, err := s.quicLn.Accept(ctx)
		if err != nil {
			return
		}
		s.stats.quicConns.Add(1)
		if s.connCount() >= s.maxConns() {
			s.stats.sessionsFull.Add(1)
			conn.CloseWithError(quic.ApplicationErrorCode(1), "supernode busy: too many connections")
			continue
		}
		if !s.trackConn(conn, true) {
			conn.CloseWithError(0, "closing")
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer s.trackConn(conn, false)
			s.serveConn(ctx, conn)
		}()
	}
}

// maxConns bounds concurrent QUIC connections: warm connections from
// every user that may relay here, probes, and headroom.
func (s *Server) maxConns() int { return 4*s.cfg.MaxSessions + 64 }

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) trackConn(c *quic.Conn, add bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		if s.closed {
			return false
		}
		s.conns[c] = struct{}{}
	} else {
		delete(s.conns, c)
	}
	return true
}

// serveConn accepts the streams of one QUIC connection.
func (s *Server) serveConn(ctx context.Context, conn *quic.Conn) {
	var mux *relayconn.Mux
	if d := conn.ConnectionState().SupportsDatagrams; d.Local && d.Remote {
		mux = relayconn.NewMux(conn, &s.relayCtr) // stops when conn closes
	}
	for {
		st, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.serveStream(conn, mux, st)
		}()
	}
}

// serveStream reads a stream's hello and either answers a probe or, for a
// valid relay token, hands the stream to the TURN server.
func (s *Server) serveStream(conn *quic.Conn, mux *relayconn.Mux, st *quic.Stream) {
	st.SetReadDeadline(time.Now().Add(helloTimeout))
	var h proto.RelayHello
	if err := proto.ReadRelayFrame(st, &h); err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			s.stats.badHello.Add(1)
			s.refuse(st, pe)
		} else {
			// Nothing (or half a frame) within the timeout: no token.
			s.stats.tokenMissing.Add(1)
			s.refuse(st, proto.Errorf(proto.CodeTokenInvalid, "no relay hello within %s", helloTimeout))
		}
		return
	}
	st.SetReadDeadline(time.Time{})
	switch h.Op {
	case proto.RelayOpProbe:
		s.answerProbe(st, &h)
	case proto.RelayOpRelay:
		user, perr := s.checkToken(h.Token)
		if perr != nil {
			s.refuse(st, perr)
			return
		}
		if !h.Datagrams {
			mux = nil
		}
		sc, perr := s.newStreamConn(conn, mux, st, user)
		if perr != nil {
			s.refuse(st, perr)
			return
		}
		// Admission reserves the session's place until its Allocate (or
		// the stream's end), so streams opened together cannot all pass
		// and then fail TURN with a bare 486.
		if perr := s.admitSession(user, sc.addr, true); perr != nil {
			s.refuse(st, perr)
			sc.Close()
			return
		}
		// Nothing else writes to the stream until the client speaks TURN.
		if err := proto.WriteRelayFrame(st, &proto.RelayReply{OK: true, Datagrams: mux != nil}); err != nil {
			sc.Close()
			return
		}
		s.stats.relayStreams.Add(1)
		if !s.streams.push(sc) {
			sc.Close()
		}
	}
}

// checkToken verifies a relay token and counts why it fails.
func (s *Server) checkToken(token string) (string, *proto.Error) {
	p := s.promo.Load()
	if p == nil {
		s.stats.notPromoted.Add(1)
		return "", proto.Errorf(proto.CodeUnavailable, "supernode %s is not promoted (%s)", s.cfg.Name, s.stateReason())
	}
	if token == "" {
		s.stats.tokenMissing.Add(1)
		return "", proto.Errorf(proto.CodeTokenInvalid, "no relay token: ask the signaling server for one")
	}
	tok, err := proto.VerifyRelayToken(token, p.tokenKey, p.id, time.Now())
	if err != nil {
		var pe *proto.Error
		if !errors.As(err, &pe) {
			pe = proto.Errorf(proto.CodeTokenInvalid, "%v", err)
		}
		switch {
		case pe.Code == proto.CodeTokenExpired:
			s.stats.tokenExpired.Add(1)
		case tokenNamesOther(token, p.id):
			s.stats.tokenWrongSupernode.Add(1)
		default:
			s.stats.tokenInvalid.Add(1)
		}
		return "", pe
	}
	return tok.User, nil
}

// tokenNamesOther reports whether a well-signed-looking token names
// another supernode (for the counter; VerifyRelayToken already refused it).
func tokenNamesOther(token, id string) bool {
	p, err := proto.ParseRelayToken(token)
	return err == nil && p.Token.Supernode != id
}

// refuse answers a stream with an error and closes it.
func (s *Server) refuse(st *quic.Stream, pe *proto.Error) {
	s.limitedLog("relay stream refused", "code", pe.Code, "reason", pe.Message)
	st.SetWriteDeadline(time.Now().Add(2 * time.Second))
	proto.WriteRelayFrame(st, &proto.RelayReply{Error: pe})
	st.Close()
	st.CancelRead(0)
}

// probeChunk is the pattern a probe's bandwidth test sends (random, so no
// compression on the path flatters the figure).
var probeChunk = func() []byte {
	b := make([]byte, 32<<10)
	rand.Read(b)
	return b
}()

// answerProbe proves to the signaling server that this endpoint is the
// candidate that registered (a signature over its nonce and the
// certificate it saw) and sends h.Bytes for the bandwidth measurement.
func (s *Server) answerProbe(st *quic.Stream, h *proto.RelayHello) {
	s.stats.probes.Add(1)
	sig := ed25519.Sign(s.cfg.Key, proto.ProbePayload(h.Nonce, s.fp))
	st.SetWriteDeadline(time.Now().Add(30 * time.Second))
	if err := proto.WriteRelayFrame(st, &proto.RelayReply{OK: true, Signature: base64.StdEncoding.EncodeToString(sig)}); err != nil {
		st.CancelWrite(0)
		return
	}
	for left := h.Bytes; left > 0; {
		n := min(left, len(probeChunk))
		if _, err := st.Write(probeChunk[:n]); err != nil {
			st.CancelWrite(0)
			return
		}
		left -= n
	}
	st.Close()
	io.Copy(io.Discard, io.LimitReader(st, 1<<10)) // until the prober closes
}

// streamConn is a QUIC relay stream seen as a TCP connection by the TURN
// server (internal/relayconn does the framing). Its RemoteAddr carries the
// client's IP with a synthetic port unique among live streams, because
// pion identifies an allocation by its 5-tuple and one QUIC connection may
// carry several allocations. With datagrams, ChannelData never reaches
// pion: onDatagram forwards it to the peer, and the allocation's relay
// socket sends the peers' packets back as datagrams (relayConn.ReadFrom).
type streamConn struct {
	*relayconn.Conn
	s     *Server
	addr  netip.AddrPort // the synthetic address
	user  string
	relay atomic.Pointer[relayConn] // the stream's allocation, once made
	once  sync.Once
}

// Synthetic source ports come from below Linux's ephemeral range, so they
// rarely equal a real TCP client's port (a clash could only make the
// token-user check refuse a TCP client, never admit anyone).
const synthPortMin, synthPortMax = 1024, 32767

func (s *Server) newStreamConn(conn *quic.Conn, mux *relayconn.Mux, st *quic.Stream, user string) (*streamConn, *proto.Error) {
	rip := addrPort(conn.RemoteAddr()).Addr()
	lap := addrPort(conn.LocalAddr())
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.streamConns) >= synthPortMax-synthPortMin {
		s.stats.sessionsFull.Add(1)
		return nil, proto.Errorf(proto.CodeOverBudget, "supernode %s has no stream slots left", s.cfg.Name)
	}
	var ap netip.AddrPort
	for {
		s.nextPort++
		if s.nextPort < synthPortMin || s.nextPort > synthPortMax {
			s.nextPort = synthPortMin
		}
		ap = netip.AddrPortFrom(rip, s.nextPort)
		if _, used := s.streamConns[ap]; !used {
			break
		}
	}
	sc := &streamConn{s: s, user: user, addr: ap}
	// Direct mode: pion's read loop reads the stream itself (no goroutine
	// or queue of ours), and datagrams go to onDatagram.
	sc.Conn = relayconn.NewWith(st, mux, &s.relayCtr, net.TCPAddrFromAddrPort(lap), net.TCPAddrFromAddrPort(ap),
		relayconn.Options{OnDatagram: sc.onDatagram})
	s.streamConns[ap] = sc
	return sc, nil
}

// onDatagram forwards a client's ChannelData datagram to the peer its
// channel is bound to (the Mux's goroutine; no copy, no allocation).
// ChannelData for no bound channel is dropped, as pion would.
func (sc *streamConn) onDatagram(msg []byte) {
	if len(msg) >= channelDataHeader {
		num, l := binary.BigEndian.Uint16(msg), int(binary.BigEndian.Uint16(msg[2:]))
		if c := sc.relay.Load(); c != nil && channelDataHeader+l <= len(msg) {
			if ch := c.chans.Load().byNum[num]; ch != nil {
				c.sendToPeer(msg[channelDataHeader:channelDataHeader+l], ch, time.Now())
				return
			}
		}
	}
	sc.s.stats.unboundDatagrams.Add(1)
}

// sendChannelData sends buf[relayHeadroom:] (a peer's datagram) to the
// client as ChannelData on number, writing the headers into the headroom
// and the padding after it (buf must have room for 3 more bytes).
func (sc *streamConn) sendChannelData(buf []byte, number uint16) {
	buf = putChannelData(buf, number)
	if err := sc.WriteChannelData(buf[relayHeadroom-channelDataHeader-relayconn.Headroom:]); err != nil {
		sc.s.stats.sendErrors.Add(1)
	}
}

// streamUser returns the token user of the stream whose synthetic address is a.
func (s *Server) streamUser(a net.Addr) (string, bool) {
	ap := addrPort(a)
	s.mu.Lock()
	defer s.mu.Unlock()
	if sc, ok := s.streamConns[ap]; ok {
		return sc.user, true
	}
	return "", false
}

// Close ends both directions of the stream, frees its address and any
// reservation it still holds.
func (c *streamConn) Close() error {
	c.once.Do(func() {
		c.s.mu.Lock()
		delete(c.s.streamConns, c.addr)
		c.s.mu.Unlock()
		c.s.release(c.addr, false)
		c.Conn.Close()
	})
	return nil
}

// streamListener hands accepted relay streams to the TURN server as a
// net.Listener.
type streamListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newStreamListener(addr net.Addr) *streamListener {
	return &streamListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *streamListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *streamListener) Addr() net.Addr { return l.addr }
