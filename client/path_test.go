package client

import (
	"crypto/ed25519"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/webrtc/v4"
)

// TestPlan: what the two NAT reports of a link decide (path.go).
func TestPlan(t *testing.T) {
	cases := []struct {
		own, peer proto.NATType
		wait      time.Duration
		relays    int
	}{
		{proto.NATSymmetric, proto.NATPortRestricted, 0, 2},         // no direct path: relay at once, with a standby
		{proto.NATFullCone, proto.NATUDPBlocked, 0, 2},              // UDP blocked on one side
		{proto.NATUDPBlocked, "", 0, 2},                             // ...known from our own report alone
		{proto.NATFullCone, proto.NATSymmetric, relayWaitDirect, 1}, // direct expected: the relay is the standby
		{proto.NATPortRestricted, "", relayWaitUnknown, 2},          // the peer's report missing (a browser)
		{proto.NATFullCone, proto.NATUnknown, relayWaitUnknown, 1},  // we never need a relay but for UDP-blocked peers
		{"", "", relayWaitUnknown, 2},
	}
	if p := (plan{own: proto.NATFullCone, peer: proto.NATNone, relayOnly: true}); p.relayWait() != 0 || p.relays() != 2 {
		t.Errorf("relay-only link: relay wait %s, %d relays; want 0, 2", p.relayWait(), p.relays())
	}
	for _, tc := range cases {
		p := plan{own: tc.own, peer: tc.peer}
		if p.relayWait() != tc.wait || p.relays() != tc.relays {
			t.Errorf("own %q peer %q: relay wait %s, %d relays; want %s, %d", tc.own, tc.peer, p.relayWait(), p.relays(), tc.wait, tc.relays)
		}
	}
}

// TestNominationNeverLeavesDirect: while the selected pair is direct, the
// generator hands pion no renomination value (pion then switches neither
// side to a relayed pair); on a relayed pair, increasing values.
func TestNominationNeverLeavesDirect(t *testing.T) {
	w := &pathWatch{}
	w.direct.Store(true)
	if v := w.nomination(); v != 0 {
		t.Fatalf("renomination value %d while direct", v)
	}
	w.direct.Store(false)
	a, b := w.nomination(), w.nomination()
	if a == 0 || b <= a {
		t.Fatalf("values %d, %d on a relayed pair, want increasing from 1", a, b)
	}
}

// TestSupernodeServersByAddress: the supernodes' own TURN servers (for
// browsers) are left out of a Go client's ICE servers by their exact
// address; the server's STUN service on the same IP (serve's built-in
// supernode) stays. Dropping it by IP made calls that could go direct
// relay (issue 9, item 3).
func TestSupernodeServersByAddress(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(nil)
	c, err := New(Config{Server: "ws://127.0.0.1:1/ws", Name: "alice", Key: key})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { // never Run: close its event queue and read it out, or its goroutine outlives the test
		c.events.close()
		for range c.Events() {
		}
	}()
	c.relay.update(&proto.SupernodeList{Supernodes: []proto.SupernodeInfo{{
		ID: "serve-relay", QUIC: "203.0.113.2:443", TURNUDP: "203.0.113.2:3480", TURNTLS: "203.0.113.2:443",
		TURNUsername: "u", TURNPassword: "p", Expires: time.Now().Add(time.Hour).Unix(),
	}}}, proto.NATFullCone)
	base := []webrtc.ICEServer{
		{URLs: []string{"stun:203.0.113.2:3478"}},
		{URLs: []string{"turn:203.0.113.2:3480?transport=udp"}, Username: "u", Credential: "p"},
		{URLs: []string{"turns:203.0.113.2:443?transport=tcp"}, Username: "u", Credential: "p"},
	}
	got := c.relay.iceServers(base, 1)
	var urls []string
	for _, s := range got {
		urls = append(urls, s.URLs...)
	}
	want := []string{"stun:203.0.113.2:3478", "turn:203.0.113.2:443?transport=tcp"} // STUN kept; the supernode through QUIC
	if len(urls) != len(want) || urls[0] != want[0] || urls[1] != want[1] {
		t.Fatalf("ICE servers %v, want %v", urls, want)
	}
	c.relay.close()
}
