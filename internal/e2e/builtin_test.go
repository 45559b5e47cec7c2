package e2e

import (
	"crypto/tls"
	"net/netip"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
)

// The built-in supernode scenario (issue 9, item 3): nothing on the lab's
// internet but `parley serve` itself — signaling, STUN and its built-in
// supernode on one public host, all defaults (startServedLab runs the real
// binary, so the test follows whatever ports serve listens on). The 13
// pairs STUN alone connects must still go direct, the other 8 relay
// through the built-in supernode, the UDP-blocked homes over TURN over TLS
// on the server's TCP 443.
//
// Before the fix, every pair with a NAT on both sides relayed: clients
// dropped every ICE server on a supernode's IP, and the built-in
// supernode shares its IP with the STUN service, so they lost their only
// stun: URL and with it their server-reflexive candidates.
var viaBuiltin = scenario{name: "built-in supernode", world: servedWorld, expect: expectWithRelay, via: "serve-relay"}

// TestBuiltinSupernodeMatrix is the call matrix with `parley serve` alone.
func TestBuiltinSupernodeMatrix(t *testing.T) {
	if testing.Short() {
		t.Skip("NAT lab call matrix with the binary")
	}
	runMatrix(t, viaBuiltin)
}

// servedWorld starts `parley serve` (the second address as its RFC 5780
// alternate, so clients can tell every NAT kind apart) and returns the
// world its clients sign in to over wss://, and their options: QUIC
// sockets in their home, the test CA trusted.
func servedWorld(t *testing.T) (*world, []peerOpts) {
	s := startServedLabWith(t, func(pub *natlab.Host) []string { return []string{"--stun-alt", pub.Addrs[1].String()} })
	w := &world{lab: s.lab, pub: s.pub, sigURL: "wss://" + s.ip.String() + "/ws",
		iceURL: "stun:" + netip.AddrPortFrom(s.ip, 3478).String()}
	return w, []peerOpts{relayInHome, func(_ *natlab.Home, cfg *client.Config) {
		cfg.TLS = &tls.Config{RootCAs: s.ca.Pool()}
	}}
}
