package signal

import (
	"errors"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
	"golang.org/x/time/rate"
)

// session is one WebSocket connection. Its readLoop owns reads and protocol
// handling; its writeLoop owns writes. fail ends both.
type session struct {
	srv     *Server
	conn    *websocket.Conn
	remote  string
	id      string
	limiter *rate.Limiter
	send    chan []byte
	done    chan struct{}

	challenge string

	// Set once by the readLoop at auth, then read-only.
	name string
	key  string
	enc  encBinding // encryption key for sealed messages (offline.go)

	mu         sync.Mutex // guards the fields below
	status     proto.Status
	nat        *proto.NATReport
	closeErr   *proto.Error
	closeCode  int
	failed     bool
	violations int
}

func newSession(s *Server, conn *websocket.Conn, remote string) *session {
	return &session{
		srv:       s,
		conn:      conn,
		remote:    remote,
		id:        newID(),
		limiter:   rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst),
		send:      make(chan []byte, s.cfg.SendQueue),
		done:      make(chan struct{}),
		challenge: newChallenge(),
		status:    proto.StatusOnline,
	}
}

// fail ends the session: the writer sends perr (if any) and a close frame
// with code, then closes the connection. Safe to call from any goroutine.
func (ss *session) fail(perr *proto.Error, code int) {
	ss.mu.Lock()
	if ss.failed {
		ss.mu.Unlock()
		return
	}
	ss.failed = true
	ss.closeErr, ss.closeCode = perr, code
	ss.mu.Unlock()
	close(ss.done)
}

// enqueue queues a frame for the writer. A client too slow to keep up is
// disconnected rather than allowed to hold memory.
func (ss *session) enqueue(frame []byte) bool {
	select {
	case <-ss.done:
		return false
	default:
	}
	select {
	case ss.send <- frame:
		return true
	default:
		ss.srv.stats.slowClients.Add(1)
		ss.srv.log.Warn("signal: client too slow, disconnecting", "user", ss.name, "remote", ss.remote)
		ss.fail(proto.Errorf(proto.CodeRateLimited, "too far behind reading"), websocket.ClosePolicyViolation)
		return false
	}
}

// sendEnv encodes and queues env.
func (ss *session) sendEnv(env *proto.Envelope) bool {
	b, err := proto.Encode(env)
	if err != nil {
		ss.srv.log.Error("signal: encode", "type", env.Type, "err", err)
		return false
	}
	return ss.enqueue(b)
}

// sendError queues an error frame referring to envelope id ref.
func (ss *session) sendError(perr *proto.Error, ref string) {
	e := *perr
	e.Ref = ref
	ss.srv.stats.errorsSent.Add(1)
	env, err := proto.New(proto.TypeError, "", "", &e)
	if err != nil {
		return
	}
	ss.sendEnv(env)
}

// violation records a protocol or rate violation and closes the session
// once there have been too many.
func (ss *session) violation(perr *proto.Error, ref string) {
	ss.sendError(perr, ref)
	ss.mu.Lock()
	ss.violations++
	n := ss.violations
	ss.mu.Unlock()
	if n >= ss.srv.cfg.MaxViolations {
		ss.fail(proto.Errorf(proto.CodeRateLimited, "too many bad messages (%d); closing", n), websocket.ClosePolicyViolation)
	}
}

func (ss *session) writeLoop() {
	defer ss.srv.wg.Done()
	ping := time.NewTicker(ss.srv.cfg.PingInterval)
	defer ping.Stop()
	wt := ss.srv.cfg.WriteTimeout
	for {
		select {
		case b := <-ss.send:
			ss.conn.SetWriteDeadline(time.Now().Add(wt))
			if err := ss.conn.WriteMessage(websocket.TextMessage, b); err != nil {
				ss.fail(nil, 0)
				ss.conn.Close()
				return
			}
		case <-ping.C:
			if err := ss.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wt)); err != nil {
				ss.fail(nil, 0)
				ss.conn.Close()
				return
			}
		case <-ss.done:
			ss.flushAndClose()
			return
		}
	}
}

// flushAndClose writes what is queued, the closing error and a close frame.
func (ss *session) flushAndClose() {
	deadline := time.Now().Add(time.Second)
	ss.conn.SetWriteDeadline(deadline)
	for {
		select {
		case b := <-ss.send:
			if ss.conn.WriteMessage(websocket.TextMessage, b) != nil {
				ss.conn.Close()
				return
			}
			continue
		default:
		}
		break
	}
	ss.mu.Lock()
	perr, code := ss.closeErr, ss.closeCode
	ss.mu.Unlock()
	if perr != nil {
		if env, err := proto.New(proto.TypeError, "", "", perr); err == nil {
			if b, err := proto.Encode(env); err == nil {
				ss.conn.WriteMessage(websocket.TextMessage, b)
			}
		}
	}
	if code != 0 {
		msg := ""
		if perr != nil {
			msg = string(perr.Code)
		}
		ss.conn.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, msg), deadline)
	}
	ss.conn.Close()
}

func (ss *session) readLoop() {
	s := ss.srv
	defer s.wg.Done()
	defer ss.cleanup()
	ss.conn.SetReadLimit(proto.MaxFrameSize)
	idle := 3 * s.cfg.PingInterval
	ss.conn.SetPongHandler(func(string) error {
		ss.conn.SetReadDeadline(time.Now().Add(idle))
		return nil
	})
	ss.conn.SetReadDeadline(time.Now().Add(s.cfg.AuthTimeout))

	hello, _ := proto.New(proto.TypeHello, "", "", &proto.Hello{Challenge: ss.challenge, Server: "parley", Version: proto.Version})
	ss.sendEnv(hello)

	for {
		mt, data, err := ss.conn.ReadMessage()
		if err != nil {
			ss.readFailed(err)
			return
		}
		if ss.name != "" {
			ss.conn.SetReadDeadline(time.Now().Add(idle))
		}
		s.stats.framesIn.Add(1)
		if mt != websocket.TextMessage {
			ss.violation(proto.Errorf(proto.CodeBadFrame, "binary frames are not part of the protocol"), "")
			continue
		}
		env, err := proto.Decode(data)
		if !ss.limiter.Allow() {
			// Refused with the frame's id, so the client knows which of
			// its requests to send again.
			ref := ""
			if env != nil && proto.ValidateID(env.ID) == nil {
				ref = env.ID
			}
			s.stats.rateLimited.Add(1)
			ss.violation(proto.Errorf(proto.CodeRateLimited, "more than %.0f messages per second", s.cfg.RateLimit), ref)
			continue
		}
		if err != nil {
			s.stats.badFrames.Add(1)
			ref := ""
			if env != nil && proto.ValidateID(env.ID) == nil {
				ref = env.ID
			}
			ss.violation(asProtoErr(err), ref)
			continue
		}
		if ss.name == "" {
			if !ss.handleAuth(env) {
				return
			}
			ss.conn.SetReadDeadline(time.Now().Add(idle))
			continue
		}
		ss.handle(env)
		select {
		case <-ss.done:
			return
		default:
		}
	}
}

// readFailed turns a read error into the right close.
func (ss *session) readFailed(err error) {
	switch {
	case errors.Is(err, websocket.ErrReadLimit):
		ss.srv.stats.badFrames.Add(1)
		ss.fail(proto.Errorf(proto.CodeTooLarge, "frame exceeds %d bytes", proto.MaxFrameSize), websocket.CloseMessageTooBig)
	case ss.name == "" && isTimeout(err):
		ss.fail(proto.Errorf(proto.CodeUnauthenticated, "no auth within %s", ss.srv.cfg.AuthTimeout), websocket.ClosePolicyViolation)
	default:
		ss.fail(nil, websocket.CloseNormalClosure)
	}
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func asProtoErr(err error) *proto.Error {
	var pe *proto.Error
	if errors.As(err, &pe) {
		return pe
	}
	return proto.Errorf(proto.CodeInternal, "%v", err)
}

// cleanup runs when the read loop ends: logs the user out and waits for
// the writer to finish.
func (ss *session) cleanup() {
	ss.fail(nil, websocket.CloseNormalClosure)
	s := ss.srv
	s.mu.Lock()
	delete(s.all, ss)
	wasOnline := ss.name != "" && s.online[ss.name] == ss
	shuttingDown := s.closed // Close is ending every session: nobody "went offline"
	now := time.Now().UnixMilli()
	if wasOnline {
		delete(s.online, ss.name)
		s.lastSeen[ss.name] = now
	}
	s.mu.Unlock()
	if wasOnline {
		if err := s.reg.SetLastSeen(ss.name, now); err != nil {
			s.log.Warn("signal: record last seen", "user", ss.name, "err", err)
		}
	}
	if ss.name != "" {
		s.sn.sessionGone(ss) // a supernode's connection closed: demote (supernodes.go)
	}
	if wasOnline && !shuttingDown {
		// While the server shuts down it tells no one that the others went
		// offline: they did not, the server did, and a client that hears it
		// first would take a restart for its peers leaving (issue 12).
		s.log.Info("signal: user offline", "user", ss.name, "remote", ss.remote)
		p := ss.presence(proto.StatusOffline)
		p.LastSeen = time.Now().UnixMilli()
		s.broadcastPresence(ss, p)
	}
}
