package signal

import (
	"errors"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
)

// handleAuth processes the first message, which must be a valid auth. It
// returns false when the session must end.
func (ss *session) handleAuth(env *proto.Envelope) bool {
	s := ss.srv
	if env.Type != proto.TypeAuth {
		ss.violation(proto.Errorf(proto.CodeUnauthenticated, "%s before auth; send auth first", env.Type), env.ID)
		return true
	}
	a, err := proto.DecodeBody[*proto.Auth](env)
	if err != nil {
		ss.violation(asProtoErr(err), env.ID)
		return true
	}
	if err := proto.VerifyAuth(a, ss.challenge); err != nil {
		s.stats.authFailures.Add(1)
		ss.fail(asProtoErr(err), websocket.ClosePolicyViolation)
		return false
	}
	key, _ := a.Key()
	if err := s.reg.Bind(a.Name, key, encBinding{Key: a.EncKey, Sig: a.EncSig}); err != nil { // VerifyAuth checked the binding
		s.stats.authFailures.Add(1)
		if errors.Is(err, ErrNameTaken) {
			s.log.Info("signal: name taken by another key", "name", a.Name, "remote", ss.remote)
			ss.fail(proto.Errorf(proto.CodeNameTaken, "the name %q belongs to another key; choose another name", a.Name), websocket.ClosePolicyViolation)
		} else {
			s.log.Error("signal: registry", "name", a.Name, "err", err)
			ss.fail(proto.Errorf(proto.CodeInternal, "registry unavailable"), websocket.CloseInternalServerErr)
		}
		return false
	}
	ss.name, ss.key = a.Name, a.PublicKey
	// The encryption key to announce, and the offline users (with their
	// keys) for the welcome, read from the registry before s.mu (offline.go).
	ss.enc = s.encKeyOf(a.Name, encBinding{Key: a.EncKey, Sig: a.EncSig})
	offline := s.offlineEntries()
	if a.NAT != nil {
		ss.mu.Lock()
		ss.nat = a.NAT
		ss.mu.Unlock()
	}

	var ice []proto.ICEServer
	if s.cfg.ICEServers != nil {
		ice = s.cfg.ICEServers(a.Name)
	}
	ice = append(ice, s.sn.iceServers(a.Name)...) // promoted supernodes as TURN (supernodes.go)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return false
	}
	old := s.online[a.Name]
	s.online[a.Name] = ss
	delete(s.lastSeen, a.Name)
	others := make([]proto.Presence, 0, len(s.online))
	told := make([]*session, 0, len(s.online)) // online before us: they learn of us by presence
	for _, o := range s.online {
		if o == ss {
			continue
		}
		o.mu.Lock()
		st := o.status
		o.mu.Unlock()
		others = append(others, o.presence(st))
		told = append(told, o)
	}
	for _, p := range offline {
		if s.online[p.Name] == nil {
			others = append(others, p)
		}
	}
	// The welcome is queued before the lock is released, so it precedes
	// any presence another session broadcasts to us once it sees us online.
	w, err := proto.New(proto.TypeWelcome, env.ID, "", &proto.Welcome{
		Name:             a.Name,
		Session:          ss.id,
		ICEServers:       ice,
		Online:           others,
		HeartbeatSeconds: int(s.cfg.PingInterval / time.Second),
	})
	if err == nil {
		ss.sendEnv(w)
	}
	s.mu.Unlock()
	if err != nil {
		s.log.Error("signal: welcome", "err", err)
		return false
	}
	if old != nil {
		// The same identity logged in again (a reconnect after a network
		// change): the stale session goes.
		s.stats.replaced.Add(1)
		old.fail(proto.Errorf(proto.CodeReplaced, "signed in again from %s", ss.remote), websocket.CloseNormalClosure)
	}
	s.stats.logins.Add(1)
	s.log.Info("signal: user online", "user", a.Name, "remote", ss.remote, "agent", a.Agent)
	if old == nil {
		// Only to those online before us: whoever signs in from now on
		// finds us in its welcome, and must not get us twice.
		sendPresence(told, ss.presence(proto.StatusOnline))
	}
	s.offline.deliver(ss)     // messages left while offline, after the welcome
	s.sn.onLogin(ss, a.Agent) // supernode list with relay tokens (supernodes.go)
	return true
}

// handle processes one message from an authenticated session.
func (ss *session) handle(env *proto.Envelope) {
	s := ss.srv
	if env.From != "" && env.From != ss.name {
		s.stats.spoofed.Add(1)
		ss.violation(proto.Errorf(proto.CodeSpoofed, "from %q but you are %q", env.From, ss.name), env.ID)
		return
	}
	switch {
	case env.Type.Routed():
		ss.route(env)
	case env.Type == proto.TypePresence:
		p, err := proto.DecodeBody[*proto.Presence](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		if p.Status == proto.StatusOffline || (p.Name != "" && p.Name != ss.name) {
			ss.violation(proto.Errorf(proto.CodeBadRequest, "you can set your own status to online or away"), env.ID)
			return
		}
		ss.mu.Lock()
		changed := ss.status != p.Status
		ss.status = p.Status
		ss.mu.Unlock()
		ss.ack(env.ID)
		if changed {
			s.broadcastPresence(ss, ss.presence(p.Status))
		}
	case env.Type == proto.TypeNATReport:
		r, err := proto.DecodeBody[*proto.NATReport](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		ss.mu.Lock()
		changed := ss.nat == nil || ss.nat.Type != r.Type
		ss.nat = r
		st := ss.status
		ss.mu.Unlock()
		ss.ack(env.ID)
		if changed {
			s.broadcastPresence(ss, ss.presence(st)) // peers learn the NAT type
		}
		s.sn.onNATReport(ss, r) // a list to warm up now, if it predicts relayed calls
	case isSupernodeType(env.Type):
		s.sn.handle(ss, env) // supernodes.go
	case env.Type == proto.TypePing:
		ss.ack(env.ID)
	case env.Type == proto.TypeAuth:
		ss.violation(proto.Errorf(proto.CodeBadRequest, "already signed in as %q", ss.name), env.ID)
	default:
		s.stats.badFrames.Add(1)
		ss.violation(proto.Errorf(proto.CodeUnknownType, "%s is not something a client sends", env.Type), env.ID)
	}
}

func (ss *session) ack(id string) {
	if id == "" {
		return
	}
	if env, err := proto.New(proto.TypeAck, "", "", &proto.Ack{Ref: id}); err == nil {
		ss.sendEnv(env)
	}
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
	s.mu.Lock()
	dst := s.online[env.To]
	s.mu.Unlock()
	if dst == nil {
		s.stats.offline.Add(1)
		ss.sendError(proto.Errorf(proto.CodeOffline, "%s is offline", env.To), env.ID)
		return
	}
	env.From = ss.name
	if !dst.sendEnv(env) {
		ss.sendError(proto.Errorf(proto.CodeOffline, "%s went offline", env.To), env.ID)
		return
	}
	s.stats.routed.Add(1)
	ss.ack(env.ID)
}

// broadcastPresence tells every other online user about p.
func (s *Server) broadcastPresence(from *session, p proto.Presence) {
	s.mu.Lock()
	targets := make([]*session, 0, len(s.online))
	for _, o := range s.online {
		if o != from {
			targets = append(targets, o)
		}
	}
	s.mu.Unlock()
	sendPresence(targets, p)
}

// sendPresence queues p to each of targets.
func sendPresence(targets []*session, p proto.Presence) {
	env, err := proto.New(proto.TypePresence, "", "", &p)
	if err != nil {
		return
	}
	b, err := proto.Encode(env)
	if err != nil {
		return
	}
	for _, o := range targets {
		o.enqueue(b)
	}
}
