package nat

import (
	"strings"
	"testing"

	"github.com/parley-voice/parley/proto"
)

func TestDescribe(t *testing.T) {
	tests := []struct {
		name string
		r    *proto.NATReport
		want []string
		not  []string
	}{
		{"nil", nil, []string{"no NAT report"}, nil},
		{"port-restricted with NAT-PMP", &proto.NATReport{
			LocalAddr: "192.168.1.2:5000", PublicAddr: "203.0.113.10:49152",
			Mapping: proto.BehaviorEndpointIndependent, Filtering: proto.BehaviorAddressAndPortDependent,
			Type: proto.NATPortRestricted, Hairpin: "no", PortMapping: "nat-pmp", MappedAddr: "203.0.113.10:5000",
		}, []string{
			"port-restricted-cone", "192.168.1.2:5000", "203.0.113.10:49152",
			"mapping: endpoint-independent", "filtering: address-and-port-dependent",
			"hairpin: no", "nat-pmp gave 203.0.113.10:5000", "a relay with symmetric peers",
		}, []string{"unknown"}},
		{"symmetric", &proto.NATReport{Mapping: proto.BehaviorAddressAndPortDependent, Filtering: proto.BehaviorAddressAndPortDependent, Type: proto.NATSymmetric},
			[]string{"symmetric", "a relay with port-restricted-cone, symmetric peers", "hairpin: not tested", "port mapping: none"}, nil},
		{"blocked", &proto.NATReport{UDPBlocked: true, Type: proto.NATUDPBlocked},
			[]string{"udp-blocked", "UDP:", "every call needs a relay"}, []string{"\nmapping:"}},
		{"one-IP server left it unknown", &proto.NATReport{Mapping: proto.BehaviorUnknown, Filtering: proto.BehaviorAddressAndPortDependent},
			[]string{"NAT type: unknown", "mapping: unknown (the STUN server could not run this test)", "direct calls: unknown"}, nil},
		{"no NAT", &proto.NATReport{Mapping: proto.BehaviorNone, Filtering: proto.BehaviorEndpointIndependent, Type: proto.NATNone, Hairpin: "yes"},
			[]string{"no NAT", "mapping: none (no NAT)", "expected with every UDP-capable peer"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Compare with runs of spaces collapsed: alignment is cosmetic.
			var lines []string
			for _, l := range strings.Split(Describe(tc.r), "\n") {
				lines = append(lines, strings.Join(strings.Fields(l), " "))
			}
			got := strings.Join(lines, "\n")
			for _, w := range tc.want {
				if !strings.Contains(got, w) {
					t.Errorf("missing %q in:\n%s", w, got)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(got, w) {
					t.Errorf("unexpected %q in:\n%s", w, got)
				}
			}
		})
	}
}
