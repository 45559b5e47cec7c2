package client

import (
	"sync/atomic"
	"time"

	"github.com/parley-voice/parley/internal/sockbuf"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/stun/v4"
	"github.com/pion/webrtc/v4"
)

// How a link finds its path and keeps it (RFC 8445 with renomination,
// draft-thatcher-ice-renomination-01, as pion/ice implements it):
//
//  1. Connect on the first working pair. The controlling side (the
//     offerer) nominates a host, server- or peer-reflexive pair as soon
//     as its check succeeds (acceptance waits 0) and a relayed one after
//     a wait that the two NAT reports justify (plan.relayWait): none
//     when they say no direct path can exist, a little when they say one
//     will, a little more when a report is missing.
//  2. Move to the best. pion's automatic renomination keeps checking
//     every pair and renominates when a better one works: a relayed call
//     moves to a direct pair when one succeeds. Never the reverse: while
//     the selected pair is direct our nomination generator hands pion no
//     value, which makes its renomination a no-op on both sides (the
//     controlling side switches only on a valued nomination, the
//     controlled side only to a pair of higher priority, and a relayed
//     pair's priority is always lower than a direct one's).
//  3. Keep a warm standby. The same renomination checks keep every other
//     pair answering: the relayed pair of a direct call, the pair through
//     the second supernode of a relayed call (plan.relays).
//  4. Fail over without a restart. ICE checks the selected pair every
//     Keepalive and calls it dead (ICE "disconnected") after DeadAfter
//     without a packet from it. While it is dead, the first binding
//     request that arrives on a pair that has answered our checks makes
//     that pair the selected one (SetICEBindingRequestHandler): the
//     controlled side switches first (the controlling side's
//     renomination checks reach it on every pair each Keepalive), its
//     keepalives then arrive on the new pair and the controlling side
//     follows. Audio stops for about DeadAfter + 2 × Keepalive.
//  5. Restart ICE (RFC 8445 section 9) only when no standby answers
//     (link.go).

// PathConfig tunes how links find and keep their path. The zero value is
// what the binaries use.
type PathConfig struct {
	// DeadAfter is how long the selected pair may deliver nothing (no
	// media, no keepalive answer) before it counts as dead and the link
	// moves to a standby pair (ICE "disconnected"). Zero means 300 ms.
	DeadAfter time.Duration
	// Keepalive is how often ICE checks the selected pair (consent
	// freshness, RFC 7675) and every standby pair. Zero means 100 ms.
	Keepalive time.Duration
	// GiveUp is how long a link may go without any working pair, while it
	// connects or after its path died with no standby, before ICE fails:
	// a call without a path then ends with "no network path". Zero means
	// 6 s (DeadAfter included).
	GiveUp time.Duration
	// Renominate is how often the controlling side may move the link to
	// a better pair (a relayed call to a direct pair). Zero means 500 ms.
	Renominate time.Duration
}

func (p *PathConfig) setDefaults() {
	if p.DeadAfter <= 0 {
		p.DeadAfter = 300 * time.Millisecond
	}
	if p.Keepalive <= 0 {
		p.Keepalive = 100 * time.Millisecond
	}
	if p.GiveUp <= p.DeadAfter {
		p.GiveUp = 6 * time.Second
	}
	if p.Renominate <= 0 {
		p.Renominate = 500 * time.Millisecond
	}
}

// Relay acceptance waits (plan.relayWait).
const (
	// relayWaitDirect: both NAT reports predict a direct path; if it has
	// not worked by then, a relayed pair is taken (and renomination
	// still moves to the direct pair if it comes later).
	relayWaitDirect = 500 * time.Millisecond
	// relayWaitUnknown: a report is missing (a browser, a client still
	// probing). Direct pairs need one or two round trips once candidates
	// are in; a relay that works sooner carries the call until then.
	relayWaitUnknown = 250 * time.Millisecond
)

// plan is what the two NAT reports of a link predict: its relays and how
// long its controlling side waits for a direct pair.
type plan struct {
	own, peer proto.NATType // empty or unknown: not reported
	relayOnly bool          // ICE transport policy "relay": nothing else is gathered
}

func known(t proto.NATType) bool { return t != "" && t != proto.NATUnknown }

// noDirect: no direct pair can work (RFC 4787 reasoning,
// proto.NeedsRelay), or none is gathered.
func (p plan) noDirect() bool {
	if p.relayOnly || p.own == proto.NATUDPBlocked || p.peer == proto.NATUDPBlocked {
		return true
	}
	return known(p.own) && known(p.peer) && proto.NeedsRelay(p.own, p.peer)
}

// relayWait is the relayed pairs' acceptance wait on the controlling side.
func (p plan) relayWait() time.Duration {
	switch {
	case p.noDirect():
		return 0
	case known(p.own) && known(p.peer):
		return relayWaitDirect
	}
	return relayWaitUnknown
}

// relays is how many supernodes the link allocates on: two (the second
// is the warm standby) when the call may be relayed, else one (the
// standby of a direct call).
func (p plan) relays() int {
	switch {
	case p.noDirect():
		return 2
	case known(p.own) && known(p.peer):
		return 1
	case known(p.own) && !needsRelay(p.own):
		return 1
	}
	return 2
}

// pathWatch follows one link's selected pair for the failover handler and
// the nomination generator, which pion calls on its own goroutines.
type pathWatch struct {
	controlling bool          // our side nominates (the offerer)
	fresh       time.Duration // a standby must have answered within this (controlling side)
	lost        atomic.Bool   // the selected pair is dead (watchPath)
	direct      atomic.Bool   // the selected pair is direct
	nominated   atomic.Uint32 // renomination values handed out
	failovers   atomic.Uint32 // switches made by onBindingRequest
}

// nomination is the renomination value generator: zero (no renomination)
// while the selected pair is direct, so pion never moves a direct call to
// a relay.
func (w *pathWatch) nomination() uint32 {
	if w.direct.Load() {
		return 0
	}
	return w.nominated.Add(1)
}

// onBindingRequest runs on ICE's loop for every binding request received.
// While the selected pair is dead it selects the pair the request came on,
// if that pair answered our checks: the path works from the peer to us
// now, and worked our way. The controlling side checks every pair each
// keepalive, so it asks for an answer within fresh; the controlled side
// checks only its selected pair, so an answer at any time will do. It
// must not call into the agent.
func (w *pathWatch) onBindingRequest(_ *stun.Message, local, remote ice.Candidate, pair *ice.CandidatePair) bool {
	if pair == nil || !w.lost.Load() || pair.ResponsesReceived() == 0 {
		return false
	}
	if w.controlling && time.Since(pair.LastResponseReceivedAt()) > w.fresh {
		return false
	}
	if !w.lost.CompareAndSwap(true, false) {
		return false // another request switched already
	}
	w.direct.Store(local.Type() != ice.CandidateTypeRelay && remote.Type() != ice.CandidateTypeRelay)
	w.failovers.Add(1)
	return true
}

// follow tracks pc's selected pair type.
func (w *pathWatch) follow(pc *webrtc.PeerConnection) {
	pc.SCTP().Transport().ICETransport().OnSelectedCandidatePairChange(func(p *webrtc.ICECandidatePair) {
		if p != nil && p.Local != nil && p.Remote != nil {
			w.direct.Store(p.Local.Typ != webrtc.ICECandidateTypeRelay && p.Remote.Typ != webrtc.ICECandidateTypeRelay)
		}
	})
}

// watchPath decides when l's selected pair is dead: when ICE's checks on
// that very pair (one per Keepalive, on both sides) have gone unanswered
// for DeadAfter. pion's own "disconnected" cannot tell: it watches the
// remote candidate, which other pairs share (the peer's server-reflexive
// address reaches us through a relay too), and it counts media on
// whatever pair it arrives. It runs until l closes, telling the loop when
// the path dies and when a pair works again.
func (c *Client) watchPath(l *link) {
	dead := c.cfg.Path.DeadAfter
	tick := time.NewTicker(dead / 6)
	defer tick.Stop()
	it := l.pc.SCTP().Transport().ICETransport()
	var pair string // the selected pair's candidate ids
	var answers uint64
	var since time.Time // when answers last grew (or the pair changed)
	lost := false
	post := func(f func()) {
		c.box.post(func() {
			if c.links[l.peer] == l && !l.closed.Load() {
				f()
			}
		})
	}
	for {
		select {
		case <-l.done:
			return
		case now := <-tick.C:
			st, ok := it.GetSelectedCandidatePairStats()
			if !ok {
				pair = ""
				continue
			}
			if id := st.LocalCandidateID + "/" + st.RemoteCandidateID; id != pair || st.ResponsesReceived != answers {
				pair, answers, since = id, st.ResponsesReceived, now
				if lost {
					lost = false
					l.watch.lost.Store(false)
					post(func() { c.pathBack(l) })
				}
				continue
			}
			if !lost && now.Sub(since) >= dead {
				lost = true
				l.watch.lost.Store(true)
				post(func() { c.pathLost(l) })
			}
		}
	}
}

// linkAPI builds the WebRTC API of one link: Opus (and the default
// codecs), the default interceptors (RTCP reports, NACK, stats), relays
// through supernodes (relay.go), the path policy above, then the caller's
// settings.
func (c *Client) linkAPI(p plan, w *pathWatch) (*webrtc.API, error) {
	m := &webrtc.MediaEngine{}
	if err := m.RegisterDefaultCodecs(); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(m, ir); err != nil {
		return nil, err
	}
	pc := c.cfg.Path
	se := webrtc.SettingEngine{}
	se.SetICEProxyDialer(c.relay) // TURN over QUIC streams to supernodes (relay.go)
	se.SetNet(&sockbuf.Net{})     // ICE sockets that hold a data channel's window (a file at full speed)
	// pion's own "disconnected" (after Keepalive without a packet from the
	// remote candidate) only paces its loop: while checking, pion checks
	// every min(200 ms, disconnected timeout) and nominates only on those
	// ticks, so a pair that succeeds just after one would wait up to
	// 200 ms. watchPath, not pion's state, decides that a path died.
	se.SetICETimeouts(pc.Keepalive, pc.GiveUp-pc.Keepalive, pc.Keepalive)
	se.SetICEMaxBindingRequests(uint16(2 * time.Second / pc.Keepalive)) // a pair is checked for 2 s before it counts as failed
	se.SetHostAcceptanceMinWait(0)
	se.SetSrflxAcceptanceMinWait(0)
	se.SetPrflxAcceptanceMinWait(0)
	se.SetRelayAcceptanceMinWait(p.relayWait())
	if err := se.SetICERenomination(webrtc.WithRenominationGenerator(w.nomination), webrtc.WithRenominationInterval(pc.Renominate)); err != nil {
		return nil, err
	}
	se.SetICEBindingRequestHandler(w.onBindingRequest)
	if c.cfg.SettingEngine != nil {
		c.cfg.SettingEngine(&se)
	}
	return webrtc.NewAPI(webrtc.WithMediaEngine(m), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se)), nil
}

// peerNAT is what we know of peer's NAT: the hint of its last offer or
// answer, else its presence (loop goroutine).
func (c *Client) peerNAT(peer string) proto.NATType {
	if t, ok := c.natHints[peer]; ok {
		return t
	}
	if p, ok := c.presence[peer]; ok {
		return p.NAT
	}
	return ""
}

// ownNATHint is our NAT type for offers and answers; empty when unknown.
func (c *Client) ownNATHint() proto.NATType {
	if t := c.natType(); known(t) {
		return t
	}
	return ""
}
