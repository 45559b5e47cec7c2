package signal

import (
	"slices"
	"testing"

	"github.com/parley-voice/parley/proto"
)

// TestTURNServerURLs: browsers get turns: only under a name whose
// certificate they can verify, on the TURN-TLS port.
func TestTURNServerURLs(t *testing.T) {
	cases := []struct {
		name string
		reg  proto.SupernodeRegister
		want []string
	}{
		{"volunteer, self-signed TLS", proto.SupernodeRegister{TURNUDP: "203.0.113.5:3478", TURNTCP: "203.0.113.5:3478", TURNTLS: "203.0.113.5:5349"},
			[]string{"turn:203.0.113.5:3478?transport=udp", "turn:203.0.113.5:3478?transport=tcp"}},
		{"server's own, shared 443 with a CA certificate", proto.SupernodeRegister{TURNUDP: "203.0.113.2:3480", TURNTCP: "203.0.113.2:443", TURNTLS: "203.0.113.2:443", TURNTLSName: "parley.example.org"},
			[]string{"turn:203.0.113.2:3480?transport=udp", "turn:203.0.113.2:443?transport=tcp", "turns:parley.example.org:443?transport=tcp"}},
		{"IPv6", proto.SupernodeRegister{TURNTLS: "[2001:db8::1]:443", TURNTLSName: "v6.example.org"},
			[]string{"turns:v6.example.org:443?transport=tcp"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := turnServer(&tc.reg, "u", "p")
			if !slices.Equal(got.URLs, tc.want) || got.Username != "u" || got.Credential != "p" {
				t.Fatalf("got %+v, want %v", got, tc.want)
			}
		})
	}
}
