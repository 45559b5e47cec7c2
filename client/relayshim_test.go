package client

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v4"
)

// TestPermCache: a CreatePermission for a peer the supernode refused
// (403) is answered from the cache with the supernode's own answer,
// signed with the same long-term credential, so pion's TURN client
// accepts it; other requests still go to the supernode.
func TestPermCache(t *testing.T) {
	const user, realm, pass = "1700000000:alice", "parley", "secret"
	integrity := stun.NewLongTermIntegrity(user, realm, pass)
	request := func(peers ...string) *stun.Message {
		m, err := stun.Build(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest))
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if err := (stun.XORMappedAddress{IP: net.ParseIP(p), Port: 5000}).AddToAs(m, stun.AttrXORPeerAddress); err != nil {
				t.Fatal(err)
			}
		}
		for _, s := range []stun.Setter{stun.NewUsername(user), stun.NewRealm(realm), stun.NewNonce("n"), integrity, stun.Fingerprint} {
			if err := s.AddTo(m); err != nil {
				t.Fatal(err)
			}
		}
		return m
	}
	answer := func(req *stun.Message, code stun.ErrorCode) []byte {
		setters := []stun.Setter{stun.NewTransactionIDSetter(req.TransactionID), stun.NewType(stun.MethodCreatePermission, stun.ClassSuccessResponse)}
		if code != 0 {
			setters = []stun.Setter{stun.NewTransactionIDSetter(req.TransactionID), stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse), code}
		}
		m, err := stun.Build(append(setters, integrity, stun.Fingerprint)...)
		if err != nil {
			t.Fatal(err)
		}
		return m.Raw
	}
	var quiet bool
	p := newPermCache(func(u string) (string, bool) { return pass, u == user }, func() bool { return quiet })

	first := request("10.0.1.2")
	if a := p.onWrite(first.Raw); a != nil {
		t.Fatal("answered a peer the supernode never refused")
	}
	p.onRead(answer(first, stun.CodeForbidden))

	again := request("10.0.1.2")
	a := p.onWrite(again.Raw)
	if a == nil {
		t.Fatal("a refused peer's request went to the supernode again")
	}
	m := &stun.Message{Raw: a}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	var code stun.ErrorCodeAttribute
	if m.Type != stun.NewType(stun.MethodCreatePermission, stun.ClassErrorResponse) || m.TransactionID != again.TransactionID ||
		code.GetFrom(m) != nil || code.Code != stun.CodeForbidden {
		t.Fatalf("answer %v", m)
	}
	if err := integrity.Check(m); err != nil {
		t.Fatalf("answer's MESSAGE-INTEGRITY: %v", err)
	}

	// Another peer, and a refresh naming several, go to the supernode.
	if p.onWrite(request("203.0.113.9").Raw) != nil || p.onWrite(request("10.0.1.2", "203.0.113.9").Raw) != nil {
		t.Fatal("answered a request the supernode must decide")
	}
	// A peer the supernode permitted is not refused.
	fifth := request("203.0.113.7")
	p.onWrite(fifth.Raw)
	p.onRead(answer(fifth, 0))
	if p.onWrite(request("203.0.113.7").Raw) != nil {
		t.Fatal("a permitted peer answered from the cache")
	}
	// While the supernode is quiet (dead?), every request is answered at
	// once, and none is remembered as refused.
	quiet = true
	if p.onWrite(request("203.0.113.8").Raw) == nil || p.onWrite(request("10.0.9.9", "203.0.113.9").Raw) == nil {
		t.Fatal("a request waited for a supernode that stopped answering")
	}
	quiet = false
	if p.onWrite(request("203.0.113.8").Raw) != nil {
		t.Fatal("a peer answered while the supernode was quiet stays refused")
	}
	// A request signed with a key the cache does not know (an older
	// list's credential) is not answered: pion would drop the answer.
	stranger := newPermCache(func(string) (string, bool) { return "another", true }, func() bool { return false })
	stranger.refused[netip.MustParseAddr("10.0.1.2")] = true
	if stranger.onWrite(request("10.0.1.2").Raw) != nil {
		t.Fatal("answered with a key the request was not signed with")
	}
	// Not STUN, or another method: untouched.
	if p.onWrite([]byte{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}) != nil {
		t.Fatal("answered ChannelData")
	}
}
