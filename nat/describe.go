package nat

import (
	"fmt"
	"strings"

	"github.com/parley-voice/parley/proto"
)

// Describe renders a NAT report as a few lines of text for people, e.g.
// for `parley nat`. It never fails: a nil report says so.
func Describe(r *proto.NATReport) string {
	if r == nil {
		return "no NAT report\n"
	}
	var b strings.Builder
	row := func(k, v string) { fmt.Fprintf(&b, "%-16s %s\n", k+":", v) }

	typ := r.Type
	if typ == "" {
		typ = proto.NATUnknown
	}
	row("NAT type", string(typ)+" - "+typeText(typ))
	row("local address", orDash(r.LocalAddr))
	row("public address", orDash(r.PublicAddr))
	if r.UDPBlocked {
		row("UDP", "blocked: no STUN answer over UDP; calls will need a relay over TCP/TLS")
	}
	if !r.UDPBlocked {
		row("mapping", behaviorText(r.Mapping, true))
		row("filtering", behaviorText(r.Filtering, false))
	}
	switch r.Hairpin {
	case "yes":
		row("hairpin", "yes: packets to our own public address come back (peers behind the same NAT can use it)")
	case "no":
		row("hairpin", "no: peers behind the same NAT must use local addresses")
	default:
		row("hairpin", "not tested")
	}
	if r.PortMapping != "" {
		row("port mapping", fmt.Sprintf("%s gave %s", r.PortMapping, orDash(r.MappedAddr)))
	} else {
		row("port mapping", "none (no UPnP, NAT-PMP or PCP answer)")
	}
	row("direct calls", directText(typ))
	return b.String()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func typeText(t proto.NATType) string {
	switch t {
	case proto.NATNone:
		return "no NAT: the public address is our own"
	case proto.NATFullCone:
		return "endpoint-independent mapping and filtering"
	case proto.NATRestricted:
		return "endpoint-independent mapping, address-dependent filtering"
	case proto.NATPortRestricted:
		return "endpoint-independent mapping, address-and-port-dependent filtering"
	case proto.NATSymmetric:
		return "a new public port for each destination"
	case proto.NATUDPBlocked:
		return "UDP does not get through"
	}
	return "not enough was learned to name it (see mapping and filtering)"
}

// behaviorText explains an RFC 4787 behaviour (section 4.1 for mapping,
// section 5 for filtering).
func behaviorText(b proto.Behavior, mapping bool) string {
	switch b {
	case proto.BehaviorNone:
		return "none (no NAT)"
	case proto.BehaviorEndpointIndependent:
		if mapping {
			return "endpoint-independent: one public address for every destination"
		}
		return "endpoint-independent: anyone may send to our public address"
	case proto.BehaviorAddressDependent:
		if mapping {
			return "address-dependent: a new public address for each destination IP"
		}
		return "address-dependent: only IPs we sent to may answer"
	case proto.BehaviorAddressAndPortDependent:
		if mapping {
			return "address-and-port-dependent: a new public address for each destination IP and port"
		}
		return "address-and-port-dependent: only the exact IP and port we sent to may answer"
	}
	return "unknown (the STUN server could not run this test)"
}

// directText summarises which peers a call can reach without a relay,
// using proto.NeedsRelay.
func directText(t proto.NATType) string {
	switch t {
	case proto.NATUnknown, "":
		return "unknown"
	case proto.NATUDPBlocked:
		return "none: every call needs a relay"
	}
	var direct, relay []string
	for _, peer := range []proto.NATType{proto.NATNone, proto.NATFullCone, proto.NATRestricted, proto.NATPortRestricted, proto.NATSymmetric} {
		if proto.NeedsRelay(t, peer) {
			relay = append(relay, string(peer))
		} else {
			direct = append(direct, string(peer))
		}
	}
	if len(relay) == 0 {
		return "expected with every UDP-capable peer"
	}
	return fmt.Sprintf("expected with %s peers; a relay with %s peers", strings.Join(direct, ", "), strings.Join(relay, ", "))
}
