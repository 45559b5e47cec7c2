package client

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// sigConn is one signaling WebSocket: a writer goroutine drains out.
type sigConn struct {
	ws        *websocket.Conn
	out       chan []byte
	done      chan struct{}
	closeOnce sync.Once
}

func (s *sigConn) close() {
	s.closeOnce.Do(func() {
		close(s.done)
		s.ws.Close()
	})
}

func (s *sigConn) writeLoop() {
	for {
		select {
		case b := <-s.out:
			s.ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
			if err := s.ws.WriteMessage(websocket.TextMessage, b); err != nil {
				s.close()
				return
			}
		case <-s.done:
			return
		}
	}
}

type sigEventKind int

const (
	sigConnected sigEventKind = iota
	sigMessage
	sigLost
	sigFatal
)

type sigEvent struct {
	kind    sigEventKind
	conn    *sigConn
	welcome *proto.Welcome
	env     *proto.Envelope
	err     error
	retry   time.Duration
}

// dialLoop connects, signs in, reads until the connection drops, and
// retries with jittered exponential backoff until ctx is done.
func (c *Client) dialLoop(ctx context.Context, events chan<- sigEvent) {
	backoff := c.cfg.ReconnectMin
	// With several nodes (Config.Servers), a lost connection moves to the
	// next node at once; the backoff runs only after a round of failures.
	next, failed := 0, 0
	post := func(ev sigEvent) bool {
		select {
		case events <- ev:
			return true
		case <-ctx.Done():
			return false
		}
	}
	for ctx.Err() == nil {
		url := c.cfg.Servers[next%len(c.cfg.Servers)]
		next++
		conn, welcome, err := c.connect(ctx, url)
		if err == nil {
			backoff, failed = c.cfg.ReconnectMin, 0
			if !post(sigEvent{kind: sigConnected, conn: conn, welcome: welcome}) {
				conn.close()
				return
			}
			// A connection made just as Run stops may never reach the
			// loop (whose shutdown closes the ones it knows): close it
			// when ctx ends, or the read below waits forever.
			stop := context.AfterFunc(ctx, conn.close)
			err = c.readLoop(ctx, conn, post)
			stop()
			conn.close()
		}
		if ctx.Err() != nil {
			return
		}
		var pe *proto.Error
		if errors.As(err, &pe) && (pe.Code == proto.CodeNameTaken || pe.Code == proto.CodeBadName) {
			post(sigEvent{kind: sigFatal, err: err})
			return
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		if failed++; failed < len(c.cfg.Servers) {
			wait = 0 // another node may answer at once
		}
		c.log.Info("client: signaling lost, retrying", "err", err, "in", wait, "next", c.cfg.Servers[next%len(c.cfg.Servers)])
		if !post(sigEvent{kind: sigLost, err: err, retry: wait}) {
			return
		}
		if wait == 0 {
			continue
		}
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return
		}
		backoff = min(backoff*2, c.cfg.ReconnectMax)
		failed = 0
	}
}

// connect dials url and completes the hello/auth/welcome handshake.
func (c *Client) connect(ctx context.Context, url string) (*sigConn, *proto.Welcome, error) {
	ws, w, err := sigdial.SignIn(ctx, sigdial.Options{
		URL:   url,
		Dial:  c.cfg.Dial,
		TLS:   c.cfg.TLS,
		Agent: c.cfg.Agent,
		Auth: func(challenge string) *proto.Auth {
			auth := proto.SignAuth(c.cfg.Key, challenge, c.cfg.Name)
			auth.NAT = c.cfg.NATReport
			auth.EncKey, auth.EncSig = proto.SignEncKey(c.cfg.Key, c.cfg.Name, c.cfg.EncKey.PublicKey().Bytes()) // offline.go
			return auth
		},
	})
	if err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			return nil, nil, pe
		}
		return nil, nil, fmt.Errorf("client: %w", err)
	}
	sc := &sigConn{ws: ws, out: make(chan []byte, 256), done: make(chan struct{})}
	go sc.writeLoop()
	return sc, w, nil
}

// readLoop forwards frames to the loop until the connection fails. The
// server pings; a connection silent for a minute is dead.
func (c *Client) readLoop(ctx context.Context, sc *sigConn, post func(sigEvent) bool) error {
	const idle = 75 * time.Second
	sc.ws.SetReadDeadline(time.Now().Add(idle))
	sc.ws.SetPingHandler(func(data string) error {
		sc.ws.SetReadDeadline(time.Now().Add(idle))
		return sc.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	var closeErr error
	for {
		_, data, err := sc.ws.ReadMessage()
		if err != nil {
			if closeErr != nil {
				return closeErr
			}
			return err
		}
		sc.ws.SetReadDeadline(time.Now().Add(idle))
		env, err := proto.Decode(data)
		if err != nil {
			c.log.Warn("client: bad frame from server", "err", err)
			continue
		}
		if env.Type == proto.TypeError && env.ID == "" {
			// An error not tied to a request may precede a close
			// (replaced, shutting_down): remember it as the reason.
			if pe, err := proto.DecodeBody[*proto.Error](env); err == nil && pe.Ref == "" {
				closeErr = pe
			}
		}
		if !post(sigEvent{kind: sigMessage, conn: sc, env: env}) {
			return ctx.Err()
		}
	}
}

// onSigEvent handles signaling events on the loop.
func (c *Client) onSigEvent(ev sigEvent) {
	switch ev.kind {
	case sigConnected:
		if c.sig != nil {
			c.sig.close()
		}
		c.sig = ev.conn
		c.signedIn = true
		c.iceServers = toWebRTCServers(ev.welcome.ICEServers)
		reconnect := c.everReady
		c.everReady = true
		c.events.push(ReadyEvent{Name: ev.welcome.Name, Reconnect: reconnect})
		for _, p := range ev.welcome.Online { // servers from before contacts
			c.setPresence(p)
		}
		c.contactsOnSignIn(ev.welcome) // contacts.go
		c.chatOnReconnect()
		c.natOnSignIn()
	case sigMessage:
		if ev.conn != c.sig {
			return // from a connection we already replaced
		}
		c.onEnvelope(ev.env)
	case sigLost:
		c.sig = nil
		c.signedIn = false
		for id, w := range c.waiters {
			delete(c.waiters, id)
			w.done(ErrNotSignedIn)
		}
		c.events.push(DisconnectedEvent{Err: ev.err, Retry: ev.retry.Round(time.Millisecond).String()})
	case sigFatal:
		var pe *proto.Error
		if errors.As(ev.err, &pe) {
			c.events.push(ErrorEvent{Err: pe})
		}
		c.log.Error("client: cannot sign in", "err", ev.err)
		c.fatal = &signInError{name: c.cfg.Name, err: ev.err}
		c.Close()
	}
}

// waiter is a request awaiting the server's ack or error.
type waiter struct {
	done func(error)
	sent time.Time
}

// waiterTimeout is how long a request may wait for the server's answer
// before it counts as failed (ErrNoAnswer): an answer the server never
// sent must not leave a message in flight forever.
const waiterTimeout = 20 * time.Second

// waitersTick fails requests the server never answered (loop goroutine).
func (c *Client) waitersTick(now time.Time) {
	for id, w := range c.waiters {
		if now.Sub(w.sent) > waiterTimeout {
			delete(c.waiters, id)
			w.done(ErrNoAnswer)
		}
	}
}

// sendSig sends a message to the server (to "" ) or, routed, to a user.
func (c *Client) sendSig(t proto.Type, to string, b proto.Body) error {
	return c.sendSigID(t, "", to, b, nil)
}

// sendSigID sends with an id; done (if set) is called with nil when the
// server acks it or with the error it answers.
func (c *Client) sendSigID(t proto.Type, id, to string, b proto.Body, done func(error)) error {
	if c.sig == nil {
		return ErrNotSignedIn
	}
	env, err := proto.New(t, id, to, b)
	if err != nil {
		return err
	}
	raw, err := proto.Encode(env)
	if err != nil {
		return err
	}
	select {
	case c.sig.out <- raw:
	default:
		return fmt.Errorf("client: signaling queue full")
	}
	if id != "" && done != nil {
		c.waiters[id] = waiter{done: done, sent: time.Now()}
	}
	return nil
}

// onEnvelope dispatches a frame from the server (loop goroutine).
func (c *Client) onEnvelope(env *proto.Envelope) {
	switch env.Type {
	case proto.TypeAck:
		a, err := proto.DecodeBody[*proto.Ack](env)
		if err == nil {
			if w, ok := c.waiters[a.Ref]; ok {
				delete(c.waiters, a.Ref)
				w.done(nil)
			}
		}
	case proto.TypeError:
		pe, err := proto.DecodeBody[*proto.Error](env)
		if err != nil {
			return
		}
		if w, ok := c.waiters[pe.Ref]; pe.Ref != "" && ok {
			delete(c.waiters, pe.Ref)
			w.done(pe)
			return
		}
		c.events.push(ErrorEvent{Err: pe, Ref: pe.Ref})
	case proto.TypePresence:
		p, err := proto.DecodeBody[*proto.Presence](env)
		if err == nil && p.Name != "" {
			c.setPresence(*p)
		}
	case proto.TypePresenceList:
		c.onPresenceList(env) // contacts.go
	case proto.TypeDirectoryPage:
		c.onDirectoryPage(env)
	case proto.TypeSupernodes:
		c.onSupernodes(env) // relay.go
	case proto.TypeOffer, proto.TypeAnswer, proto.TypeCandidate, proto.TypeBye, proto.TypeRestart:
		c.onLinkSignal(env)
	case proto.TypeRing, proto.TypeAccept, proto.TypeDecline, proto.TypeHangup:
		c.onCallSignal(env)
	case proto.TypeChat, proto.TypeDelivered, proto.TypeRead, proto.TypeTyping:
		c.onServerChat(env)
	case proto.TypeSealed, proto.TypeSealedReceipt:
		c.onSealed(env) // offline.go
	case proto.TypeFile:
		if ctl, err := proto.DecodeBody[*proto.FileControl](env); err == nil && env.From != "" {
			c.onFileCtl(env.From, ctl) // files.go
		}
	default:
		c.log.Debug("client: ignoring", "type", env.Type)
	}
}

// setPresence records p, emits it, and tears down what a departed user leaves.
func (c *Client) setPresence(p proto.Presence) {
	if p.Name == c.cfg.Name {
		return
	}
	delete(c.contacts.stale, p.Name) // confirmed after a reconnect (contacts.go)
	old, had := c.presence[p.Name]
	if p.PublicKey == "" && had {
		p.PublicKey = old.PublicKey // an entry without keys keeps what we knew
	}
	if p.EncKey == "" && had && p.PublicKey == old.PublicKey {
		p.EncKey, p.EncSig = old.EncKey, old.EncSig
	}
	c.presence[p.Name] = p
	if p.Online() {
		delete(c.unconfirmed, p.Name)
	}
	if had && old.Status == p.Status && old.PublicKey == p.PublicKey {
		return // a changed key is news even when the status is not
	}
	c.events.push(PresenceEvent{Presence: p})
	if p.Online() && (!had || !old.Online()) {
		c.chatPeerOnline(p.Name) // chat.go: messages held for a full mailbox go now
	}
	if !p.Online() && !c.callUp(p.Name) {
		// A call whose media flows keeps its link whatever the server
		// says: it does not depend on the server, and a dead peer's link
		// fails by itself (consent checks), or a restarted peer answers
		// "gone" to the resume ring once the path is back (call.go). A
		// link without a call goes: a peer that restarted makes a new one.
		if _, ok := c.calls[p.Name]; ok {
			c.endCallCode(p.Name, proto.EndOffline, p.Name+" went offline", "", false)
		}
		if l := c.links[p.Name]; l != nil {
			c.closeLink(p.Name, l, "peer offline", false)
		}
	}
}

// callUp reports whether a call with peer has media on a connected link.
func (c *Client) callUp(peer string) bool {
	k := c.calls[peer]
	return k != nil && k.state == CallConnected && c.linkUp(peer)
}

// linkUp reports whether the link to peer is connected now (loop goroutine).
func (c *Client) linkUp(peer string) bool {
	l := c.links[peer]
	return l != nil && l.state == webrtc.PeerConnectionStateConnected
}

// linkGone is called when the link to peer closed: a peer whose presence
// was left unknown after our reconnect (its link was up) is offline now.
func (c *Client) linkGone(peer string) {
	if !c.unconfirmed[peer] {
		return
	}
	delete(c.unconfirmed, peer)
	if p, ok := c.presence[peer]; ok && p.Online() {
		c.setPresence(proto.Presence{Name: peer, Status: proto.StatusOffline, PublicKey: p.PublicKey, LastSeen: time.Now().UnixMilli()})
	}
}

func toWebRTCServers(in []proto.ICEServer) []webrtc.ICEServer {
	out := make([]webrtc.ICEServer, 0, len(in))
	for _, s := range in {
		out = append(out, webrtc.ICEServer{URLs: s.URLs, Username: s.Username, Credential: s.Credential})
	}
	return out
}

// signInError says in words why the server refused us for good; it
// unwraps to ErrCannotSignIn and the server's *proto.Error.
type signInError struct {
	name string
	err  error
}

func (e *signInError) Error() string {
	var pe *proto.Error
	if errors.As(e.err, &pe) && pe.Message != "" {
		return fmt.Sprintf("cannot sign in as %q: %s", e.name, pe.Message)
	}
	return fmt.Sprintf("cannot sign in as %q: %v", e.name, e.err)
}

func (e *signInError) Unwrap() []error { return []error{ErrCannotSignIn, e.err} }
