package natlab

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
)

// TestKindNames checks that each kind's RFC 4787 behaviours classify, by
// proto's rules, to the kind's own NAT type.
func TestKindNames(t *testing.T) {
	seen := map[string]bool{}
	for _, k := range Kinds {
		if seen[k.String()] {
			t.Errorf("duplicate name %q", k)
		}
		seen[k.String()] = true
		if k == UDPBlocked {
			if k.NATType() != proto.NATUDPBlocked || k.Mapping() != proto.BehaviorUnknown {
				t.Errorf("udp-blocked: %v %v", k.NATType(), k.Mapping())
			}
			continue
		}
		if got := proto.ClassifyNAT(k.Mapping(), k.Filtering()); got != k.NATType() {
			t.Errorf("%v: ClassifyNAT(%v, %v) = %v, want %v", k, k.Mapping(), k.Filtering(), got, k.NATType())
		}
	}
	if bad := NATKind(99); bad.String() != "NATKind(99)" || bad.NATType() != proto.NATUnknown {
		t.Errorf("invalid kind: %v %v", bad, bad.NATType())
	}
}

// TestRuleset checks the statements that make each kind what it is.
func TestRuleset(t *testing.T) {
	cases := []struct {
		kind      NATKind
		has, lack []string
	}{
		{None, nil, []string{"table"}},
		{FullCone, []string{"masquerade\n", "map cone", `iifname "wan" dnat ip addr . port to udp dport map @cone`, "timeout 120s"}, []string{"@peers", "fully-random", "443"}},
		{Restricted, []string{"map cone", "set peers", "udp dport . ip saddr @peers dnat", "update @peers"}, []string{"fully-random"}},
		{PortRestricted, []string{"masquerade\n", `iifname "wan" drop`}, []string{"cone", "peers", "fully-random", "dnat"}},
		{Symmetric, []string{"masquerade fully-random"}, []string{"cone", "dnat"}},
		{UDPBlocked, []string{"policy drop", "tcp dport 443 accept"}, []string{"cone", `iifname "lan" accept`}},
	}
	if len(cases) != len(Kinds) {
		t.Fatalf("%d cases for %d kinds", len(cases), len(Kinds))
	}
	for _, c := range cases {
		t.Run(c.kind.String(), func(t *testing.T) {
			r, err := ruleset(c.kind, 2*time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range c.has {
				if !strings.Contains(r, s) {
					t.Errorf("ruleset lacks %q:\n%s", s, r)
				}
			}
			for _, s := range c.lack {
				if strings.Contains(r, s) {
					t.Errorf("ruleset has %q:\n%s", s, r)
				}
			}
		})
	}
	if _, err := ruleset(NATKind(-1), time.Minute); !errors.Is(err, ErrBadKind) {
		t.Errorf("ruleset(-1): %v", err)
	}
	if r, _ := ruleset(FullCone, 300*time.Millisecond); !strings.Contains(r, "timeout 1s") {
		t.Errorf("sub-second timeout not rounded up to 1s")
	}
}
