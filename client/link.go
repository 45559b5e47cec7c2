package client

import (
	"fmt"
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// link is the one peer connection we keep with a peer: an audio
// transceiver (sendrecv; silent until a call connects) and the negotiated
// chat data channel (id 0). The side that needs the link first offers; if
// both offer at once ("glare"), the offer of the lexically smaller name wins.
type link struct {
	peer      string
	session   string
	pc        *webrtc.PeerConnection
	dc        *webrtc.DataChannel
	track     *webrtc.TrackLocalStaticSample
	offerer   bool
	remoteSet bool
	pending   []webrtc.ICECandidateInit
	state     webrtc.PeerConnectionState
	dcOpen    bool
	created   time.Time
	connected time.Time

	// Path keeping (path.go): the NAT reports' plan, the failover
	// watch, and ICE restart (RFC 8445 section 9) when no standby pair
	// answers: the offerer restarts, the answerer answers the new offer.
	plan        plan
	watch       *pathWatch
	restarts    int                      // restarts since the path was last up
	restartedAt time.Time                // when we last restarted (offerer) or asked for one (answerer)
	lostAt      time.Time                // when the path was lost (zero while it is up)
	viaName     func(addr string) string // relay address -> supernode id (relay.go)

	// sink receives audio while a call is connected; read by the RTP
	// reader goroutine.
	sink   atomic.Pointer[sinkBox]
	rtpIn  atomic.Uint64
	rtpOut atomic.Uint64 // audio packets written to track
	closed atomic.Bool
	done   chan struct{} // closed with the link: stops watchPath
	// gathered counts local candidates since the last gathering began.
	gathered atomic.Int32
}

type sinkBox struct{ s AudioSink }

// newLink creates a peer connection for peer (loop goroutine).
func (c *Client) newLink(peer, session string, offerer bool) (*link, error) {
	p := plan{own: c.natType(), peer: c.peerNAT(peer), relayOnly: c.cfg.ICETransportPolicy == webrtc.ICETransportPolicyRelay}
	w := &pathWatch{controlling: offerer, fresh: 10 * c.cfg.Path.Keepalive}
	api, err := c.linkAPI(p, w)
	if err != nil {
		return nil, fmt.Errorf("client: WebRTC settings for %s: %w", peer, err)
	}
	conf := webrtc.Configuration{
		ICEServers:         c.linkICEServers(p),
		ICETransportPolicy: c.cfg.ICETransportPolicy,
	}
	pc, err := api.NewPeerConnection(conf)
	if err != nil {
		return nil, fmt.Errorf("client: peer connection with %s: %w", peer, err)
	}
	w.follow(pc)
	l := &link{peer: peer, session: session, pc: pc, offerer: offerer, created: time.Now(), state: webrtc.PeerConnectionStateNew,
		plan: p, watch: w, viaName: c.relay.viaName, done: make(chan struct{})}
	c.log.Debug("client: link plan", "peer", peer, "own_nat", p.own, "peer_nat", p.peer, "relay_wait", p.relayWait(), "relays", p.relays())
	fail := func(err error) (*link, error) {
		pc.Close()
		return nil, fmt.Errorf("client: set up link with %s: %w", peer, err)
	}
	l.track, err = webrtc.NewTrackLocalStaticSample(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "parley-"+c.cfg.Name)
	if err != nil {
		return fail(err)
	}
	tr, err := pc.AddTransceiverFromTrack(l.track, webrtc.RTPTransceiverInit{Direction: webrtc.RTPTransceiverDirectionSendrecv})
	if err != nil {
		return fail(err)
	}
	go drainRTCP(tr.Sender())
	negotiated, id := true, uint16(0)
	l.dc, err = pc.CreateDataChannel(proto.DataChannelLabel, &webrtc.DataChannelInit{Negotiated: &negotiated, ID: &id})
	if err != nil {
		return fail(err)
	}
	post := func(f func()) {
		c.box.post(func() {
			if c.links[peer] == l && !l.closed.Load() {
				f()
			}
		})
	}
	pc.OnICECandidate(func(cand *webrtc.ICECandidate) {
		if cand == nil {
			post(func() { c.onGathered(l) })
			return
		}
		l.gathered.Add(1)
		init := cand.ToJSON()
		post(func() {
			c.sendSig(proto.TypeCandidate, peer, &proto.Candidate{
				Session: session, Candidate: init.Candidate, SDPMid: init.SDPMid,
				SDPMLineIndex: init.SDPMLineIndex, UsernameFrag: init.UsernameFragment,
			})
		})
	})
	pc.OnConnectionStateChange(func(s webrtc.PeerConnectionState) {
		post(func() { c.onLinkState(l, s) })
	})
	c.filesWatchLink(l) // file channels the peer opens (files_recv.go)
	l.dc.OnOpen(func() {
		post(func() {
			l.dcOpen = true
			path, via, _, _ := pathOf(l)
			c.events.push(LinkEvent{With: peer, State: "open", Path: path, Via: via})
			c.chatFlush(peer)
			c.filesLinkOpen(l) // transfers resume (files.go)
		})
	})
	l.dc.OnClose(func() { post(func() { l.dcOpen = false }) })
	l.dc.OnMessage(func(msg webrtc.DataChannelMessage) {
		data := append([]byte(nil), msg.Data...)
		post(func() { c.onDCMessage(l, data) })
	})
	pc.OnTrack(func(t *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		go l.readRTP(t, func() {
			post(func() {
				if k := c.calls[peer]; k != nil {
					c.events.push(AudioEvent{With: peer})
				}
			})
		})
	})
	return l, nil
}

func drainRTCP(s *webrtc.RTPSender) {
	buf := make([]byte, 1500)
	for {
		if _, _, err := s.Read(buf); err != nil {
			return
		}
	}
}

// readRTP counts received audio and hands it to the call's sink.
// first is called once, on the first packet.
func (l *link) readRTP(t *webrtc.TrackRemote, first func()) {
	for {
		pkt, _, err := t.ReadRTP()
		if err != nil {
			return
		}
		if l.rtpIn.Add(1) == 1 {
			first()
		}
		if b := l.sink.Load(); b != nil && b.s != nil {
			b.s.WriteRTP(pkt)
		}
	}
}

// ensureLink returns the link to peer, creating one and sending an offer
// if there is none (loop goroutine).
func (c *Client) ensureLink(peer string) (*link, error) {
	if l := c.links[peer]; l != nil {
		return l, nil
	}
	if c.sig == nil {
		return nil, ErrNotSignedIn
	}
	l, err := c.newLink(peer, randomID(), true)
	if err != nil {
		return nil, err
	}
	c.links[peer] = l
	offer, err := l.pc.CreateOffer(nil)
	if err == nil {
		err = l.pc.SetLocalDescription(offer)
	}
	if err == nil {
		err = c.sendSDP(proto.TypeOffer, peer, l.session, offer.SDP)
	}
	if err != nil {
		c.closeLink(peer, l, "offer failed", false)
		return nil, fmt.Errorf("client: offer to %s: %w", peer, err)
	}
	c.log.Debug("client: offered link", "peer", peer, "session", l.session)
	return l, nil
}

// onLinkSignal handles offer, answer, candidate and bye (loop goroutine).
func (c *Client) onLinkSignal(env *proto.Envelope) {
	peer := env.From
	switch env.Type {
	case proto.TypeOffer:
		s, err := proto.DecodeBody[*proto.SDP](env)
		if err != nil || !c.checkSDP(env.Type, peer, s) {
			return
		}
		c.noteNAT(peer, s.NAT)
		if l := c.links[peer]; l != nil {
			if l.session == s.Session {
				if !l.offerer && l.remoteSet {
					c.answerRestart(l, s.SDP) // the offerer restarts ICE
				}
				return
			}
			if l.offerer && !l.remoteSet && c.cfg.Name < peer {
				return // glare: our offer wins; theirs is dropped
			}
			// Glare we lose, or the peer restarted: theirs replaces ours.
			c.closeLink(peer, l, "replaced by a new offer", false)
		}
		l, err := c.newLink(peer, s.Session, false)
		if err != nil {
			c.log.Warn("client: link", "peer", peer, "err", err)
			return
		}
		c.links[peer] = l
		err = l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: s.SDP})
		var answer webrtc.SessionDescription
		if err == nil {
			l.remoteSet = true
			answer, err = l.pc.CreateAnswer(nil)
		}
		if err == nil {
			err = l.pc.SetLocalDescription(answer)
		}
		if err == nil {
			c.flushCandidates(l)
			err = c.sendSDP(proto.TypeAnswer, peer, s.Session, answer.SDP)
		}
		if err != nil {
			c.log.Warn("client: bad offer", "peer", peer, "err", err)
			c.events.push(ErrorEvent{Err: proto.Errorf(proto.CodeBadRequest, "could not accept the connection offer from %s: %v", peer, err)})
			c.closeLink(peer, l, "bad offer", true)
		}
	case proto.TypeAnswer:
		s, err := proto.DecodeBody[*proto.SDP](env)
		l := c.links[peer]
		if err != nil || l == nil || l.session != s.Session || !l.offerer || l.remoteSet || !c.checkSDP(env.Type, peer, s) {
			return
		}
		c.noteNAT(peer, s.NAT)
		if s.NAT != "" {
			l.plan.peer = s.NAT
		}
		if err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeAnswer, SDP: s.SDP}); err != nil {
			c.log.Warn("client: bad answer", "peer", peer, "err", err)
			c.closeLink(peer, l, "bad answer", true)
			return
		}
		l.remoteSet = true
		c.flushCandidates(l)
	case proto.TypeCandidate:
		cand, err := proto.DecodeBody[*proto.Candidate](env)
		l := c.links[peer]
		if err != nil || l == nil || l.session != cand.Session || cand.Candidate == "" {
			return
		}
		init := webrtc.ICECandidateInit{Candidate: cand.Candidate, SDPMid: cand.SDPMid, SDPMLineIndex: cand.SDPMLineIndex, UsernameFragment: cand.UsernameFrag}
		if !l.remoteSet {
			if len(l.pending) < 256 {
				l.pending = append(l.pending, init)
			}
			return
		}
		if err := l.pc.AddICECandidate(init); err != nil {
			c.log.Debug("client: bad candidate", "peer", peer, "err", err)
		}
	case proto.TypeBye:
		b, err := proto.DecodeBody[*proto.Bye](env)
		if l := c.links[peer]; err == nil && l != nil && l.session == b.Session {
			c.closeLink(peer, l, "closed by peer", false)
		}
	case proto.TypeRestart:
		// The answerer lost the path (its media stopped) while ours may
		// still look fine: restart, unless one is under way.
		r, err := proto.DecodeBody[*proto.Restart](env)
		if l := c.links[peer]; err == nil && l != nil && l.session == r.Session && l.offerer && l.remoteSet &&
			time.Since(l.restartedAt) > restartSpacing {
			c.log.Info("client: peer asks for an ICE restart", "peer", peer)
			if l.lostAt.IsZero() {
				l.lostAt = time.Now()
			}
			c.restartICE(l)
		}
	}
}

func (c *Client) flushCandidates(l *link) {
	for _, init := range l.pending {
		if err := l.pc.AddICECandidate(init); err != nil {
			c.log.Debug("client: bad candidate", "peer", l.peer, "err", err)
		}
	}
	l.pending = nil
}

// onLinkState follows the peer connection's state (loop goroutine).
func (c *Client) onLinkState(l *link, s webrtc.PeerConnectionState) {
	l.state = s
	c.log.Debug("client: link state", "peer", l.peer, "state", s)
	switch s {
	case webrtc.PeerConnectionStateConnected:
		if l.connected.IsZero() {
			l.connected = time.Now()
			// From now on the selected pair is watched. Not before: pion's
			// ICETransport reads its gatherer unlocked until it started.
			go c.watchPath(l)
		}
		if !l.lostAt.IsZero() {
			c.pathBack(l) // checks the call is still the peer's (call.go checkCall)
		} else if k := c.calls[l.peer]; k != nil && k.accepted && k.lastLink != "" && k.lastLink != l.session {
			c.checkCall(l.peer) // the call's link was made anew
		}
		c.maybeConnectCall(l.peer)
	case webrtc.PeerConnectionStateDisconnected:
		// pion's view: nothing from the remote candidate for a keepalive
		// or so. It comes and goes with a lost packet; watchPath decides
		// whether the path died (path.go).
	case webrtc.PeerConnectionStateFailed:
		if !l.connected.IsZero() && l.restarts < maxICERestarts {
			c.pathLost(l)
			if l.offerer {
				c.restartICE(l)
			}
			return
		}
		if _, ok := c.calls[l.peer]; ok {
			c.endCallCode(l.peer, proto.EndNoPath, noPathReason(l.peer), "", true)
		}
		c.closeLink(l.peer, l, "ice failed", true)
	}
}

// noPathReason is the reason a call ends with when ICE found no path.
func noPathReason(peer string) string {
	return "no network path: the connection to " + peer + " failed (NATs or firewalls block a direct path and no relay was usable)"
}

// onGathered runs when ICE gathering completes: with no local candidate
// at all (relay-only and no relay, or no usable interface) no path can
// ever form, so the link fails at once, in words that say why, rather
// than after ICE's timeouts (loop goroutine).
func (c *Client) onGathered(l *link) {
	if l.gathered.Load() > 0 || l.state == webrtc.PeerConnectionStateConnected {
		return
	}
	code, why := proto.EndNoPath, "no network path: no network interface could be used"
	if c.cfg.ICETransportPolicy == webrtc.ICETransportPolicyRelay {
		code, why = proto.EndNoRelay, "no network path: every call is relayed (\"always relay\") and no relay is available"
	}
	c.log.Warn("client: no local candidates", "peer", l.peer, "why", why)
	if _, ok := c.calls[l.peer]; ok {
		c.endCallCode(l.peer, code, why, "", true)
	}
	c.closeLink(l.peer, l, why, true)
}

// maxICERestarts bounds the ICE restarts tried for one lost path,
// restartGiveUp how long a lost path may take to come back, and
// standbyGrace how long a standby pair gets to take over before the
// offerer restarts ICE anyway.
const (
	maxICERestarts = 3
	restartGiveUp  = 20 * time.Second
	standbyGrace   = time.Second
	restartSpacing = 2 * time.Second // the least time between two restarts (or requests for one)
)

// pathLost notes that l's path died (loop goroutine). A standby pair
// normally takes over within a few keepalives (path.go); the offerer
// restarts ICE now if none is answering, else linkTick does after
// standbyGrace.
func (c *Client) pathLost(l *link) {
	if !l.lostAt.IsZero() || l.connected.IsZero() {
		return
	}
	l.lostAt = time.Now()
	standby := liveStandby(l, l.lostAt, 2*c.cfg.Path.Keepalive)
	c.log.Info("client: path lost", "peer", l.peer, "standby", standby)
	if l.offerer && !standby {
		c.restartICE(l)
	}
}

// pathBack notes that a pair works again (loop goroutine): a standby took
// over, the old pair answered again, or ICE is back after a restart.
func (c *Client) pathBack(l *link) {
	if l.lostAt.IsZero() || l.state != webrtc.PeerConnectionStateConnected || l.watch.lost.Load() {
		return
	}
	c.log.Info("client: path recovered", "peer", l.peer, "after", time.Since(l.lostAt), "restarts", l.restarts,
		"failovers", l.watch.failovers.Load())
	l.lostAt, l.restarts = time.Time{}, 0
	if k := c.calls[l.peer]; k != nil && k.state == CallConnected {
		c.emitCall(k, "path recovered") // the path (or relay) may have changed
	}
	c.checkCall(l.peer) // the peer may have restarted meanwhile (call.go)
}

// liveStandby reports whether any candidate pair answered a check within
// recent (two keepalives): the selected pair has been quiet for longer,
// so such a pair is a standby the failover handler can switch to
// (path.go).
func liveStandby(l *link, now time.Time, recent time.Duration) bool {
	for _, s := range l.pc.GetStats() {
		if p, ok := s.(webrtc.ICECandidatePairStats); ok && p.ResponsesReceived > 0 &&
			now.Sub(p.LastResponseTimestamp.Time()) < recent {
			return true
		}
	}
	return false
}

// restartICE gathers again with the current ICE servers (a new supernode
// list) and sends an ICE-restart offer on the same session.
func (c *Client) restartICE(l *link) {
	if l.restarts >= maxICERestarts {
		return
	}
	if c.sig == nil {
		// No server to carry the offer: applying it here would only end
		// the pair that may still come back (a stall, not a dead path), so
		// the restart waits for the server (linkTick asks again each tick;
		// restartGiveUp still ends a path that stays dead).
		return
	}
	l.restarts++
	l.restartedAt = time.Now()
	if pend := l.pc.PendingLocalDescription(); pend != nil && l.pc.SignalingState() == webrtc.SignalingStateHaveLocalOffer {
		// The last restart's offer got no answer (the peer was away, or
		// restarted): send it again; pion refuses a second local offer.
		if err := c.sendSDP(proto.TypeOffer, l.peer, l.session, pend.SDP); err != nil {
			c.log.Warn("client: ICE restart", "peer", l.peer, "err", err)
		}
		return
	}
	l.gathered.Store(0)
	c.refreshICEServers(l)
	offer, err := l.pc.CreateOffer(&webrtc.OfferOptions{ICERestart: true})
	if err == nil {
		err = l.pc.SetLocalDescription(offer)
	}
	if err == nil {
		err = c.sendSDP(proto.TypeOffer, l.peer, l.session, offer.SDP)
	}
	if err != nil {
		c.log.Warn("client: ICE restart", "peer", l.peer, "err", err)
		return
	}
	l.remoteSet = false // the answer to this offer is awaited
	c.log.Info("client: ICE restart", "peer", l.peer, "attempt", l.restarts)
}

// refreshICEServers gives l the current ICE servers (the supernode list
// may have changed since the link was made) for the next gathering.
func (c *Client) refreshICEServers(l *link) {
	l.plan.own = c.natType()
	conf := l.pc.GetConfiguration()
	conf.ICEServers = c.linkICEServers(l.plan)
	if err := l.pc.SetConfiguration(conf); err != nil {
		c.log.Warn("client: ICE servers for restart", "peer", l.peer, "err", err)
	}
}

// linkICEServers are the ICE servers of a new link or restart: the
// configured ones and the welcome's, with the supernodes the plan asks
// for reached through the proxy dialer (relay.go).
func (c *Client) linkICEServers(p plan) []webrtc.ICEServer {
	return c.relay.iceServers(append(append([]webrtc.ICEServer{}, c.cfg.ICEServers...), c.iceServers...), p.relays())
}

// answerRestart answers the offerer's ICE-restart offer.
func (c *Client) answerRestart(l *link, sdp string) {
	if l.lostAt.IsZero() {
		l.lostAt = time.Now()
	}
	c.refreshICEServers(l)
	l.gathered.Store(0)
	err := l.pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: sdp})
	var answer webrtc.SessionDescription
	if err == nil {
		answer, err = l.pc.CreateAnswer(nil)
	}
	if err == nil {
		err = l.pc.SetLocalDescription(answer)
	}
	if err == nil {
		err = c.sendSDP(proto.TypeAnswer, l.peer, l.session, answer.SDP)
	}
	if err != nil {
		c.log.Warn("client: answer ICE restart", "peer", l.peer, "err", err)
	}
}

// linkTick restarts ICE where a standby did not take over, and gives up
// on links whose lost path did not come back.
func (c *Client) linkTick(now time.Time) {
	for peer, l := range c.links {
		if l.lostAt.IsZero() {
			continue
		}
		down := l.watch.lost.Load() || l.state != webrtc.PeerConnectionStateConnected
		switch {
		case l.offerer && l.restarts == 0 && down && now.Sub(l.lostAt) >= standbyGrace:
			c.restartICE(l)
		case !l.offerer && down && now.Sub(l.lostAt) >= standbyGrace && now.Sub(l.restartedAt) > restartSpacing:
			// No standby took over and only the offerer restarts (a
			// browser's ICE notices a dead path only after seconds).
			l.restartedAt = now
			c.sendSig(proto.TypeRestart, peer, &proto.Restart{Session: l.session})
		}
		if now.Sub(l.lostAt) < restartGiveUp {
			continue
		}
		if _, ok := c.calls[peer]; ok {
			c.endCallCode(peer, proto.EndNoPath, "connection to "+peer+" lost and not recovered", "", true)
		}
		c.closeLink(peer, l, "path lost", true)
	}
}

// noteNAT remembers the NAT type a peer's offer or answer announced.
func (c *Client) noteNAT(peer string, t proto.NATType) {
	if t == "" {
		return
	}
	if len(c.natHints) >= 4096 {
		clear(c.natHints)
	}
	c.natHints[peer] = t
}

// closeLink forgets l and closes its peer connection in the background.
func (c *Client) closeLink(peer string, l *link, reason string, sendBye bool) {
	if c.links[peer] == l {
		delete(c.links, peer)
	}
	if l.closed.Swap(true) {
		return
	}
	close(l.done)
	if l.dcOpen {
		c.events.push(LinkEvent{With: peer, State: "closed"})
	}
	if c.links[peer] == nil {
		c.linkGone(peer) // signaling.go
	}
	c.detachCall(peer, l.session) // a call on it waits for the next link (call.go)
	if sendBye {
		c.sendSig(proto.TypeBye, peer, &proto.Bye{Session: l.session, Reason: reason})
	}
	c.log.Debug("client: link closed", "peer", peer, "reason", reason)
	go l.pc.Close()
}

// pathOf describes the selected ICE pair: "direct" or "relay" (and the
// relay's address), plus both candidate types.
func pathOf(l *link) (path, via, local, remote string) {
	sctp := l.pc.SCTP()
	if sctp == nil || sctp.Transport() == nil || sctp.Transport().ICETransport() == nil {
		return "", "", "", ""
	}
	pair, err := sctp.Transport().ICETransport().GetSelectedCandidatePair()
	if err != nil || pair == nil || pair.Local == nil || pair.Remote == nil {
		return "", "", "", ""
	}
	local, remote = pair.Local.Typ.String(), pair.Remote.Typ.String()
	switch {
	case pair.Local.Typ == webrtc.ICECandidateTypeRelay:
		return "relay", l.viaName(fmt.Sprintf("%s:%d", pair.Local.Address, pair.Local.Port)), local, remote
	case pair.Remote.Typ == webrtc.ICECandidateTypeRelay:
		return "relay", l.viaName(fmt.Sprintf("%s:%d", pair.Remote.Address, pair.Remote.Port)), local, remote
	}
	return "direct", "", local, remote
}
