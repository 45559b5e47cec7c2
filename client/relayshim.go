package client

import (
	"encoding/binary"
	"net/netip"
	"sync"

	"github.com/pion/stun/v4"
)

// permCache sits between pion's TURN client and a relay stream and
// answers, itself, CreatePermission requests (RFC 8656 section 9) for a
// peer address the supernode has already refused with 403 Forbidden, and
// every one while the supernode has stopped answering (killed, cut off).
//
// Why: pion's ICE agent pairs every relayed candidate with every remote
// candidate, including the peer's private host addresses, which a
// supernode never relays to (supernode/README.md). With renomination the
// agent checks those pairs every keepalive forever, and pion's TURN client
// asks for the permission again before each check, synchronously, on the
// ICE agent's own loop: one round trip to the supernode per pair per
// keepalive while it is alive, and a 10-second stall of the whole agent
// (no checks, no failover) once it has died. The answer a refused peer
// gets from the cache is the supernode's own answer (403, signed with the
// same long-term credential, RFC 8489 section 9.2), only without the
// round trip; a quiet supernode's peers get the same answer, not
// remembered, so pion asks again (and the supernode decides) once it
// answers again.
type permCache struct {
	// password returns the TURN password of a username the server
	// handed out (pion may still use an earlier list's credential).
	password func(user string) (string, bool)
	// quiet reports that the supernode has stopped answering.
	quiet func() bool

	mu      sync.Mutex // guards the maps
	refused map[netip.Addr]bool
	pending map[[stun.TransactionIDSize]byte]netip.Addr // single-peer requests in flight
}

// maxPending bounds the requests remembered while in flight.
const maxPending = 256

func newPermCache(password func(user string) (string, bool), quiet func() bool) *permCache {
	return &permCache{password: password, quiet: quiet, refused: map[netip.Addr]bool{}, pending: map[[stun.TransactionIDSize]byte]netip.Addr{}}
}

// onWrite looks at a message pion's TURN client sends. For a
// CreatePermission request for one refused peer it returns the error
// response to hand back instead of sending it.
func (p *permCache) onWrite(b []byte) (answer []byte) {
	if !isSTUNType(b, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest)) {
		return nil
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if m.Decode() != nil {
		return nil
	}
	peers := xorPeerAddrs(m)
	refused := p.quiet()
	if len(peers) == 1 {
		p.mu.Lock()
		refused = refused || p.refused[peers[0]]
		if !refused && len(p.pending) < maxPending {
			p.pending[m.TransactionID] = peers[0]
		}
		p.mu.Unlock()
	}
	if !refused {
		return nil // (a refresh of several peers: the supernode decides)
	}
	// Sign the answer with the key the request was signed with, and
	// only when we know that key (the request verifies with it):
	// pion's TURN client silently drops an answer that does not verify,
	// and would wait out the whole transaction.
	var user stun.Username
	var realm stun.Realm
	if user.GetFrom(m) != nil || realm.GetFrom(m) != nil {
		return nil
	}
	pass, ok := p.password(user.String())
	if !ok {
		return nil
	}
	key := stun.NewLongTermIntegrity(user.String(), realm.String(), pass)
	if key.Check(m) != nil {
		return nil
	}
	resp, err := stun.Build(stun.NewTransactionIDSetter(m.TransactionID),
		stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse),
		stun.CodeForbidden, key, stun.Fingerprint)
	if err != nil {
		return nil
	}
	return resp.Raw
}

// onRead looks at a message from the supernode: a CreatePermission
// answer for a single-peer request teaches the cache.
func (p *permCache) onRead(b []byte) {
	okType := stun.NewType(stun.MethodCreatePermission, stun.ClassSuccessResponse)
	errType := stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse)
	if !isSTUNType(b, okType) && !isSTUNType(b, errType) {
		return
	}
	var id [stun.TransactionIDSize]byte
	copy(id[:], b[8:20])
	p.mu.Lock()
	defer p.mu.Unlock()
	peer, ok := p.pending[id]
	if !ok {
		return
	}
	delete(p.pending, id)
	if isSTUNType(b, okType) {
		delete(p.refused, peer)
		return
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	var code stun.ErrorCodeAttribute
	if m.Decode() == nil && code.GetFrom(m) == nil && code.Code == stun.CodeForbidden {
		p.refused[peer] = true
	}
}

// isSTUNType reports whether b is a whole STUN message of type t.
func isSTUNType(b []byte, t stun.MessageType) bool {
	return len(b) >= 20 && b[0]&0xc0 == 0 && binary.BigEndian.Uint16(b[0:2]) == t.Value() &&
		binary.BigEndian.Uint32(b[4:8]) == stunMagicCookie && int(binary.BigEndian.Uint16(b[2:4]))+20 == len(b)
}

// xorPeerAddrs decodes every XOR-PEER-ADDRESS of m (RFC 8656 section
// 18.3, encoded as XOR-MAPPED-ADDRESS, RFC 8489 section 14.2).
func xorPeerAddrs(m *stun.Message) []netip.Addr {
	var out []netip.Addr
	for _, a := range m.Attributes {
		if a.Type != stun.AttrXORPeerAddress || len(a.Value) < 8 {
			continue
		}
		ip := append([]byte(nil), a.Value[4:]...)
		var x [16]byte
		binary.BigEndian.PutUint32(x[0:4], stunMagicCookie)
		copy(x[4:], m.TransactionID[:])
		for i := range ip {
			if i < len(x) {
				ip[i] ^= x[i]
			}
		}
		if addr, ok := netip.AddrFromSlice(ip); ok && (len(ip) == 4 || len(ip) == 16) {
			out = append(out, addr.Unmap())
		}
	}
	return out
}

// stunMagicCookie is the fixed STUN cookie (RFC 8489 section 5).
const stunMagicCookie = 0x2112A442
