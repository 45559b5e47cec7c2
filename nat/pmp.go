package nat

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// NAT-PMP (RFC 6886) and PCP (RFC 6887) share the gateway's UDP port 5351.
const (
	// PMPPort is the NAT-PMP and PCP server port (RFC 6886 section 3,
	// RFC 6887 section 19.1).
	PMPPort = 5351

	pmpVersion = 0
	pcpVersion = 2

	pmpOpPublicAddr = 0 // RFC 6886 section 3.2
	pmpOpMapUDP     = 1 // RFC 6886 section 3.3
	pmpOpMapTCP     = 2
	pmpRespBit      = 128 // response opcode = 128 + request opcode

	pcpOpMap   = 1    // RFC 6887 section 11
	pcpRespBit = 0x80 // the R bit (RFC 6887 section 7.2)

	pcpHeaderSize  = 24   // RFC 6887 section 7.1 and 7.2
	pcpMapDataSize = 36   // RFC 6887 section 11.1
	pcpMaxSize     = 1100 // RFC 6887 section 7

	pcpProtoUDP = 17

	// Result codes used here: NAT-PMP section 3.5, PCP section 7.4.
	resultSuccess       = 0
	resultUnsuppVersion = 1
)

// pmpResponse is a NAT-PMP response (RFC 6886 sections 3.2, 3.3, 3.5).
type pmpResponse struct {
	op     uint8 // 128 + the request opcode
	result uint16
	epoch  uint32
	// externalIP is set for op 128 (public address).
	externalIP netip.Addr
	// internalPort, externalPort and lifetime are set for op 129 and 130.
	internalPort, externalPort uint16
	lifetime                   uint32
}

// parsePMPResponse decodes a NAT-PMP response from untrusted bytes.
func parsePMPResponse(b []byte) (pmpResponse, error) {
	var r pmpResponse
	if len(b) < 8 {
		return r, fmt.Errorf("%w: NAT-PMP response of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != pmpVersion {
		return r, fmt.Errorf("%w: NAT-PMP version %d", ErrMalformed, b[0])
	}
	if b[1] < pmpRespBit {
		return r, fmt.Errorf("%w: NAT-PMP request opcode %d where a response was expected", ErrMalformed, b[1])
	}
	r.op = b[1]
	r.result = binary.BigEndian.Uint16(b[2:4])
	r.epoch = binary.BigEndian.Uint32(b[4:8])
	if r.result != resultSuccess {
		// Section 3.5: an error response need carry no more than this.
		return r, nil
	}
	switch r.op {
	case pmpRespBit + pmpOpPublicAddr:
		if len(b) < 12 {
			return r, fmt.Errorf("%w: NAT-PMP address response of %d bytes", ErrMalformed, len(b))
		}
		r.externalIP = netip.AddrFrom4([4]byte(b[8:12]))
	case pmpRespBit + pmpOpMapUDP, pmpRespBit + pmpOpMapTCP:
		if len(b) < 16 {
			return r, fmt.Errorf("%w: NAT-PMP mapping response of %d bytes", ErrMalformed, len(b))
		}
		r.internalPort = binary.BigEndian.Uint16(b[8:10])
		r.externalPort = binary.BigEndian.Uint16(b[10:12])
		r.lifetime = binary.BigEndian.Uint32(b[12:16])
	default:
		return r, fmt.Errorf("%w: NAT-PMP response opcode %d unknown", ErrMalformed, r.op)
	}
	return r, nil
}

// marshal encodes r the way a NAT-PMP server would.
func (r pmpResponse) marshal() []byte {
	b := make([]byte, 8, 16)
	b[0], b[1] = pmpVersion, r.op
	binary.BigEndian.PutUint16(b[2:4], r.result)
	binary.BigEndian.PutUint32(b[4:8], r.epoch)
	if r.result != resultSuccess {
		return b
	}
	switch r.op {
	case pmpRespBit + pmpOpPublicAddr:
		ip := r.externalIP.As4()
		b = append(b, ip[:]...)
	case pmpRespBit + pmpOpMapUDP, pmpRespBit + pmpOpMapTCP:
		b = binary.BigEndian.AppendUint16(b, r.internalPort)
		b = binary.BigEndian.AppendUint16(b, r.externalPort)
		b = binary.BigEndian.AppendUint32(b, r.lifetime)
	}
	return b
}

// pmpMapRequest is a NAT-PMP UDP mapping request (RFC 6886 section 3.3).
func pmpMapRequest(internal, suggested uint16, lifetime uint32) []byte {
	b := make([]byte, 12)
	b[0], b[1] = pmpVersion, pmpOpMapUDP
	binary.BigEndian.PutUint16(b[4:6], internal)
	binary.BigEndian.PutUint16(b[6:8], suggested)
	binary.BigEndian.PutUint32(b[8:12], lifetime)
	return b
}

// pcpOption is one PCP option (RFC 6887 section 7.3).
type pcpOption struct {
	code uint8
	data []byte
}

// pcpResponse is a PCP response (RFC 6887 section 7.2) with MAP data
// (section 11.1) when the opcode is MAP.
type pcpResponse struct {
	opcode   uint8 // without the R bit
	result   uint8
	lifetime uint32
	epoch    uint32
	// hasMap reports whether the MAP opcode data was present.
	hasMap       bool
	nonce        [12]byte
	protocol     uint8
	internalPort uint16
	externalPort uint16
	externalIP   netip.Addr
	options      []pcpOption
}

// parsePCPResponse decodes a PCP response from untrusted bytes.
func parsePCPResponse(b []byte) (pcpResponse, error) {
	var r pcpResponse
	if len(b) < pcpHeaderSize || len(b) > pcpMaxSize || len(b)%4 != 0 {
		return r, fmt.Errorf("%w: PCP message of %d bytes", ErrMalformed, len(b))
	}
	if b[0] != pcpVersion {
		return r, fmt.Errorf("%w: PCP version %d", ErrMalformed, b[0])
	}
	if b[1]&pcpRespBit == 0 {
		return r, fmt.Errorf("%w: PCP request where a response was expected", ErrMalformed)
	}
	r.opcode = b[1] &^ pcpRespBit
	r.result = b[3]
	r.lifetime = binary.BigEndian.Uint32(b[4:8])
	r.epoch = binary.BigEndian.Uint32(b[8:12])
	rest := b[pcpHeaderSize:]
	if r.opcode == pcpOpMap {
		if len(rest) < pcpMapDataSize {
			if r.result == resultSuccess {
				return r, fmt.Errorf("%w: PCP MAP success without MAP data", ErrMalformed)
			}
			return r, nil // an error that did not echo the request
		}
		r.hasMap = true
		copy(r.nonce[:], rest[0:12])
		r.protocol = rest[12]
		r.internalPort = binary.BigEndian.Uint16(rest[16:18])
		r.externalPort = binary.BigEndian.Uint16(rest[18:20])
		r.externalIP = netip.AddrFrom16([16]byte(rest[20:36])).Unmap()
		rest = rest[pcpMapDataSize:]
	}
	for len(rest) > 0 {
		if len(rest) < 4 {
			return r, fmt.Errorf("%w: PCP option header cut short", ErrMalformed)
		}
		code, n := rest[0], int(binary.BigEndian.Uint16(rest[2:4]))
		padded := (n + 3) &^ 3
		if len(rest)-4 < padded {
			return r, fmt.Errorf("%w: PCP option %d of %d bytes overruns the message", ErrMalformed, code, n)
		}
		r.options = append(r.options, pcpOption{code: code, data: rest[4 : 4+n]})
		rest = rest[4+padded:]
	}
	return r, nil
}

// marshal encodes r the way a PCP server would.
func (r pcpResponse) marshal() []byte {
	b := make([]byte, pcpHeaderSize, pcpHeaderSize+pcpMapDataSize)
	b[0], b[1], b[3] = pcpVersion, r.opcode|pcpRespBit, r.result
	binary.BigEndian.PutUint32(b[4:8], r.lifetime)
	binary.BigEndian.PutUint32(b[8:12], r.epoch)
	if r.hasMap {
		b = append(b, r.nonce[:]...)
		b = append(b, r.protocol, 0, 0, 0)
		b = binary.BigEndian.AppendUint16(b, r.internalPort)
		b = binary.BigEndian.AppendUint16(b, r.externalPort)
		ip := pcpAddr(r.externalIP)
		b = append(b, ip[:]...)
	}
	for _, o := range r.options {
		b = append(b, o.code, 0)
		b = binary.BigEndian.AppendUint16(b, uint16(len(o.data)))
		b = append(b, o.data...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
	}
	return b
}

// pcpAddr is an address in PCP's 16-byte form: IPv4 as IPv4-mapped IPv6
// (RFC 6887 section 5); the zero Addr becomes ::ffff:0.0.0.0, "no
// preference" for IPv4.
func pcpAddr(a netip.Addr) [16]byte {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	return a.As16() // IPv4 comes out as ::ffff:a.b.c.d
}

// pcpMapRequest is a PCP MAP request for UDP (RFC 6887 sections 7.1, 11.1).
func pcpMapRequest(client netip.Addr, nonce [12]byte, internal, suggested uint16, lifetime uint32) []byte {
	b := make([]byte, pcpHeaderSize+pcpMapDataSize)
	b[0], b[1] = pcpVersion, pcpOpMap
	binary.BigEndian.PutUint32(b[4:8], lifetime)
	c := pcpAddr(client)
	copy(b[8:24], c[:])
	m := b[pcpHeaderSize:]
	copy(m[0:12], nonce[:])
	m[12] = pcpProtoUDP
	binary.BigEndian.PutUint16(m[16:18], internal)
	binary.BigEndian.PutUint16(m[18:20], suggested)
	ext := pcpAddr(netip.Addr{}) // no preference for the external IP
	copy(m[20:36], ext[:])
	return b
}

// pmpClient talks NAT-PMP and PCP to one gateway over a connected socket.
type pmpClient struct {
	conn    net.Conn
	client  netip.Addr // our address as the gateway sees it (for PCP)
	rto     time.Duration
	timeout time.Duration
	buf     []byte
}

func dialPMP(ctx context.Context, d Dialer, gw netip.AddrPort, rto, timeout time.Duration) (*pmpClient, error) {
	conn, err := d.DialContext(ctx, network(gw.Addr()), gw.String())
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", gw, err)
	}
	local := addrPortOf(conn.LocalAddr())
	return &pmpClient{conn: conn, client: local.Addr(), rto: rto, timeout: timeout, buf: make([]byte, pcpMaxSize+1)}, nil
}

func (c *pmpClient) close() { _ = c.conn.Close() }

// errNoAnswer reports that the gateway never answered.
var errNoAnswer = errors.New("no answer")

// roundTrip sends req with retransmissions (RFC 6886 section 3.1: start at
// RTO, double each time) until accept takes a datagram or the timeout ends.
// A connected socket only receives from the gateway, which is the source
// check RFC 6886 section 3.1 asks for.
func (c *pmpClient) roundTrip(ctx context.Context, req []byte, accept func([]byte) bool) error {
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetReadDeadline(time.Now()) })
	defer stop()
	now := time.Now()
	end := now.Add(c.timeout)
	next, rto := now, c.rto
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		now = time.Now()
		if !now.Before(end) {
			return errNoAnswer
		}
		if !now.Before(next) {
			if _, err := c.conn.Write(req); err != nil && errors.Is(err, net.ErrClosed) {
				return err
			}
			next, rto = now.Add(rto), rto*2
		}
		deadline := next
		if end.Before(deadline) {
			deadline = end
		}
		_ = c.conn.SetReadDeadline(deadline)
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := c.conn.Read(c.buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			// ECONNREFUSED from an ICMP port unreachable: nothing listens.
			return fmt.Errorf("read: %w", err)
		}
		if n <= pcpMaxSize && accept(c.buf[:n]) {
			return nil
		}
	}
}

// errPCPUnsupported reports that the gateway speaks NAT-PMP only.
var errPCPUnsupported = errors.New("gateway answered PCP with NAT-PMP UNSUPP_VERSION")

// mapPCP asks for a UDP mapping with PCP MAP (RFC 6887 section 11).
func (c *pmpClient) mapPCP(ctx context.Context, internal, suggested uint16, lifetime uint32) (pcpResponse, error) {
	var nonce [12]byte
	_, _ = rand.Read(nonce[:])
	req := pcpMapRequest(c.client, nonce, internal, suggested, lifetime)
	var resp pcpResponse
	var fail error
	err := c.roundTrip(ctx, req, func(b []byte) bool {
		if len(b) >= 4 && b[0] == pmpVersion {
			// RFC 6887 section 9: a NAT-PMP-only server answers version 2
			// with its own UNSUPP_VERSION.
			if pr, err := parsePMPResponse(b); err == nil && pr.result == resultUnsuppVersion {
				fail = errPCPUnsupported
				return true
			}
			return false
		}
		r, err := parsePCPResponse(b)
		if err != nil || r.opcode != pcpOpMap {
			return false
		}
		if r.result != resultSuccess {
			if r.hasMap && r.nonce != nonce {
				return false
			}
			fail = fmt.Errorf("%w: PCP result %d", ErrMappingRefused, r.result)
			return true
		}
		if r.nonce != nonce || r.protocol != pcpProtoUDP || r.internalPort != internal {
			return false // RFC 6887 section 11.4: not the answer to our request
		}
		resp = r
		return true
	})
	if err != nil {
		return resp, err
	}
	if fail != nil {
		return resp, fail
	}
	if !resp.externalIP.IsValid() || resp.externalPort == 0 {
		return resp, fmt.Errorf("%w: PCP gave %s port %d", ErrMalformed, resp.externalIP, resp.externalPort)
	}
	return resp, nil
}

// publicAddrPMP asks a NAT-PMP gateway for its external IP (section 3.2).
func (c *pmpClient) publicAddrPMP(ctx context.Context) (netip.Addr, error) {
	var ip netip.Addr
	var fail error
	err := c.roundTrip(ctx, []byte{pmpVersion, pmpOpPublicAddr}, func(b []byte) bool {
		r, err := parsePMPResponse(b)
		if err != nil || r.op != pmpRespBit+pmpOpPublicAddr {
			return false
		}
		if r.result != resultSuccess {
			fail = fmt.Errorf("%w: NAT-PMP result %d", ErrMappingRefused, r.result)
		}
		ip = r.externalIP
		return true
	})
	if err == nil {
		err = fail
	}
	return ip, err
}

// mapPMP asks a NAT-PMP gateway for a UDP mapping (section 3.3).
func (c *pmpClient) mapPMP(ctx context.Context, internal, suggested uint16, lifetime uint32) (pmpResponse, error) {
	var resp pmpResponse
	var fail error
	err := c.roundTrip(ctx, pmpMapRequest(internal, suggested, lifetime), func(b []byte) bool {
		r, err := parsePMPResponse(b)
		if err != nil || r.op != pmpRespBit+pmpOpMapUDP {
			return false
		}
		if r.result != resultSuccess {
			fail = fmt.Errorf("%w: NAT-PMP result %d", ErrMappingRefused, r.result)
			return true
		}
		if r.internalPort != internal {
			return false
		}
		resp = r
		return true
	})
	if err == nil {
		err = fail
	}
	if err == nil && resp.externalPort == 0 && lifetime != 0 {
		err = fmt.Errorf("%w: NAT-PMP mapped external port 0", ErrMalformed)
	}
	return resp, err
}
