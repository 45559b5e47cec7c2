package proto

import (
	"net/netip"
)

// Behavior names a NAT mapping or filtering behaviour as RFC 4787 does
// (section 4.1 for mapping, section 5 for filtering).
type Behavior string

const (
	BehaviorUnknown                 Behavior = ""
	BehaviorNone                    Behavior = "none" // no NAT: public address equals local address
	BehaviorEndpointIndependent     Behavior = "endpoint-independent"
	BehaviorAddressDependent        Behavior = "address-dependent"
	BehaviorAddressAndPortDependent Behavior = "address-and-port-dependent"
)

func (b Behavior) valid() bool {
	switch b {
	case BehaviorUnknown, BehaviorNone, BehaviorEndpointIndependent, BehaviorAddressDependent, BehaviorAddressAndPortDependent:
		return true
	}
	return false
}

// NATType is the classic name for a mapping/filtering combination.
type NATType string

const (
	NATUnknown        NATType = "unknown"
	NATNone           NATType = "none"                 // public address, no NAT
	NATFullCone       NATType = "full-cone"            // EIM + EIF
	NATRestricted     NATType = "restricted-cone"      // EIM + ADF
	NATPortRestricted NATType = "port-restricted-cone" // EIM + APDF
	NATSymmetric      NATType = "symmetric"            // ADM or APDM
	NATUDPBlocked     NATType = "udp-blocked"          // no STUN answer over UDP
)

// Valid reports whether t is one of the names above.
func (t NATType) Valid() bool {
	switch t {
	case NATUnknown, NATNone, NATFullCone, NATRestricted, NATPortRestricted, NATSymmetric, NATUDPBlocked:
		return true
	}
	return false
}

// validateNATHint checks an optional NAT type carried as a hint (in an
// offer, an answer or a presence): empty or a known name.
func validateNATHint(t NATType) error {
	if t != "" && !t.Valid() {
		return Errorf(CodeBadRequest, "nat type %q unknown", truncate(string(t), 32))
	}
	return nil
}

// NATReport is what a client learned about its network, sent to the
// signaling server (TypeNATReport, or inside Auth). The server uses it to
// predict which calls need a relay and which candidates may be supernodes.
type NATReport struct {
	// LocalAddr is the local UDP address the probes were sent from.
	LocalAddr string `json:"local_addr,omitempty"`
	// PublicAddr is the mapped address the STUN server saw (RFC 5389
	// XOR-MAPPED-ADDRESS), empty when UDP is blocked.
	PublicAddr string `json:"public_addr,omitempty"`
	// Mapping and Filtering are RFC 4787 behaviours found by RFC 5780 tests.
	Mapping   Behavior `json:"mapping,omitempty"`
	Filtering Behavior `json:"filtering,omitempty"`
	// Type summarises Mapping and Filtering.
	Type NATType `json:"type"`
	// Hairpin is "yes", "no" or "" (unknown): whether packets sent to our
	// own public address come back to us (RFC 4787 section 6).
	Hairpin string `json:"hairpin,omitempty"`
	// UDPBlocked is true when no STUN binding over UDP got an answer.
	UDPBlocked bool `json:"udp_blocked,omitempty"`
	// PortMapping names the port-mapping protocol the home router offered
	// ("upnp", "nat-pmp", "pcp"), empty when none answered.
	PortMapping string `json:"port_mapping,omitempty"`
	// MappedAddr is the external address:port a port mapping gave us.
	MappedAddr string `json:"mapped_addr,omitempty"`
}

// Validate implements Body.
func (r *NATReport) Validate() error {
	for _, a := range []string{r.LocalAddr, r.PublicAddr, r.MappedAddr} {
		if a == "" {
			continue
		}
		if _, err := netip.ParseAddrPort(a); err != nil {
			return Errorf(CodeBadRequest, "nat report address %q: %v", truncate(a, 64), err)
		}
	}
	if !r.Mapping.valid() || !r.Filtering.valid() {
		return Errorf(CodeBadRequest, "nat report behaviour not an RFC 4787 name")
	}
	switch {
	case r.Type == "":
		r.Type = NATUnknown
	case !r.Type.Valid():
		return Errorf(CodeBadRequest, "nat type %q unknown", truncate(string(r.Type), 32))
	}
	switch r.Hairpin {
	case "", "yes", "no":
	default:
		return Errorf(CodeBadRequest, "hairpin must be yes, no or empty")
	}
	switch r.PortMapping {
	case "", "upnp", "nat-pmp", "pcp":
	default:
		return Errorf(CodeBadRequest, "port_mapping %q unknown", truncate(r.PortMapping, 16))
	}
	return nil
}

// ClassifyNAT names the NAT type for a mapping and filtering behaviour.
func ClassifyNAT(mapping, filtering Behavior) NATType {
	switch mapping {
	case BehaviorNone:
		return NATNone
	case BehaviorAddressDependent, BehaviorAddressAndPortDependent:
		return NATSymmetric
	case BehaviorEndpointIndependent:
		switch filtering {
		case BehaviorEndpointIndependent, BehaviorNone:
			return NATFullCone
		case BehaviorAddressDependent:
			return NATRestricted
		case BehaviorAddressAndPortDependent:
			return NATPortRestricted
		}
	}
	return NATUnknown
}

// NeedsRelay predicts whether a call between two peers with these NAT types
// needs a relay: true when neither ICE host/srflx nor prflx candidates can
// be expected to meet (RFC 4787 section 4 and 5 reasoning).
func NeedsRelay(a, b NATType) bool {
	if a == NATUDPBlocked || b == NATUDPBlocked {
		return true
	}
	hard := func(t NATType) bool { return t == NATSymmetric }
	semi := func(t NATType) bool { return t == NATPortRestricted }
	switch {
	case hard(a) && (hard(b) || semi(b)), hard(b) && semi(a):
		return true
	}
	return false
}
