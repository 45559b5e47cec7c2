package signal

import (
	"context"
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
	sent := encBinding{Key: a.EncKey, Sig: a.EncSig} // VerifyAuth checked the binding
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.WriteTimeout)
	isNew, err := s.users.bind(ctx, a.Name, key, sent, time.Now(), func() error { return s.admitNewName(ss) })
	cancel()
	if err != nil {
		s.stats.authFailures.Add(1)
		var pe *proto.Error
		switch {
		case errors.Is(err, ErrNameTaken):
			s.log.Info("signal: name taken by another key", "name", a.Name, "remote", ss.remote)
			ss.fail(proto.Errorf(proto.CodeNameTaken, "the name %q belongs to another key; choose another name", a.Name), websocket.ClosePolicyViolation)
		case errors.As(err, &pe):
			s.log.Info("signal: registration refused", "name", a.Name, "remote", ss.remote, "err", err)
			ss.fail(pe, websocket.ClosePolicyViolation)
		default:
			s.log.Error("signal: registry", "name", a.Name, "err", err)
			ss.fail(proto.Errorf(proto.CodeUnavailable, "the name registry is unavailable; try again shortly"), websocket.CloseTryAgainLater)
		}
		return false
	}
	ss.name, ss.key = a.Name, a.PublicKey
	ss.enc = sent
	if sent.Key == "" {
		// A client without an encryption key keeps the one the registry
		// has from an earlier sign-in of the same identity.
		if r, _, ok := s.users.get(a.Name); ok {
			ss.enc = r.binding()
		}
	}
	if !isNew {
		ss.used.Store(true)
	}
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
	w, err := proto.New(proto.TypeWelcome, env.ID, "", &proto.Welcome{
		Name:             a.Name,
		Session:          ss.id,
		ICEServers:       ice,
		Online:           []proto.Presence{}, // presence comes for contacts (presence.go)
		HeartbeatSeconds: int(s.cfg.PingInterval / time.Second),
		Directory:        s.cfg.Directory != DirectoryOff,
		MaxContacts:      s.cfg.MaxContacts,
	})
	if err != nil {
		s.log.Error("signal: welcome", "err", err)
		ss.fail(proto.Errorf(proto.CodeInternal, "could not build the welcome"), websocket.CloseInternalServerErr)
		return false
	}
	// Subscribe before taking over, so nothing routed to the name in
	// between is lost.
	if err := s.router.subscribe(a.Name); err != nil {
		s.log.Error("signal: subscribe", "user", a.Name, "err", err)
		ss.fail(proto.Errorf(proto.CodeUnavailable, "routing unavailable; try again shortly"), websocket.CloseTryAgainLater)
		return false
	}
	pl := s.presLock(a.Name)
	pl.Lock()
	// Shown online already (a reconnect)? Then watchers hear nothing new.
	shown := s.watches.shownOnline(a.Name)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		pl.Unlock()
		return false
	}
	old := s.local[a.Name]
	s.local[a.Name] = ss
	// The welcome is queued before the session can watch anyone, so it
	// precedes any presence sent to it.
	ss.sendEnv(w)
	s.mu.Unlock()
	if old != nil {
		// The same identity signed in again (a reconnect after a network
		// change): the stale session goes.
		s.stats.replaced.Add(1)
		old.fail(proto.Errorf(proto.CodeReplaced, "signed in again from %s", ss.remote), websocket.CloseNormalClosure)
	}
	s.router.kick(ss) // a session of this identity on another node goes too
	s.users.markDirty(a.Name)
	if old == nil && !shown || old != nil && ss.enc != old.enc {
		s.localChanged(a.Name, ss.presence(proto.StatusOnline)) // a new encryption key is news too
	}
	pl.Unlock()
	s.stats.logins.Add(1)
	s.log.Info("signal: user online", "user", a.Name, "remote", ss.remote, "agent", a.Agent)
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
			s.users.markDirty(ss.name)
			pl := s.presLock(ss.name)
			pl.Lock()
			if s.localSession(ss.name) == ss {
				s.localChanged(ss.name, ss.presence(p.Status))
			}
			pl.Unlock()
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
		ss.mu.Unlock()
		ss.ack(env.ID)
		if changed {
			s.users.markDirty(ss.name) // peers learn the NAT type from presence
			pl := s.presLock(ss.name)
			pl.Lock()
			if s.localSession(ss.name) == ss {
				ss.mu.Lock()
				st := ss.status
				ss.mu.Unlock()
				s.localChanged(ss.name, ss.presence(st))
			}
			pl.Unlock()
		}
		s.sn.onNATReport(ss, r) // a list to warm up now, if it predicts relayed calls
	case isSupernodeType(env.Type):
		s.sn.handle(ss, env) // supernodes.go
	case env.Type == proto.TypeContacts:
		c, err := proto.DecodeBody[*proto.Contacts](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		s.users.readThrough(c.Add) // names the replica has not seen yet (users.go)
		if perr := s.watches.setContacts(ss, c, env.ID); perr != nil {
			ss.sendError(perr, env.ID)
			return
		}
		ss.ack(env.ID)
	case env.Type == proto.TypeDirectory:
		q, err := proto.DecodeBody[*proto.DirectoryQuery](env)
		if err != nil {
			ss.violation(asProtoErr(err), env.ID)
			return
		}
		if perr := s.watches.directory(ss, q, env.ID); perr != nil {
			ss.sendError(perr, env.ID)
		}
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

// markUsed records, once per session, that the name was used.
func (ss *session) markUsed() {
	if ss.used.CompareAndSwap(false, true) {
		ss.srv.users.markDirty(ss.name)
	}
}
