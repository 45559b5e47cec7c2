package relaybench

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/pion/stun/v4"
)

// ctlConn carries one TURN client's control messages.
type ctlConn interface {
	send(b []byte) error
	// recv returns the next STUN message for this client (ChannelData
	// is skipped), or an error when none comes within timeout.
	recv(timeout time.Duration) ([]byte, error)
}

// turnCtl is a minimal TURN client (RFC 8656) for the load generator:
// Allocate with long-term credentials and ChannelBind, nothing more. It
// speaks the same to coturn and to Parley's supernode.
type turnCtl struct {
	c            ctlConn
	user, pass   string
	realm, nonce string
	reliable     bool // a stream: no retransmissions
}

var errTimeout = errors.New("relaybench: no TURN response")

// do sends m and returns the response with its transaction ID
// (retransmitting over UDP, RFC 8489 section 6.2.1, on a shorter clock).
func (t *turnCtl) do(m *stun.Message) (*stun.Message, error) {
	tries, rto := 1, 10*time.Second
	if !t.reliable {
		tries, rto = 8, 250*time.Millisecond
	}
	for range tries {
		if err := t.c.send(m.Raw); err != nil {
			return nil, err
		}
		deadline := time.Now().Add(rto)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				break
			}
			b, err := t.c.recv(left)
			if errors.Is(err, errTimeout) {
				break
			}
			if err != nil {
				return nil, err
			}
			resp := &stun.Message{Raw: b}
			if resp.Decode() != nil || resp.TransactionID != m.TransactionID {
				continue
			}
			return resp, nil
		}
	}
	return nil, fmt.Errorf("%w to %s", errTimeout, m.Type)
}

// authed adds the long-term credential attributes and integrity.
func (t *turnCtl) authed(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	all := append([]stun.Setter{stun.TransactionID, stun.NewType(method, stun.ClassRequest)}, setters...)
	if t.nonce != "" {
		all = append(all, stun.NewUsername(t.user), stun.NewRealm(t.realm), stun.NewNonce(t.nonce),
			stun.NewLongTermIntegrity(t.user, t.realm, t.pass))
	}
	all = append(all, stun.Fingerprint)
	return stun.Build(all...)
}

// request sends an authenticated request, learning the realm and nonce
// from a 401 (or a 438 stale nonce) and retrying once.
func (t *turnCtl) request(method stun.Method, setters ...stun.Setter) (*stun.Message, error) {
	for attempt := 0; ; attempt++ {
		m, err := t.authed(method, setters...)
		if err != nil {
			return nil, err
		}
		resp, err := t.do(m)
		if err != nil {
			return nil, err
		}
		if resp.Type.Class == stun.ClassSuccessResponse {
			return resp, nil
		}
		var code stun.ErrorCodeAttribute
		code.GetFrom(resp)
		if (code.Code == stun.CodeUnauthorized || code.Code == stun.CodeStaleNonce) && attempt == 0 {
			var realm stun.Realm
			var nonce stun.Nonce
			if realm.GetFrom(resp) == nil {
				t.realm = realm.String()
			}
			if nonce.GetFrom(resp) == nil {
				t.nonce = nonce.String()
				continue
			}
		}
		return nil, fmt.Errorf("relaybench: %s refused: %d %s", method, code.Code, code.Reason)
	}
}

// allocate makes a UDP allocation and returns its relayed address.
func (t *turnCtl) allocate() (netip.AddrPort, error) {
	resp, err := t.request(stun.MethodAllocate, stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}})
	if err != nil {
		return netip.AddrPort{}, err
	}
	var relayed stun.XORMappedAddress
	if err := relayed.GetFromAs(resp, stun.AttrXORRelayedAddress); err != nil {
		return netip.AddrPort{}, fmt.Errorf("relaybench: allocate: %w", err)
	}
	ip, _ := netip.AddrFromSlice(relayed.IP)
	return netip.AddrPortFrom(ip.Unmap(), uint16(relayed.Port)), nil
}

// refresh asks for lifetime (0 deletes the allocation).
func (t *turnCtl) refresh(lifetime time.Duration) error {
	v := uint32(lifetime / time.Second)
	_, err := t.request(stun.MethodRefresh, stun.RawAttribute{Type: stun.AttrLifetime, Value: []byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)}})
	return err
}

// channelBind binds number to peer (and with it a permission).
func (t *turnCtl) channelBind(number uint16, peer netip.AddrPort) error {
	_, err := t.request(stun.MethodChannelBind,
		stun.RawAttribute{Type: stun.AttrChannelNumber, Value: []byte{byte(number >> 8), byte(number), 0, 0}},
		peerAddr(peer))
	return err
}

type peerAddrSetter struct{ a stun.XORMappedAddress }

func (p peerAddrSetter) AddTo(m *stun.Message) error { return p.a.AddToAs(m, stun.AttrXORPeerAddress) }

func peerAddr(ap netip.AddrPort) stun.Setter {
	return peerAddrSetter{stun.XORMappedAddress{IP: net.IP(ap.Addr().AsSlice()), Port: int(ap.Port())}}
}

// streamCtl is ctlConn over a TURN-over-TCP framed stream (TCP, TLS, a
// QUIC relay stream): one reader, used only during setup.
type streamCtl struct {
	conn interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	}
	buf []byte // unread bytes
}

func (s *streamCtl) send(b []byte) error {
	_, err := s.conn.Write(b)
	return err
}

func (s *streamCtl) recv(timeout time.Duration) ([]byte, error) {
	s.conn.SetReadDeadline(time.Now().Add(timeout))
	defer s.conn.SetReadDeadline(time.Time{})
	tmp := make([]byte, 4096)
	for {
		if n, ok := frameLen(s.buf); ok && len(s.buf) >= n {
			msg := s.buf[:n]
			s.buf = s.buf[n:]
			if msg[0] < 0x40 {
				return msg, nil
			}
			continue // ChannelData during setup: not ours to judge
		}
		k, err := s.conn.Read(tmp)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				return nil, errTimeout
			}
			return nil, err
		}
		s.buf = append(s.buf, tmp[:k]...)
	}
}

// frameLen is the length of the TURN-over-TCP frame at the start of b
// (RFC 8656 section 3.1): STUN, or ChannelData padded to 4 bytes.
func frameLen(b []byte) (int, bool) {
	if len(b) < 4 {
		return 0, false
	}
	l := int(b[2])<<8 | int(b[3])
	if b[0] < 0x40 {
		return 20 + l, true
	}
	return 4 + (l+3)&^3, true
}
