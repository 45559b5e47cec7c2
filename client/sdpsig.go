package client

import (
	"strings"
	"time"
	"unicode"

	"github.com/parley-voice/parley/proto"
)

// Every offer and answer we send carries a signature by our identity key
// over its DTLS fingerprints (proto/sdpsig.go), and every one we receive
// must carry one by the key we trust for its sender, or the link is
// refused: a signaling server that swapped fingerprints to sit in the
// middle of a "direct" call is caught before DTLS starts.

// SecurityEvent: something that should not happen did, and the client
// refused it. A server (or anyone on the signaling path) tampered with a
// link offer or answer from With, or With's key is unknown.
type SecurityEvent struct {
	With    string     `json:"with"`
	Code    proto.Code `json:"code"`
	Message string     `json:"message"`
}

func (SecurityEvent) event() {}

// EventName is its name in the JSON-lines mode.
func (SecurityEvent) EventName() string { return "security" }

// sendSDP signs and sends an offer or answer to peer (loop goroutine).
func (c *Client) sendSDP(t proto.Type, peer, session, sdp string) error {
	s := &proto.SDP{Session: session, SDP: sdp, NAT: c.ownNATHint()} // the hint is not signed (path.go)
	proto.SignSDP(c.cfg.Key, t, c.cfg.Name, peer, s)
	return c.sendSig(t, peer, s)
}

// checkSDP verifies the signature of an offer or answer from peer against
// the key we trust for peer. On failure it tells the user loudly, ends a
// call with peer and returns false (loop goroutine).
func (c *Client) checkSDP(t proto.Type, peer string, s *proto.SDP) bool {
	key := c.peerKey(peer)
	var err error
	if key == nil {
		err = proto.Errorf(proto.CodeInsecure, "a connection %s from %s came with no key known for %s to check it against", t, peer, peer)
	} else if verr := proto.VerifySDP(key, t, peer, c.cfg.Name, s); verr != nil {
		err = proto.Errorf(proto.CodeInsecure, "%s — someone between you (the server?) may be trying to listen in; the connection was refused", verr.(*proto.Error).Message)
	}
	if err == nil {
		return true
	}
	pe := err.(*proto.Error)
	c.log.Error("client: refused an unsigned or tampered link description", "peer", peer, "type", t, "err", pe.Message)
	c.events.push(SecurityEvent{With: peer, Code: pe.Code, Message: pe.Message})
	// A call ringing now, or a ring that follows the refused offer, is
	// declined as insecure: the peer learns why at once, not at a timeout.
	c.insecure[peer] = time.Now()
	if k := c.calls[peer]; k != nil {
		c.endCallCode(peer, proto.EndInsecure, "the connection to "+peer+" was tampered with on the way and refused", "", true)
	}
	if l := c.links[peer]; l != nil && l.session == s.Session {
		c.closeLink(peer, l, "insecure", true)
	} else {
		c.sendSig(proto.TypeBye, peer, &proto.Bye{Session: s.Session, Reason: "insecure"})
	}
	return false
}

// insecureFor is how long after refusing a peer's tampered link its rings
// are declined as insecure.
const insecureFor = 30 * time.Second

// refusedInsecure reports whether peer's link was refused as tampered
// with moments ago (loop goroutine).
func (c *Client) refusedInsecure(peer string) bool {
	t, ok := c.insecure[peer]
	if ok && time.Since(t) > insecureFor {
		delete(c.insecure, peer)
		return false
	}
	return ok
}

// sanitizeText drops control characters (terminal escape sequences) and
// bidirectional overrides (which can make text read as other text) from
// text a peer chose, before an app shows it.
func sanitizeText(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case unicode.IsControl(r) && r != '\n' && r != '\t',
			r >= 0x202a && r <= 0x202e, r >= 0x2066 && r <= 0x2069:
			return -1
		}
		return r
	}, s)
}
