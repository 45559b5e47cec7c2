package nat

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"

	"github.com/pion/stun/v4"
)

// STUN constants used by both the server and the client.
const (
	// changeIPFlag and changePortFlag are the CHANGE-REQUEST bits
	// (RFC 5780 section 7.2: "A" = change IP, "B" = change port).
	changeIPFlag   uint32 = 0x4
	changePortFlag uint32 = 0x2

	// headerSize is the fixed STUN header (RFC 5389 section 6).
	headerSize = 20
	// maxDatagram bounds what we read from a socket. STUN over UDP should
	// stay under the path MTU (RFC 5389 section 7.1); anything larger than
	// an Ethernet frame is not a message we sent or expect.
	maxDatagram = 1500
	// maxUnknownAttrs caps UNKNOWN-ATTRIBUTES in an error response so a
	// request full of junk attributes cannot make a large reply.
	maxUnknownAttrs = 16

	software = "parley"
)

// Error codes of RFC 5389 section 15.6.
const (
	codeBadRequest   = 400
	codeUnknownAttr  = 420
	codeServerError  = 500
	reasonBadRequest = "Bad Request"
	reasonUnknown    = "Unknown Attribute"
)

// knownRequired lists the comprehension-required attributes (type below
// 0x8000) a Binding request may carry that the server understands or may
// safely ignore. Any other comprehension-required attribute gets a 420
// (RFC 5389 section 7.3.1).
var knownRequired = [...]stun.AttrType{
	stun.AttrMappedAddress,
	stun.AttrChangeRequest,
	stun.AttrUsername,
	stun.AttrMessageIntegrity,
	stun.AttrMessageIntegritySHA256,
	stun.AttrUserhash,
	stun.AttrRealm,
	stun.AttrNonce,
	stun.AttrXORMappedAddress,
	stun.AttrPriority,
	stun.AttrUseCandidate,
}

// decodeMessage decodes b into m (reusing m's buffers) and applies the
// checks of RFC 5389 section 7.3 that pion leaves to the caller: the two
// leading zero bits, a length that is a multiple of four and covers the
// whole datagram, and a correct FINGERPRINT that is the last attribute.
func decodeMessage(m *stun.Message, b []byte) error {
	if len(b) < headerSize {
		return fmt.Errorf("%w: %d bytes is shorter than a STUN header", ErrMalformed, len(b))
	}
	if b[0]&0xC0 != 0 {
		return fmt.Errorf("%w: leading bits not zero (not STUN)", ErrMalformed)
	}
	if !stun.IsMessage(b) {
		return fmt.Errorf("%w: no STUN magic cookie", ErrMalformed)
	}
	if err := stun.Decode(b, m); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if m.Length%4 != 0 {
		return fmt.Errorf("%w: length %d not a multiple of 4", ErrMalformed, m.Length)
	}
	if len(b) != headerSize+int(m.Length) {
		return fmt.Errorf("%w: %d bytes after a %d-byte message", ErrMalformed, len(b)-headerSize-int(m.Length), headerSize+int(m.Length))
	}
	if m.Contains(stun.AttrFingerprint) {
		// RFC 5389 section 15.5: FINGERPRINT, when present, is last.
		if m.Attributes[len(m.Attributes)-1].Type != stun.AttrFingerprint {
			return fmt.Errorf("%w: FINGERPRINT is not the last attribute", ErrMalformed)
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return nil
}

// bindingRequest is a decoded Binding request or indication.
type bindingRequest struct {
	tx         [stun.TransactionIDSize]byte
	indication bool
	// change holds the CHANGE-REQUEST flags; hasChange reports whether the
	// attribute was present at all.
	change    uint32
	hasChange bool
	// unknown lists comprehension-required attributes we do not know.
	unknown []stun.AttrType
}

// parseBindingRequest decodes a Binding request or indication.
func parseBindingRequest(m *stun.Message, b []byte) (bindingRequest, error) {
	var r bindingRequest
	if err := decodeMessage(m, b); err != nil {
		return r, err
	}
	if m.Type.Method != stun.MethodBinding {
		// Well-formed STUN of another method (TURN on a shared port, say).
		return r, fmt.Errorf("%w: method %#x is not Binding", ErrNotOurs, uint16(m.Type.Method))
	}
	switch m.Type.Class {
	case stun.ClassRequest:
	case stun.ClassIndication:
		r.indication = true
	default:
		return r, fmt.Errorf("%w: a response where a request was expected", ErrNotOurs)
	}
	r.tx = m.TransactionID
	for _, a := range m.Attributes {
		switch {
		case a.Type == stun.AttrChangeRequest:
			// RFC 5780 section 7.2: a 32-bit value with flags A and B.
			if len(a.Value) != 4 {
				return r, fmt.Errorf("%w: CHANGE-REQUEST of %d bytes", ErrMalformed, len(a.Value))
			}
			r.hasChange = true
			r.change = binary.BigEndian.Uint32(a.Value) & (changeIPFlag | changePortFlag)
		case a.Type.Required() && !slices.Contains(knownRequired[:], a.Type):
			if len(r.unknown) < maxUnknownAttrs && !slices.Contains(r.unknown, a.Type) {
				r.unknown = append(r.unknown, a.Type)
			}
		}
	}
	return r, nil
}

// encodeBindingRequest writes a Binding request (or indication) with an
// optional CHANGE-REQUEST and a FINGERPRINT into m.
func encodeBindingRequest(m *stun.Message, r bindingRequest) {
	m.Reset()
	m.Type = stun.BindingRequest
	if r.indication {
		m.Type = stun.NewType(stun.MethodBinding, stun.ClassIndication)
	}
	m.TransactionID = r.tx
	m.WriteHeader()
	if r.hasChange {
		var v [4]byte
		binary.BigEndian.PutUint32(v[:], r.change)
		m.Add(stun.AttrChangeRequest, v[:])
	}
	for _, t := range r.unknown {
		m.Add(t, nil)
	}
	_ = stun.Fingerprint.AddTo(m) // cannot fail
}

// bindingResponse is a decoded Binding success or error response.
type bindingResponse struct {
	tx      [stun.TransactionIDSize]byte
	success bool
	// mapped is XOR-MAPPED-ADDRESS (or MAPPED-ADDRESS from an RFC 3489
	// server); other and origin are RFC 5780 OTHER-ADDRESS and
	// RESPONSE-ORIGIN, zero when absent.
	mapped, other, origin netip.AddrPort
	// code and reason are ERROR-CODE of an error response; unknown is its
	// UNKNOWN-ATTRIBUTES.
	code    int
	reason  string
	unknown []stun.AttrType
}

// parseBindingResponse decodes a Binding response. It returns ErrNotOurs
// for STUN messages that are not Binding responses.
func parseBindingResponse(m *stun.Message, b []byte) (bindingResponse, error) {
	var r bindingResponse
	if err := decodeMessage(m, b); err != nil {
		return r, err
	}
	if m.Type.Method != stun.MethodBinding {
		return r, fmt.Errorf("%w: method %#x is not Binding", ErrNotOurs, uint16(m.Type.Method))
	}
	r.tx = m.TransactionID
	switch m.Type.Class {
	case stun.ClassSuccessResponse:
		r.success = true
	case stun.ClassErrorResponse:
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err != nil {
			return r, fmt.Errorf("%w: error response without ERROR-CODE: %v", ErrMalformed, err)
		}
		// RFC 5389 section 15.6: class 3..6, number 0..99.
		if ec.Code < 300 || ec.Code > 699 {
			return r, fmt.Errorf("%w: error code %d out of range", ErrMalformed, ec.Code)
		}
		r.code, r.reason = int(ec.Code), string(ec.Reason)
		if m.Contains(stun.AttrUnknownAttributes) {
			var ua stun.UnknownAttributes
			if err := ua.GetFrom(m); err != nil {
				return r, fmt.Errorf("%w: UNKNOWN-ATTRIBUTES: %v", ErrMalformed, err)
			}
			r.unknown = []stun.AttrType(ua)
		}
		return r, nil
	default:
		return r, fmt.Errorf("%w: a %s where a response was expected", ErrNotOurs, m.Type.Class)
	}
	var err error
	var ok bool
	// RFC 5389 section 15.2; fall back to MAPPED-ADDRESS (section 15.1)
	// for servers that predate XOR-MAPPED-ADDRESS.
	if r.mapped, ok, err = getAddr(m, stun.AttrXORMappedAddress); err != nil {
		return r, err
	} else if !ok {
		if r.mapped, ok, err = getAddr(m, stun.AttrMappedAddress); err != nil {
			return r, err
		} else if !ok {
			return r, fmt.Errorf("%w: success response without a mapped address", ErrMalformed)
		}
	}
	if !r.mapped.Addr().IsValid() || r.mapped.Addr().IsUnspecified() || r.mapped.Port() == 0 {
		return r, fmt.Errorf("%w: mapped address %s is not usable", ErrMalformed, r.mapped)
	}
	if r.other, _, err = getAddr(m, stun.AttrOtherAddress); err != nil {
		return r, err
	}
	if r.origin, _, err = getAddr(m, stun.AttrResponseOrigin); err != nil {
		return r, err
	}
	return r, nil
}

// encodeBindingResponse writes r as a Binding response into m, with
// SOFTWARE and FINGERPRINT. Zero addresses are left out.
func encodeBindingResponse(m *stun.Message, r bindingResponse) error {
	m.Reset()
	m.TransactionID = r.tx
	if !r.success {
		m.Type = stun.BindingError
		m.WriteHeader()
		if err := (stun.ErrorCodeAttribute{Code: stun.ErrorCode(r.code), Reason: []byte(r.reason)}).AddTo(m); err != nil {
			return fmt.Errorf("nat: encode error code %d: %w", r.code, err)
		}
		if len(r.unknown) > 0 {
			_ = stun.UnknownAttributes(r.unknown).AddTo(m) // cannot fail
		}
	} else {
		m.Type = stun.BindingSuccess
		m.WriteHeader()
		if !r.mapped.IsValid() {
			return fmt.Errorf("nat: encode binding success: no mapped address")
		}
		ip := net.IP(r.mapped.Addr().Unmap().AsSlice())
		port := int(r.mapped.Port())
		// RFC 5389 section 15.2, plus section 15.1 for RFC 3489 clients.
		if err := (stun.XORMappedAddress{IP: ip, Port: port}).AddTo(m); err != nil {
			return fmt.Errorf("nat: encode XOR-MAPPED-ADDRESS: %w", err)
		}
		_ = (&stun.MappedAddress{IP: ip, Port: port}).AddTo(m) // same IP, cannot fail now
		if r.origin.IsValid() {
			// RFC 5780 section 7.3.
			_ = (&stun.ResponseOrigin{IP: r.origin.Addr().Unmap().AsSlice(), Port: int(r.origin.Port())}).AddTo(m)
		}
		if r.other.IsValid() {
			// RFC 5780 section 7.4.
			_ = (&stun.OtherAddress{IP: r.other.Addr().Unmap().AsSlice(), Port: int(r.other.Port())}).AddTo(m)
		}
	}
	_ = stun.NewSoftware(software).AddTo(m)
	_ = stun.Fingerprint.AddTo(m)
	return nil
}

// getAddr reads an address attribute of type t (XOR-encoded when t is
// XOR-MAPPED-ADDRESS). pion's decoders accept short values; this checks the
// exact length of RFC 5389 section 15.1 first.
func getAddr(m *stun.Message, t stun.AttrType) (netip.AddrPort, bool, error) {
	v, err := m.Get(t)
	if errors.Is(err, stun.ErrAttributeNotFound) {
		return netip.AddrPort{}, false, nil
	}
	if err != nil {
		return netip.AddrPort{}, false, fmt.Errorf("%w: %s: %v", ErrMalformed, t, err)
	}
	if len(v) < 4 {
		return netip.AddrPort{}, false, fmt.Errorf("%w: %s of %d bytes", ErrMalformed, t, len(v))
	}
	switch fam := binary.BigEndian.Uint16(v[0:2]); {
	case fam == 0x01 && len(v) == 8, fam == 0x02 && len(v) == 20:
	default:
		return netip.AddrPort{}, false, fmt.Errorf("%w: %s family %d with %d bytes", ErrMalformed, t, fam, len(v))
	}
	var ip net.IP
	var port int
	if t == stun.AttrXORMappedAddress {
		var a stun.XORMappedAddress
		if err := a.GetFromAs(m, t); err != nil {
			return netip.AddrPort{}, false, fmt.Errorf("%w: %s: %v", ErrMalformed, t, err)
		}
		ip, port = a.IP, a.Port
	} else {
		var a stun.MappedAddress
		if err := a.GetFromAs(m, t); err != nil {
			return netip.AddrPort{}, false, fmt.Errorf("%w: %s: %v", ErrMalformed, t, err)
		}
		ip, port = a.IP, a.Port
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.AddrPort{}, false, fmt.Errorf("%w: %s: bad IP", ErrMalformed, t)
	}
	return netip.AddrPortFrom(addr.Unmap(), uint16(port)), true, nil
}
