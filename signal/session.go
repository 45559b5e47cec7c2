package signal

import (
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
	"golang.org/x/time/rate"
)

// session is one WebSocket connection. Its read goroutine owns reads and
// protocol handling. Writes go through a queue drained by a writer
// goroutine that runs only while there is something to write, so an idle
// connection costs one goroutine.
//
// A client is disconnected as too slow when a write to it stalls for
// Config.WriteTimeout (it stopped reading), or when what waits for it
// exceeds Config.SendQueue frames or Config.SendQueueBytes: never because
// the server itself fell behind for a moment.
type session struct {
	srv      *Server
	conn     *websocket.Conn
	remote   string
	id       string
	since    int64         // creation, unix ms (orders sessions of one name across nodes)
	pingSlot uint8         // which part of each PingInterval it is pinged in (server.go)
	limiter  *rate.Limiter // what the client starts
	replies  *rate.Limiter // what it sends in answer to others, past limiter (limits.go); read goroutine only
	inbound  *rate.Limiter // what everyone sends it together (limits.go)
	done     chan struct{}

	challenge string

	// Set once by the read goroutine at auth, then read-only.
	name string
	key  string
	enc  encBinding // encryption key announced (or kept) for sealed messages

	used       atomic.Bool  // the name was used (a second sign-in, a message sent)
	lastTalked atomic.Value // string: the last peer watches.talked saw, to skip the lock

	watch sessWatch // presence watches, guarded by srv.watches.mu (presence.go)

	qmu       sync.Mutex // guards the queue fields below
	q         [][]byte   // frames to write; nil entries are pings
	qBytes    int
	writing   bool // a writer goroutine is draining q
	closing   bool // fail was called: write what is queued, then close
	closeErr  *proto.Error
	closeCode int

	mu         sync.Mutex // guards the fields below
	status     proto.Status
	nat        *proto.NATReport
	violations int
	replaced   bool              // another session of the same identity took over
	mail       map[string]uint64 // sealed messages delivered: "from/id" -> stream sequence
}

func newSession(s *Server, conn *websocket.Conn, remote string) *session {
	return &session{
		srv:       s,
		conn:      conn,
		remote:    remote,
		id:        newID(),
		since:     time.Now().UnixMilli(),
		pingSlot:  uint8(rand.IntN(pingSlots)),
		limiter:   rate.NewLimiter(rate.Limit(s.cfg.RateLimit), s.cfg.RateBurst),
		inbound:   rate.NewLimiter(rate.Limit(s.cfg.RecipientRate), s.cfg.RecipientBurst),
		done:      make(chan struct{}),
		challenge: newChallenge(),
		status:    proto.StatusOnline,
	}
}

// fail ends the session: the writer sends what is queued, perr (if any)
// and a close frame with code, then closes the connection. Safe to call
// from any goroutine, more than once.
func (ss *session) fail(perr *proto.Error, code int) {
	ss.qmu.Lock()
	if ss.closing {
		ss.qmu.Unlock()
		return
	}
	ss.closing = true
	ss.closeErr, ss.closeCode = perr, code
	start := !ss.writing
	ss.writing = true
	ss.qmu.Unlock()
	close(ss.done)
	if start {
		ss.srv.wg.Add(1)
		go ss.writeLoop()
	}
}

// enqueue queues a frame for the writer (nil: a ping). A client that lets
// too much pile up is disconnected rather than allowed to hold memory.
func (ss *session) enqueue(frame []byte) bool {
	cfg := &ss.srv.cfg
	ss.qmu.Lock()
	if ss.closing {
		ss.qmu.Unlock()
		return false
	}
	if len(ss.q) >= cfg.SendQueue || ss.qBytes+len(frame) > cfg.SendQueueBytes {
		n, b := len(ss.q), ss.qBytes
		ss.qmu.Unlock()
		ss.srv.stats.slowClients.Add(1)
		ss.srv.log.Warn("signal: client too slow, disconnecting", "user", ss.name, "remote", ss.remote, "frames", n, "bytes", b)
		ss.fail(proto.Errorf(proto.CodeRateLimited, "too far behind reading (%d frames, %d bytes waiting)", n, b), websocket.ClosePolicyViolation)
		return false
	}
	ss.q = append(ss.q, frame)
	ss.qBytes += len(frame)
	start := !ss.writing
	ss.writing = true
	ss.qmu.Unlock()
	if start {
		ss.srv.wg.Add(1)
		go ss.writeLoop()
	}
	return true
}

// queued is how many frames wait for the writer.
func (ss *session) queued() int {
	ss.qmu.Lock()
	defer ss.qmu.Unlock()
	return len(ss.q)
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

// writeLoop drains the queue and exits when it is empty; after fail it
// writes what is left, the closing error and the close frame.
func (ss *session) writeLoop() {
	defer ss.srv.wg.Done()
	wt := ss.srv.cfg.WriteTimeout
	for {
		ss.qmu.Lock()
		batch := ss.q
		ss.q, ss.qBytes = nil, 0
		closing := ss.closing
		if len(batch) == 0 && !closing {
			ss.writing = false
			ss.qmu.Unlock()
			return
		}
		ss.qmu.Unlock()
		if closing {
			ss.flushAndClose(batch)
			return
		}
		for i, b := range batch {
			var err error
			if b == nil {
				err = ss.conn.WriteControl(websocket.PingMessage, nil, time.Now().Add(wt))
			} else {
				ss.conn.SetWriteDeadline(time.Now().Add(wt))
				err = ss.conn.WriteMessage(websocket.TextMessage, b)
			}
			batch[i] = nil
			if err != nil {
				if isTimeout(err) {
					ss.srv.stats.slowClients.Add(1)
					ss.srv.log.Warn("signal: client stopped reading, disconnecting", "user", ss.name, "remote", ss.remote, "after", wt)
				}
				ss.fail(nil, 0)
				ss.conn.Close()
				ss.qmu.Lock()
				ss.q = nil
				ss.qmu.Unlock()
				return // writing stays true: no other writer starts
			}
		}
	}
}

// flushAndClose writes batch and anything queued after it, the closing
// error and a close frame, within a second, then closes the connection.
func (ss *session) flushAndClose(batch [][]byte) {
	deadline := time.Now().Add(time.Second)
	ss.conn.SetWriteDeadline(deadline)
	for len(batch) > 0 {
		for _, b := range batch {
			if b == nil {
				continue
			}
			if ss.conn.WriteMessage(websocket.TextMessage, b) != nil {
				ss.conn.Close()
				return
			}
		}
		ss.qmu.Lock()
		batch = ss.q
		ss.q = nil
		ss.qmu.Unlock()
	}
	ss.qmu.Lock()
	perr, code := ss.closeErr, ss.closeCode
	ss.qmu.Unlock()
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
	idle := 3 * s.cfg.PingInterval
	nc := ss.conn.NetConn()
	r := &frameReader{conn: nc, max: proto.MaxFrameSize, // wsread.go
		onPong: func() { nc.SetReadDeadline(time.Now().Add(idle)) },
		onPing: func(p []byte) { ss.conn.WriteControl(websocket.PongMessage, p, time.Now().Add(s.cfg.WriteTimeout)) },
	}
	nc.SetReadDeadline(time.Now().Add(s.cfg.AuthTimeout))

	hello, _ := proto.New(proto.TypeHello, "", "", &proto.Hello{Challenge: ss.challenge, Server: "parley", Version: proto.Version})
	ss.sendEnv(hello)

	for {
		// Idle sessions wait here, in a shallow call (their stacks shrink).
		op, data, err := r.next()
		if err != nil {
			ss.readFailed(err)
			return
		}
		if ss.name != "" {
			nc.SetReadDeadline(time.Now().Add(idle))
		}
		if !ss.onMessage(op, data) {
			return
		}
	}
}

// onMessage handles one message from the client; false ends the session.
func (ss *session) onMessage(op ws.OpCode, data []byte) bool {
	s := ss.srv
	s.stats.framesIn.Add(1)
	if op != ws.OpText {
		ss.violation(proto.Errorf(proto.CodeBadFrame, "binary frames are not part of the protocol"), "")
		return true
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
		if ss.name == "" || env == nil || !isReply(env.Type) {
			ss.violation(proto.Errorf(proto.CodeRateLimited, "more than %.0f messages per second", s.cfg.RateLimit), ref)
			return true
		}
		// A receipt or answer to what others sent: never a violation (a
		// flood at this user must not get it closed through its own
		// replies), limited on its own (limits.go).
		if ss.replies == nil {
			ss.replies = rate.NewLimiter(replyRate, replyBurst) // made when first needed
		}
		if !ss.replies.Allow() {
			s.stats.droppedReplies.Add(1)
			return true
		}
	}
	if err != nil {
		s.stats.badFrames.Add(1)
		ref := ""
		if env != nil && proto.ValidateID(env.ID) == nil {
			ref = env.ID
		}
		ss.violation(asProtoErr(err), ref)
		return true
	}
	if ss.name == "" {
		if !ss.handleAuth(env) {
			return false
		}
		ss.conn.NetConn().SetReadDeadline(time.Now().Add(3 * s.cfg.PingInterval))
		return true
	}
	ss.handle(env)
	select {
	case <-ss.done:
		return false
	default:
		return true
	}
}

// readFailed turns a read error into the right close.
func (ss *session) readFailed(err error) {
	switch {
	case errors.Is(err, errFrameTooLarge):
		ss.srv.stats.badFrames.Add(1)
		ss.fail(proto.Errorf(proto.CodeTooLarge, "frame exceeds %d bytes", proto.MaxFrameSize), websocket.CloseMessageTooBig)
	case ss.name == "" && isTimeout(err):
		ss.fail(proto.Errorf(proto.CodeUnauthenticated, "no auth within %s", ss.srv.cfg.AuthTimeout), websocket.ClosePolicyViolation)
	case errors.As(err, new(ws.ProtocolError)):
		ss.srv.stats.badFrames.Add(1)
		ss.fail(proto.Errorf(proto.CodeBadFrame, "%v", err), websocket.CloseProtocolError)
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

// cleanup runs when the read loop ends: the session leaves this node's
// table and, unless another session of the same identity replaced it,
// its user is written offline.
func (ss *session) cleanup() {
	ss.fail(nil, websocket.CloseNormalClosure)
	s := ss.srv
	if ss.name == "" {
		s.mu.Lock()
		delete(s.all, ss)
		s.mu.Unlock()
		return
	}
	pl := s.presLock(ss.name)
	pl.Lock()
	defer pl.Unlock()
	s.mu.Lock()
	delete(s.all, ss)
	wasCurrent := s.local[ss.name] == ss
	if wasCurrent {
		delete(s.local, ss.name)
	}
	shuttingDown := s.closed // Close is ending every session: nobody "went offline"
	s.mu.Unlock()
	s.sn.sessionGone(ss) // a supernode's connection closed: demote (supernodes.go)
	if !wasCurrent {
		return
	}
	s.router.unsubscribe(ss.name)
	s.watches.sessionGone(ss)
	now := time.Now().UnixMilli()
	ss.mu.Lock()
	replaced := ss.replaced
	ss.mu.Unlock()
	if replaced {
		// Kicked by a newer session on another node, which writes its
		// own record; if it never does (it died at once), write offline
		// after a while.
		time.AfterFunc(replacedGrace, func() { s.users.sessionEnded(ss.name, ss.id, now, ss.used.Load()) })
	} else {
		s.users.sessionEnded(ss.name, ss.id, now, ss.used.Load())
		if !shuttingDown {
			// While this node shuts down it tells no one here that the
			// others went offline: they did not, the server did, and a
			// client that hears it first would take a restart for its
			// peers leaving (issue 12). Other nodes of a cluster do hear
			// it (the record), as they do the node's goodbye.
			p := ss.presence(proto.StatusOffline)
			p.LastSeen = now
			s.localChanged(ss.name, p)
		}
	}
	s.log.Info("signal: user offline", "user", ss.name, "remote", ss.remote)
}

// replacedGrace is how long a session replaced from another node waits
// before writing its user offline, should the new one never write online.
const replacedGrace = 5 * time.Second

// presence describes ss's user with status st: identity key and
// encryption key with its binding, so peers can seal to them.
func (ss *session) presence(st proto.Status) proto.Presence {
	p := proto.Presence{Name: ss.name, Status: st, PublicKey: ss.key, EncKey: ss.enc.Key, EncSig: ss.enc.Sig}
	if st != proto.StatusOffline {
		p.NAT = ss.natType()
	}
	return p
}

// natType is the type of NAT ss last reported, if any.
func (ss *session) natType() proto.NATType {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.nat == nil || ss.nat.Type == proto.NATUnknown {
		return ""
	}
	return ss.nat.Type
}
