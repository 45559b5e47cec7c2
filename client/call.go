package client

import (
	"context"
	"time"

	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// ringTimeout ends a call nobody answers; connectTimeout, beyond it, an
// answered one whose link neither connects nor fails (a safety net: ICE
// fails within ~30 s).
const (
	ringTimeout    = 60 * time.Second
	connectTimeout = 30 * time.Second
)

// call is a voice call with one peer. Call signalling (ring, accept,
// decline, hangup) goes through the server; media goes over the link.
type call struct {
	id        string
	peer      string
	outgoing  bool
	accepted  bool
	state     CallState
	started   time.Time
	lastStats time.Time
	stop      chan struct{} // closes the audio sender
	sink      AudioSink
	lastLink  string // session of the link the call last connected on
	// Set when it ends: why (for the event).
	code       proto.EndCode
	peerReason string
}

func (k *call) direction() string {
	if k.outgoing {
		return "outgoing"
	}
	return "incoming"
}

func (c *Client) emitCall(k *call, reason string) {
	ev := CallEvent{With: k.peer, Call: k.id, State: k.state, Direction: k.direction(), Reason: reason}
	if k.state == CallEnded {
		ev.Code, ev.PeerReason = k.code, sanitizeText(k.peerReason)
	}
	if l := c.links[k.peer]; l != nil && k.state == CallConnected {
		ev.Path, ev.Via, _, _ = pathOf(l)
	}
	c.events.push(ev)
}

// Call rings peer. The call proceeds through CallEvents.
func (c *Client) Call(ctx context.Context, peer string) error {
	if proto.ValidateName(peer) == nil && peer != c.cfg.Name {
		c.learnPresence(ctx, peer) // contacts.go
	}
	return c.do(ctx, func() error {
		if peer == c.cfg.Name {
			return ErrSelf
		}
		if err := proto.ValidateName(peer); err != nil {
			return err
		}
		if p, ok := c.presence[peer]; !ok {
			return ErrUnknownPeer // not_found: nobody of that name is known to us
		} else if !p.Online() {
			return ErrNotOnline
		}
		if _, ok := c.calls[peer]; ok {
			return ErrCallExists
		}
		if _, err := c.ensureLink(peer); err != nil {
			return err
		}
		k := &call{id: randomID(), peer: peer, outgoing: true, state: CallRinging, started: time.Now()}
		err := c.sendSigID(proto.TypeRing, k.id, peer, &proto.CallSignal{Call: k.id}, func(err error) {
			if err != nil && c.calls[peer] == k {
				c.endCall(peer, "could not ring "+peer+": "+err.Error(), false)
			}
		})
		if err != nil {
			return err
		}
		c.calls[peer] = k
		c.emitCall(k, "")
		return nil
	})
}

// Answer accepts the incoming call from peer.
func (c *Client) Answer(ctx context.Context, peer string) error {
	return c.do(ctx, func() error { return c.answer(peer) })
}

func (c *Client) answer(peer string) error {
	k := c.calls[peer]
	if k == nil || k.outgoing || k.accepted {
		return ErrNoCall
	}
	if err := c.sendSig(proto.TypeAccept, peer, &proto.CallSignal{Call: k.id}); err != nil {
		return err
	}
	k.accepted = true
	k.state = CallAccepted
	c.emitCall(k, "")
	c.maybeConnectCall(peer)
	return nil
}

// Decline refuses the incoming call from peer.
func (c *Client) Decline(ctx context.Context, peer string) error {
	return c.do(ctx, func() error {
		k := c.calls[peer]
		if k == nil || k.outgoing || k.accepted {
			return ErrNoCall
		}
		c.sendSig(proto.TypeDecline, peer, &proto.CallSignal{Call: k.id, Code: proto.EndDeclined})
		c.endCallCode(peer, proto.EndDeclined, "declined", "", false)
		return nil
	})
}

// SetMuted tells peer, in a call, that we muted (or unmuted) our
// microphone (the caller silences its audio source itself, e.g. with a
// muting source): the peer shows it (MuteEvent). It goes on the data
// channel only; without one it is not sent.
func (c *Client) SetMuted(ctx context.Context, peer string, muted bool) error {
	return c.do(ctx, func() error {
		if c.calls[peer] == nil {
			return ErrNoCall
		}
		c.sendDC(peer, &proto.DCMessage{Type: proto.DCMute, Muted: muted})
		return nil
	})
}

// Hangup ends the call with peer, whatever its state.
func (c *Client) Hangup(ctx context.Context, peer string) error {
	return c.do(ctx, func() error {
		if c.calls[peer] == nil {
			return ErrNoCall
		}
		c.endCall(peer, "hung up", true)
		return nil
	})
}

// onCallSignal handles ring, accept, decline and hangup (loop goroutine).
func (c *Client) onCallSignal(env *proto.Envelope) {
	peer := env.From
	s, err := proto.DecodeBody[*proto.CallSignal](env)
	if err != nil {
		return
	}
	k := c.calls[peer]
	switch env.Type {
	case proto.TypeRing:
		if s.Resume {
			// The peer checks that we still have its call (its path came
			// back, or the link was made anew): never a new ring.
			if k == nil || k.id != s.Call {
				c.sendSig(proto.TypeHangup, peer, &proto.CallSignal{Call: s.Call, Code: proto.EndGone})
			}
			return
		}
		c.noteTalked(peer) // contacts.go
		if k != nil {
			if k.outgoing && !k.accepted && c.cfg.Name > peer {
				// Both rang at once: the smaller name's call stands and
				// we answer it.
				k.id, k.outgoing = s.Call, false
				c.answer(peer)
				return
			}
			if k.id != s.Call && !k.outgoing {
				c.sendSig(proto.TypeDecline, peer, &proto.CallSignal{Call: s.Call, Code: proto.EndBusy})
			}
			return
		}
		if c.refusedInsecure(peer) { // sdpsig.go
			c.sendSig(proto.TypeDecline, peer, &proto.CallSignal{Call: s.Call, Code: proto.EndInsecure})
			return
		}
		if c.cfg.Accept != nil && !c.cfg.Accept(peer) {
			c.sendSig(proto.TypeDecline, peer, &proto.CallSignal{Call: s.Call, Code: proto.EndRefused})
			c.events.push(RefusedEvent{From: peer, Kind: "call", ID: s.Call})
			return
		}
		k = &call{id: s.Call, peer: peer, state: CallRinging, started: time.Now()}
		c.calls[peer] = k
		c.emitCall(k, "")
		if c.cfg.AutoAnswer {
			c.answer(peer)
		}
	case proto.TypeAccept:
		if k == nil || k.id != s.Call || !k.outgoing || k.accepted {
			return
		}
		k.accepted = true
		k.state = CallAccepted
		c.emitCall(k, "")
		c.maybeConnectCall(peer)
	case proto.TypeDecline, proto.TypeHangup:
		if k != nil && k.id == s.Call {
			code := s.Code
			if code == "" || env.Type == proto.TypeHangup && code == proto.EndDeclined {
				code = proto.EndHungUp
				if env.Type == proto.TypeDecline {
					code = proto.EndDeclined
				}
			}
			c.endCallCode(peer, code, peerEndWords(peer, code), s.Reason, false)
		}
	}
}

// peerEndWords says, in the app's own words, why peer ended a call: built
// from the peer's code only. Whatever text the peer sent is shown apart,
// as the peer's words (CallEvent.PeerReason), so no one can put words in
// the app's mouth.
func peerEndWords(peer string, code proto.EndCode) string {
	switch code {
	case proto.EndDeclined:
		return "declined by " + peer
	case proto.EndBusy:
		return peer + " is busy"
	case proto.EndNoAnswer:
		return "no answer"
	case proto.EndNoPath:
		// The peer's ICE gave up first: the same verdict as ours.
		return "no network path: " + peer + " could not reach us (NATs block a direct path and no relay was usable)"
	case proto.EndRefused:
		return peer + " does not accept calls from you" // contacts only, or blocked: never says which
	case proto.EndInsecure:
		return peer + " refused the connection: it was tampered with on the way"
	case proto.EndGone:
		return peer + " no longer has this call (their app restarted)"
	case proto.EndOffline:
		return peer + " went offline"
	case proto.EndNoRelay:
		return "no network path: " + peer + " relays every call (\"always relay\") and no relay is available to " + peer
	}
	return "hung up by " + peer
}

// checkCall asks peer whether it still has our accepted call with it,
// after the call's path came back or its link was made anew: a peer that
// restarted meanwhile answers "gone" and the call ends rather than stay
// "connected" with nothing coming in (loop goroutine).
func (c *Client) checkCall(peer string) {
	if k := c.calls[peer]; k != nil && k.accepted {
		c.sendSig(proto.TypeRing, peer, &proto.CallSignal{Call: k.id, Resume: true})
	}
}

// detachCall takes a connected call off a link that is going away: its
// audio stops and it waits, accepted, for the next link to connect
// (maybeConnectCall), which checks that the peer still has it.
func (c *Client) detachCall(peer, session string) {
	k := c.calls[peer]
	if k == nil || k.state != CallConnected || k.lastLink != session {
		return
	}
	if k.stop != nil {
		close(k.stop)
		k.stop = nil
	}
	k.state = CallAccepted
	c.emitCall(k, "reconnecting")
}

// maybeConnectCall starts media once the call is accepted and the link is
// connected (loop goroutine).
func (c *Client) maybeConnectCall(peer string) {
	k, l := c.calls[peer], c.links[peer]
	if k == nil || l == nil || !k.accepted || k.state == CallConnected || l.state != webrtc.PeerConnectionStateConnected {
		return
	}
	var src audio.Source = audio.Silence{}
	if c.cfg.AudioSource != nil {
		s, err := c.cfg.AudioSource(peer)
		if err != nil {
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeInternal, "audio source: %v", err), Ref: k.id})
		} else {
			src = s
		}
	}
	if c.cfg.AudioSink != nil {
		s, err := c.cfg.AudioSink(peer)
		if err != nil {
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeInternal, "audio sink: %v", err), Ref: k.id})
		} else {
			k.sink = s
			l.sink.Store(&sinkBox{s: s})
		}
	}
	k.state = CallConnected
	k.lastLink = l.session
	k.stop = make(chan struct{})
	k.lastStats = time.Now()
	go sendAudio(l, src, k.stop)
	c.emitCall(k, "")
}

// sendAudio paces packets from src onto track until stop closes.
func sendAudio(l *link, src audio.Source, stop <-chan struct{}) {
	next := time.Now()
	for {
		pkt, dur, err := src.Next()
		if err != nil {
			return
		}
		if err := l.track.WriteSample(media.Sample{Data: pkt, Duration: dur}); err != nil {
			return
		}
		l.rtpOut.Add(1)
		next = next.Add(dur)
		select {
		case <-stop:
			return
		case <-time.After(time.Until(next)):
		}
	}
}

// endCall ends the call with peer as a plain hang-up; see endCallCode.
func (c *Client) endCall(peer, reason string, notify bool) {
	c.endCallCode(peer, proto.EndHungUp, reason, "", notify)
}

// endCallCode ends the call with peer. reason is our words for the user;
// peerReason, the peer's own (from its hangup or decline). notify tells
// the peer with a hangup (a decline while it is still ringing for us)
// carrying code, never our words.
func (c *Client) endCallCode(peer string, code proto.EndCode, reason, peerReason string, notify bool) {
	k := c.calls[peer]
	if k == nil {
		return
	}
	delete(c.calls, peer)
	if notify {
		t := proto.TypeHangup
		if !k.outgoing && !k.accepted {
			t = proto.TypeDecline
			if code == proto.EndHungUp {
				code = proto.EndDeclined
			}
		}
		c.sendSig(t, peer, &proto.CallSignal{Call: k.id, Code: code})
	}
	if k.stop != nil {
		close(k.stop)
	}
	if l := c.links[peer]; l != nil {
		l.sink.Store(nil)
	}
	if k.sink != nil {
		k.sink.Close()
	}
	k.state = CallEnded
	k.code, k.peerReason = code, peerReason
	c.emitCall(k, reason)
}

// callTick emits stats for connected calls and times out ringing ones.
func (c *Client) callTick(now time.Time) {
	for peer, k := range c.calls {
		switch {
		case !k.accepted && now.Sub(k.started) > ringTimeout:
			// Only a call nobody answered: an accepted one that cannot
			// connect ends with its link (no path), in its own words.
			c.endCallCode(peer, proto.EndNoAnswer, "no answer", "", true)
		case k.accepted && k.state != CallConnected && now.Sub(k.started) > ringTimeout+connectTimeout:
			c.endCallCode(peer, proto.EndNoPath, "could not connect to "+peer, "", true)
		case k.state == CallConnected && now.Sub(k.lastStats) >= c.cfg.StatsInterval:
			k.lastStats = now
			if l := c.links[peer]; l != nil {
				c.events.push(c.callStats(l))
			}
		}
	}
}

// callStats reads the link's WebRTC stats.
func (c *Client) callStats(l *link) StatsEvent {
	ev := StatsEvent{With: l.peer}
	ev.Path, ev.Via, ev.LocalCandidate, ev.RemoteCandidate = pathOf(l)
	for _, s := range l.pc.GetStats() {
		switch s := s.(type) {
		case webrtc.OutboundRTPStreamStats:
			ev.RTPPacketsSent += s.PacketsSent
		case webrtc.InboundRTPStreamStats:
			ev.RTPPacketsReceived += s.PacketsReceived
			ev.JitterMs = s.Jitter * 1000
			ev.PacketsLost += s.PacketsLost
		case webrtc.RemoteInboundRTPStreamStats:
			if ev.RTTms == 0 && s.RoundTripTime > 0 {
				ev.RTTms = s.RoundTripTime * 1000
			}
		case webrtc.ICECandidatePairStats:
			if s.Nominated && s.CurrentRoundTripTime > 0 {
				ev.RTTms = s.CurrentRoundTripTime * 1000
			}
		}
	}
	if n := uint32(l.rtpOut.Load()); n > ev.RTPPacketsSent {
		ev.RTPPacketsSent = n
	}
	if n := uint32(l.rtpIn.Load()); n > ev.RTPPacketsReceived {
		ev.RTPPacketsReceived = n
	}
	return ev
}
