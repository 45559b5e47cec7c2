package supernode

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/internal/sigdial"
	"github.com/parley-voice/parley/proto"
)

// maxHistory bounds the decisions kept for the status page.
const maxHistory = 64

// signalLoop keeps a signaling session up, reconnecting with jittered
// exponential backoff, until ctx ends. Fatal sign-in errors (the name
// belongs to another key) end it with that error.
func (s *Server) signalLoop(ctx context.Context) error {
	backoff := s.cfg.ReconnectMin
	for {
		err := s.signalOnce(ctx)
		s.setConnected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		var pe *proto.Error
		if errors.As(err, &pe) && (pe.Code == proto.CodeNameTaken || pe.Code == proto.CodeBadName) {
			s.log.Error("supernode: cannot sign in", "err", err)
			return fmt.Errorf("supernode: sign in as %s: %w", s.cfg.Name, err)
		}
		wait := backoff/2 + rand.N(backoff/2+1)
		s.log.Warn("supernode: signaling lost, retrying", "err", err, "in", wait)
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return ctx.Err()
		}
		backoff = min(backoff*2, s.cfg.ReconnectMax)
	}
}

// signalOnce runs one signaling session: sign in, register, then follow
// the server's decisions and send heartbeats while promoted (and while
// demoted, so the server sees an overload end).
func (s *Server) signalOnce(ctx context.Context) error {
	ws, err := s.signIn(ctx)
	if err != nil {
		return err
	}
	defer ws.Close()
	s.setConnected(true)
	if err := sigdial.Write(ws, proto.TypeSupernodeRegister, "reg", s.registration()); err != nil {
		return err
	}
	frames := make(chan *proto.Envelope)
	readErr := make(chan error, 1)
	stop := make(chan struct{})
	defer close(stop) // before ws.Close: the reader leaves at once
	go func() {
		readErr <- readFrames(ws, frames, stop)
	}()
	var beat *time.Ticker
	var beatC <-chan time.Time
	var retry <-chan time.Time
	defer func() {
		if beat != nil {
			beat.Stop()
		}
	}()
	last := s.stats.bytesRelayed.Load()
	lastAt := time.Now()
	for {
		select {
		case <-ctx.Done():
			// A goodbye the server can act on at once: stop handing us
			// out. Then close the connection politely.
			sigdial.Write(ws, proto.TypeSupernodeHeartbeat, "bye", &proto.SupernodeHeartbeat{Sessions: s.sessions(), Users: s.users.distinct(), Draining: true})
			ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "supernode stopping"), time.Now().Add(time.Second))
			return ctx.Err()
		case err := <-readErr:
			return err
		case env := <-frames:
			st, retryAfter := s.onFrame(env)
			if st == nil {
				continue
			}
			retry = nil
			// A demoted supernode keeps beating: the server promotes it
			// again when its load falls back, which it learns only from
			// heartbeats.
			if beat != nil && st.State != proto.SupernodeDemoted {
				beat.Stop()
				beat, beatC = nil, nil
			}
			switch {
			case st.State == proto.SupernodePromoted:
				iv := time.Duration(st.HeartbeatMillis) * time.Millisecond
				if iv < 50*time.Millisecond {
					iv = 5 * time.Second
				}
				beat = time.NewTicker(iv)
				beatC = beat.C
			case retryAfter > 0:
				retry = time.After(retryAfter)
			}
		case now := <-beatC:
			cur := s.stats.bytesRelayed.Load()
			mbps := float64(cur-last) * 8 / now.Sub(lastAt).Seconds() / 1e6
			last, lastAt = cur, now
			hb := &proto.SupernodeHeartbeat{Sessions: s.sessions(), Users: s.users.distinct(), RelayMbps: mbps}
			if err := sigdial.Write(ws, proto.TypeSupernodeHeartbeat, "", hb); err != nil {
				return err
			}
		case <-retry:
			retry = nil
			s.log.Info("supernode: registering again")
			if err := sigdial.Write(ws, proto.TypeSupernodeRegister, "reg", s.registration()); err != nil {
				return err
			}
		}
	}
}

// signIn dials the signaling server and completes hello/auth/welcome.
func (s *Server) signIn(ctx context.Context) (*websocket.Conn, error) {
	ws, _, err := sigdial.SignIn(ctx, sigdial.Options{
		URL:   s.cfg.Server,
		Dial:  s.cfg.Dial,
		TLS:   s.cfg.TLS,
		Agent: "parley-supernode/1",
		Auth: func(challenge string) *proto.Auth {
			auth := proto.SignAuth(s.cfg.Key, challenge, s.cfg.Name)
			auth.NAT = s.cfg.NAT
			return auth
		},
	})
	if err != nil {
		var pe *proto.Error
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, fmt.Errorf("supernode: %w", err)
	}
	return ws, nil
}

// onFrame handles one frame from the server. For a status it returns the
// status and, when refused, how long until registering again may help.
func (s *Server) onFrame(env *proto.Envelope) (*proto.SupernodeStatus, time.Duration) {
	switch env.Type {
	case proto.TypeSupernodeStatus:
		st, err := proto.DecodeBody[*proto.SupernodeStatus](env)
		if err != nil {
			s.log.Warn("supernode: bad status from server", "err", err)
			return nil, 0
		}
		s.apply(st)
		return st, time.Duration(st.RetryAfterSeconds) * time.Second
	case proto.TypeError:
		if pe, err := proto.DecodeBody[*proto.Error](env); err == nil {
			s.log.Warn("supernode: server error", "code", pe.Code, "message", pe.Message, "ref", pe.Ref)
		}
	}
	return nil, 0
}

// apply records a decision and switches relaying on or off.
func (s *Server) apply(st *proto.SupernodeStatus) {
	if st.State == proto.SupernodePromoted {
		secret, err1 := base64.StdEncoding.DecodeString(st.TURNSecret)
		key, err2 := proto.DecodePublicKey(st.TokenKey)
		if err1 != nil || err2 != nil {
			s.log.Error("supernode: promotion without usable secret or key")
			return
		}
		s.promo.Store(&promotion{id: st.ID, secret: secret, tokenKey: key, heartbeat: time.Duration(st.HeartbeatMillis) * time.Millisecond})
		s.accepting.Store(true)
	} else {
		// Refused or demoted: no new sessions; live ones run out their
		// allocation lifetime (their refreshes still authenticate).
		s.accepting.Store(false)
	}
	d := Decision{Time: time.Now(), State: st.State, Reason: st.Reason, MeasuredMbps: st.MeasuredMbps, RTTms: st.RTTms}
	s.mu.Lock()
	s.state, s.reason = st.State, st.Reason
	s.history = append(s.history, d)
	if len(s.history) > maxHistory {
		s.history = s.history[len(s.history)-maxHistory:]
	}
	s.mu.Unlock()
	level := s.log.Info
	if st.State == proto.SupernodeRefused || st.State == proto.SupernodeDemoted {
		level = s.log.Warn
	}
	level("supernode: decision", "state", st.State, "reason", st.Reason, "id", st.ID, "measured_mbps", st.MeasuredMbps, "rtt_ms", st.RTTms)
	if s.cfg.OnDecision != nil {
		s.cfg.OnDecision(d)
	}
}

func (s *Server) setConnected(v bool) {
	s.mu.Lock()
	s.connected = v
	s.mu.Unlock()
	if !v {
		s.accepting.Store(false)
	}
}

// readFrames reads until the connection fails or stop closes.
func readFrames(ws *websocket.Conn, out chan<- *proto.Envelope, stop <-chan struct{}) error {
	const idle = 75 * time.Second
	ws.SetReadDeadline(time.Now().Add(idle))
	ws.SetPingHandler(func(data string) error {
		ws.SetReadDeadline(time.Now().Add(idle))
		return ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(5*time.Second))
	})
	for {
		env, err := sigdial.Read(ws)
		if err != nil {
			var pe *proto.Error
			if errors.As(err, &pe) {
				continue // a frame we do not understand; the connection is fine
			}
			return err
		}
		ws.SetReadDeadline(time.Now().Add(idle))
		select {
		case out <- env:
		case <-stop:
			return nil
		}
	}
}
