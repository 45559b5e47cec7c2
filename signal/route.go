package signal

import (
	"errors"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go"
	"github.com/parley-voice/parley/proto"
)

// Routing. A routed frame (offer, answer, candidate, ring, chat, receipts,
// ...) for bob goes to bob's session: straight into its queue when bob is
// signed in to this node, else as a NATS request on parley.u.<bob>, which
// the node holding bob's session answers ("ok"); no responders means bob
// is offline. The sender's read loop waits for the answer, so one
// sender's frames arrive in the order sent.
//
// The same subject carries, as headers say (Parley-Op):
//
//	kick   a newer session of this identity signed in on another node:
//	       an older one here is replaced
//	mail   a sealed message was stored for bob (offline.go)
//	rcpt   a receipt for a sealed message bob left (offline.go)
//
// Each node subscribes once per name it holds a session for; all those
// subscriptions feed a few shard channels (by name, so one recipient's
// frames keep their order), each drained by one goroutine: no goroutine
// per user.

// Headers and operations on user subjects.
const (
	hdrOp      = "Parley-Op"
	hdrFrom    = "Parley-From"
	hdrSession = "Parley-Session"
	hdrSince   = "Parley-Since"
	hdrSeq     = "Parley-Seq"

	opKick = "kick"
	opMail = "mail"
	opRcpt = "rcpt"
)

// Answers to a routed request.
var (
	respOK   = []byte("ok")
	respGone = []byte("gone")
	respBusy = []byte("busy")
)

// routeTimeout bounds the wait for another node to take a routed frame.
const routeTimeout = 3 * time.Second

// deliverResult is what became of a routed frame.
type deliverResult int

const (
	deliveredOK   deliverResult = iota
	notOnline                   // nobody holds a session for the recipient
	recipientBusy               // the recipient is receiving too much
	routeFailed                 // NATS did not answer in time
)

const routerShards = 4

type router struct {
	s      *Server
	shards []chan *nats.Msg

	mu   sync.Mutex // guards subs
	subs map[string]*nats.Subscription
}

func newRouter(s *Server) *router {
	r := &router{s: s, subs: map[string]*nats.Subscription{}}
	for range routerShards {
		r.shards = append(r.shards, make(chan *nats.Msg, 8192))
	}
	return r
}

// start runs the shard goroutines; close ends them.
func (r *router) start() {
	for _, ch := range r.shards {
		r.s.bg.Add(1)
		go r.dispatch(ch)
	}
}

func (r *router) close() {
	r.mu.Lock()
	for n, sub := range r.subs {
		sub.Unsubscribe()
		delete(r.subs, n)
	}
	r.mu.Unlock()
	for _, ch := range r.shards {
		close(ch)
	}
}

// subscribe makes this node a taker of name's subject.
func (r *router) subscribe(name string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.subs[name]; ok {
		return nil
	}
	h := fnv.New32a()
	h.Write([]byte(name))
	sub, err := r.s.st.nc.ChanSubscribe(subjUser+nkey(name), r.shards[h.Sum32()%routerShards])
	if err != nil {
		return err
	}
	r.subs[name] = sub
	return nil
}

// unsubscribe stops taking name's frames (its session here ended).
func (r *router) unsubscribe(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if sub, ok := r.subs[name]; ok {
		sub.Unsubscribe()
		delete(r.subs, name)
	}
}

func (r *router) dispatch(ch chan *nats.Msg) {
	defer r.s.bg.Done()
	for m := range ch {
		r.handle(m)
	}
}

// handle takes one message on a user subject.
func (r *router) handle(m *nats.Msg) {
	s := r.s
	if len(m.Subject) <= len(subjUser) {
		return
	}
	name := unkey(m.Subject[len(subjUser):])
	ss := s.localSession(name)
	switch m.Header.Get(hdrOp) {
	case opKick:
		r.onKick(ss, m)
	case opMail:
		s.offline.onNotify(ss, m)
	case opRcpt:
		if ss == nil || !ss.enqueue(m.Data) {
			m.Respond(respGone)
			return
		}
		m.Respond(respOK)
	default:
		if ss == nil {
			m.Respond(respGone)
			return
		}
		switch s.deliver(ss, m.Header.Get(hdrFrom), m.Data) {
		case deliveredOK:
			m.Respond(respOK)
		case recipientBusy:
			m.Respond(respBusy)
		default:
			m.Respond(respGone)
		}
	}
}

// send routes a routed frame (raw, with from stamped) to name.
func (r *router) send(to, from string, raw []byte) deliverResult {
	s := r.s
	if dst := s.localSession(to); dst != nil {
		return s.deliver(dst, from, raw)
	}
	m := nats.NewMsg(subjUser + nkey(to))
	m.Header.Set(hdrFrom, from)
	m.Data = raw
	reply, err := s.st.nc.RequestMsg(m, routeTimeout)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		return notOnline
	case err != nil:
		s.log.Warn("signal: route", "to", to, "err", err)
		return routeFailed
	}
	switch string(reply.Data) {
	case string(respOK):
		return deliveredOK
	case string(respBusy):
		return recipientBusy
	}
	return notOnline
}

// publish sends a message on name's subject to whichever node holds its
// session, if any, without waiting.
func (r *router) publish(name, op string, hdr map[string]string, data []byte) {
	m := nats.NewMsg(subjUser + nkey(name))
	m.Header.Set(hdrOp, op)
	for k, v := range hdr {
		m.Header.Set(k, v)
	}
	m.Data = data
	if err := r.s.st.nc.PublishMsg(m); err != nil {
		r.s.log.Warn("signal: publish", "to", name, "op", op, "err", err)
	}
}

// request sends a message on name's subject and reports whether a node
// holding its session took it.
func (r *router) request(name, op string, data []byte) bool {
	m := nats.NewMsg(subjUser + nkey(name))
	m.Header.Set(hdrOp, op)
	m.Data = data
	reply, err := r.s.st.nc.RequestMsg(m, routeTimeout)
	return err == nil && string(reply.Data) == string(respOK)
}

// kick tells other nodes that ss is the newest session of its identity.
func (r *router) kick(ss *session) {
	if !r.s.st.cluster {
		return // one node: the local table already replaced any older one
	}
	r.publish(ss.name, opKick, map[string]string{hdrSession: ss.id, hdrSince: strconv.FormatInt(ss.since, 10)}, nil)
}

// onKick replaces the local session of a name when a newer one signed in
// elsewhere (sessions are ordered by start time, then id).
func (r *router) onKick(ss *session, m *nats.Msg) {
	id := m.Header.Get(hdrSession)
	if ss == nil || ss.id == id {
		return
	}
	since, _ := strconv.ParseInt(m.Header.Get(hdrSince), 10, 64)
	if ss.since > since || ss.since == since && ss.id > id {
		return // ours is the newer one; the other will be kicked
	}
	ss.mu.Lock()
	ss.replaced = true
	ss.mu.Unlock()
	r.s.stats.replaced.Add(1)
	ss.fail(proto.Errorf(proto.CodeReplaced, "signed in again elsewhere"), websocket.CloseNormalClosure)
}

// localSession is name's session on this node, if any.
func (s *Server) localSession(name string) *session {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.local[name]
}

// deliver queues a routed frame from from to dst, a session on this node,
// after from's presence if dst did not hear of from yet.
func (s *Server) deliver(dst *session, from string, raw []byte) deliverResult {
	if !dst.inbound.Allow() {
		return recipientBusy // the senders are throttled, never the target
	}
	if from != "" {
		s.watches.talked(dst, from)
	}
	if !dst.enqueue(raw) {
		return notOnline
	}
	return deliveredOK
}

// route forwards a client-to-client message, stamped with the sender.
func (ss *session) route(env *proto.Envelope) {
	s := ss.srv
	if env.To == ss.name {
		ss.violation(proto.Errorf(proto.CodeBadRequest, "cannot send %s to yourself", env.Type), env.ID)
		return
	}
	if env.Type == proto.TypeChat {
		// The server carries chat sealed to its recipient only: it must
		// never be able to read what people say.
		ss.sendError(proto.Errorf(proto.CodeBadRequest, "chat through the server must be sealed to its recipient (type %s); plain chat is not carried", proto.TypeSealed), env.ID)
		return
	}
	if s.offline.intercept(ss, env) { // sealed messages and their receipts
		return
	}
	env.From = ss.name
	raw, err := proto.Encode(env)
	if err != nil {
		ss.sendError(asProtoErr(err), env.ID)
		return
	}
	res := s.router.send(env.To, ss.name, raw)
	s.watches.talked(ss, env.To) // the recipient's presence before the answer
	switch res {
	case deliveredOK:
		s.stats.routed.Add(1)
		ss.ack(env.ID)
		ss.markUsed()
	case notOnline:
		s.stats.offline.Add(1)
		ss.sendError(proto.Errorf(proto.CodeOffline, "%s is offline", env.To), env.ID)
	case recipientBusy:
		s.stats.rateLimited.Add(1)
		ss.sendError(proto.Errorf(proto.CodeRateLimited, "%s is receiving more messages than they can take; slow down", env.To), env.ID)
	default:
		ss.sendError(proto.Errorf(proto.CodeUnavailable, "could not reach %s's server in time; try again", env.To), env.ID)
	}
}
