package natlab

import (
	"fmt"
	"strings"
	"time"

	"github.com/parley-voice/parley/proto"
)

// NATKind is the behaviour of a home router, named as RFC 4787 does:
// mapping (section 4.1) and filtering (section 5).
type NATKind int

// The NAT kinds a Home can have.
const (
	// None: no NAT. The router is a transparent bridge and the client owns
	// a public address on the internet.
	None NATKind = iota
	// FullCone: endpoint-independent mapping and filtering (EIM + EIF).
	// Once the client has sent from a port, anyone may send to its mapping.
	FullCone
	// Restricted: EIM + address-dependent filtering (ADF). Only addresses
	// the client has sent to may send to its mapping, from any port.
	Restricted
	// PortRestricted: EIM + address-and-port-dependent filtering (APDF),
	// Linux's plain masquerade.
	PortRestricted
	// Symmetric: address-and-port-dependent mapping (APDM): every new
	// destination gets a new random external port; filtering is APDF.
	Symmetric
	// UDPBlocked: a NAT whose firewall drops all UDP and forwards only TCP
	// to port 443 (the "corporate network" case).
	UDPBlocked
)

// Kinds lists every NATKind, for table-driven tests.
var Kinds = []NATKind{None, FullCone, Restricted, PortRestricted, Symmetric, UDPBlocked}

var kindNames = [...]string{"none", "full-cone", "restricted", "port-restricted", "symmetric", "udp-blocked"}

func (k NATKind) valid() bool { return k >= None && k <= UDPBlocked }

// String returns a short lower-case name ("full-cone").
func (k NATKind) String() string {
	if !k.valid() {
		return fmt.Sprintf("NATKind(%d)", int(k))
	}
	return kindNames[k]
}

// NATType is the proto name a correct NAT discovery reports for this kind.
func (k NATKind) NATType() proto.NATType {
	switch k {
	case None:
		return proto.NATNone
	case FullCone:
		return proto.NATFullCone
	case Restricted:
		return proto.NATRestricted
	case PortRestricted:
		return proto.NATPortRestricted
	case Symmetric:
		return proto.NATSymmetric
	case UDPBlocked:
		return proto.NATUDPBlocked
	}
	return proto.NATUnknown
}

// Mapping is the RFC 4787 section 4.1 mapping behaviour of this kind
// (BehaviorUnknown for UDPBlocked, where UDP never leaves).
func (k NATKind) Mapping() proto.Behavior {
	switch k {
	case None:
		return proto.BehaviorNone
	case FullCone, Restricted, PortRestricted:
		return proto.BehaviorEndpointIndependent
	case Symmetric:
		return proto.BehaviorAddressAndPortDependent
	}
	return proto.BehaviorUnknown
}

// Filtering is the RFC 4787 section 5 filtering behaviour of this kind.
func (k NATKind) Filtering() proto.Behavior {
	switch k {
	case None:
		return proto.BehaviorNone
	case FullCone:
		return proto.BehaviorEndpointIndependent
	case Restricted:
		return proto.BehaviorAddressDependent
	case PortRestricted, Symmetric:
		return proto.BehaviorAddressAndPortDependent
	}
	return proto.BehaviorUnknown
}

// Interface names inside a router namespace.
const (
	wanIf = "wan"
	lanIf = "lan"
)

// ruleset returns the nftables ruleset (nft -f syntax) that makes a router
// behave as kind. mappingTimeout is how long a cone NAT remembers a
// mapping after the last outbound packet. None has no ruleset: its router
// is a bridge.
func ruleset(kind NATKind, mappingTimeout time.Duration) (string, error) {
	if !kind.valid() {
		return "", fmt.Errorf("natlab: ruleset for %d: %w", int(kind), ErrBadKind)
	}
	if kind == None {
		return "", nil
	}
	secs := int(mappingTimeout / time.Second)
	if secs < 1 {
		secs = 1
	}
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("table ip natlab {")
	cone := kind == FullCone || kind == Restricted
	if cone {
		// External port -> internal address . port, learnt from outbound
		// packets after NAT has chosen the external port. Linux masquerade
		// keeps the source port when it is free, which is already an
		// endpoint-independent mapping (RFC 4787 section 4.1, REQ-1); this
		// map adds the inbound half that conntrack lacks.
		p("  map cone { type inet_service : ipv4_addr . inet_service; flags dynamic,timeout; timeout %ds; }", secs)
	}
	if kind == Restricted {
		// (external port, remote address) pairs the client has sent to:
		// address-dependent filtering, RFC 4787 section 5.
		p("  set peers { type inet_service . ipv4_addr; flags dynamic,timeout; timeout %ds; }", secs)
	}
	p("  chain nat_post {")
	p("    type nat hook postrouting priority srcnat; policy accept;")
	switch kind {
	case Symmetric:
		// A random external port for every new conntrack entry, i.e. per
		// remote address and port: APDM (RFC 4787 section 4.1).
		p("    oifname %q masquerade fully-random", wanIf)
	default:
		p("    oifname %q masquerade", wanIf)
	}
	p("  }")
	if cone {
		p("  chain nat_pre {")
		p("    type nat hook prerouting priority dstnat; policy accept;")
		if kind == Restricted {
			p("    iifname %q udp dport . ip saddr @peers dnat ip addr . port to udp dport map @cone", wanIf)
		} else {
			// Endpoint-independent filtering: RFC 4787 section 5, "full cone".
			p("    iifname %q dnat ip addr . port to udp dport map @cone", wanIf)
		}
		p("  }")
		// After srcnat (priority 100) the packet carries its external port
		// and the conntrack entry still knows the original source.
		p("  chain learn {")
		p("    type filter hook postrouting priority 200; policy accept;")
		p("    oifname %q meta l4proto udp update @cone { udp sport timeout %ds : ct original ip saddr . ct original proto-src }", wanIf, secs)
		if kind == Restricted {
			p("    oifname %q meta l4proto udp update @peers { udp sport . ip daddr timeout %ds }", wanIf, secs)
		}
		p("  }")
	}
	// The router itself serves nothing on its WAN: unsolicited packets are
	// dropped silently (no ICMP port unreachable that would tell a prober
	// anything).
	p("  chain wan_in {")
	p("    type filter hook input priority filter; policy accept;")
	p("    iifname %q ct state established,related accept", wanIf)
	p("    iifname %q drop", wanIf)
	p("  }")
	p("  chain filt_fwd {")
	p("    type filter hook forward priority filter; policy drop;")
	p("    ct state established,related accept")
	if kind == UDPBlocked {
		p("    iifname %q oifname %q tcp dport 443 accept", lanIf, wanIf)
	} else {
		p("    iifname %q accept", lanIf)
		if cone {
			p("    ct status dnat accept")
		}
	}
	p("  }")
	p("}")
	return b.String(), nil
}
