package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"time"

	"github.com/parley-voice/parley/proto"
)

// PacketListener opens UDP sockets. A natlab Host, pion's vnet and
// SystemNet satisfy it.
type PacketListener interface {
	ListenPacket(network, address string) (net.PacketConn, error)
}

// Config configures a Server. Every zero value is documented and usable
// except Server, Key and Name, which are required.
//
// `parley chat --supernode` builds this Config from the chat client's
// identity (cmd/parley SupernodeConfigFor): Server and Key are the chat's,
// Name is a name of its own (the chat name with "-sn", within 32 bytes: a
// supernode signs in as its own user), and the listen addresses default
// as below (a desktop user without privileges picks high ports).
type Config struct {
	// Server is the signaling server's WebSocket URL (ws://host:port/ws;
	// http:// and bare host:port are accepted). Required.
	Server string
	// Key is the supernode's identity: it signs in with it and signs the
	// server's probe nonce with it. Required.
	Key ed25519.PrivateKey
	// Name is the user name the supernode signs in as, and its id in
	// relay tokens. Required.
	Name string
	// Label is a free-form operator label shown on status pages.
	Label string

	// ListenQUIC is the QUIC relay address (UDP). Empty means
	// "0.0.0.0:443"; port 0 picks one.
	ListenQUIC string
	// ListenTURNUDP, ListenTURNTCP and ListenTURNTLS are the TURN
	// listeners for browsers. Empty means 0.0.0.0:3478 (UDP and TCP) and
	// 0.0.0.0:5349 (TLS); port 0 picks one; "off" disables one.
	ListenTURNUDP string
	ListenTURNTCP string
	ListenTURNTLS string
	// TURNTCPListener and TURNTLSListener, when set, replace the listeners
	// ListenTURNTCP and ListenTURNTLS would open: a server sharing one TCP
	// port among HTTPS and TURN (internal/portmux) hands over the
	// connections that carry TURN. TURNTLSListener's connections arrive
	// with TLS already terminated. Their Addr is what is advertised.
	TURNTCPListener net.Listener
	TURNTLSListener net.Listener
	// TURNTLSName is the DNS name under which the TURN-TLS listener shows
	// a certificate browsers trust (a CA-issued one, e.g. the call page's
	// on a shared 443). Browsers are then handed turns:NAME:PORT, which
	// they can verify; native clients keep pinning Fingerprint. Empty:
	// browsers get no turns: URL they could not verify anyway.
	TURNTLSName string
	// PublicAddr is the IP others reach this machine at. The zero value
	// means the QUIC listener's IP when it is a specific address, else the
	// public address of NAT (if given). Ports are advertised as bound: a
	// port forward on a home router must keep the port numbers.
	PublicAddr netip.Addr
	// NAT is the supernode's own NAT report, sent with the registration
	// for the operator's and server's information (the probe decides).
	NAT *proto.NATReport

	// MaxSessions bounds concurrent relay sessions (TURN allocations plus
	// sessions admitted and waiting for one). Zero sizes it from
	// MaxRelayMbps: four times the voice sessions the budget carries
	// (1,315 for 50 Mbit/s), because most allocations idle; the budget
	// decides what is carried.
	MaxSessions int
	// MaxRelayMbps is the operator's relay budget: what the relay sends,
	// in bits on the wire (IP, UDP and TURN or QUIC framing counted), which
	// is also about what it receives. A new session is admitted while the
	// measured traffic plus a voice call's 152 kbit/s for each session
	// not yet measured fits; admitted traffic that outgrows it has its
	// newest flows shed whole. Zero means 50.
	MaxRelayMbps float64
	// MaxSessionKbps bounds one session's traffic, both directions
	// together, in wire bits (a voice session is 152). Zero means 1000.
	MaxSessionKbps float64
	// MaxAllocationsPerUser bounds a user's concurrent allocations
	// (coturn's user-quota). Zero means 8.
	MaxAllocationsPerUser int
	// AllocationLifetime is the TURN allocation lifetime granted before a
	// Refresh is needed (RFC 8656 section 7.2). Zero means 10 minutes.
	AllocationLifetime time.Duration
	// RelayPorts is the UDP port range relay sockets are opened in (the
	// range an operator opens in a firewall; coturn's min-port/max-port).
	// The zero value lets the kernel pick (its ephemeral range,
	// net.ipv4.ip_local_port_range).
	RelayPorts PortRange
	// AllowPeers lists prefixes relaying may reach although the default
	// policy denies them (loopback, private, link-local, this host). Tests
	// on loopback or in a lab's private ranges set it; nothing else should.
	AllowPeers []netip.Prefix

	// Certificate is presented on QUIC and TURN-TLS. The zero value
	// generates a self-signed ECDSA P-256 certificate; clients pin its
	// SHA-256 fingerprint, which the signaling server publishes.
	Certificate *tls.Certificate

	// PacketListener opens UDP sockets: QUIC, TURN UDP and every relay
	// allocation. Nil means the system's network.
	PacketListener PacketListener
	// Listen opens TCP listeners (TURN TCP and TLS). Nil means net.Listen.
	Listen func(network, address string) (net.Listener, error)
	// TLS configures a wss:// (https://) signaling connection: RootCAs for
	// a private CA. Nil uses the system's roots.
	TLS *tls.Config
	// Dial opens the signaling connection. Nil means a net.Dialer.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)

	// ReconnectMin and ReconnectMax bound the backoff between signaling
	// reconnects. Zero means 250 ms and 15 s.
	ReconnectMin, ReconnectMax time.Duration
	// OnDecision, when set, is called (from the signaling goroutine) with
	// every decision the signaling server sends, so a daemon can print it.
	OnDecision func(Decision)
	// Logger receives lifecycle logs and every decision. Nil discards.
	Logger *slog.Logger
}

// Decision is one verdict of the signaling server about this supernode.
type Decision struct {
	Time         time.Time            `json:"time"`
	State        proto.SupernodeState `json:"state"`
	Reason       string               `json:"reason"`
	MeasuredMbps float64              `json:"measured_mbps"`
	RTTms        float64              `json:"rtt_ms"`
}

func (d Decision) String() string {
	s := fmt.Sprintf("%s %s: %s", d.Time.Format("15:04:05"), d.State, d.Reason)
	if d.MeasuredMbps > 0 && !strings.Contains(d.Reason, "Mbps") {
		s += fmt.Sprintf(" (measured %.1f Mbps, rtt %.1f ms)", d.MeasuredMbps, d.RTTms)
	}
	return s
}

func (c *Config) setDefaults() error {
	if c.Server == "" || c.Name == "" || len(c.Key) != ed25519.PrivateKeySize {
		return fmt.Errorf("%w: Server, Name and Key are required", ErrBadConfig)
	}
	if err := proto.ValidateRegisterName(c.Name); err != nil {
		return fmt.Errorf("%w: name: %v", ErrBadConfig, err)
	}
	if len(c.Label) > 64 {
		return fmt.Errorf("%w: label longer than 64 bytes", ErrBadConfig)
	}
	def := func(p *string, v string) {
		if *p == "" {
			*p = v
		}
	}
	def(&c.ListenQUIC, "0.0.0.0:443")
	def(&c.ListenTURNUDP, "0.0.0.0:3478")
	def(&c.ListenTURNTCP, "0.0.0.0:3478")
	def(&c.ListenTURNTLS, "0.0.0.0:5349")
	if c.MaxRelayMbps == 0 {
		c.MaxRelayMbps = 50
	}
	if c.MaxSessions == 0 {
		c.MaxSessions = defaultMaxSessions(c.MaxRelayMbps)
	}
	if c.MaxSessionKbps == 0 {
		c.MaxSessionKbps = 1000
	}
	if c.MaxAllocationsPerUser == 0 {
		c.MaxAllocationsPerUser = 8
	}
	if c.AllocationLifetime == 0 {
		c.AllocationLifetime = 10 * time.Minute
	}
	if c.MaxSessions < 0 || c.MaxRelayMbps < 0 || c.MaxSessionKbps < 0 || c.MaxAllocationsPerUser < 0 || c.AllocationLifetime < time.Minute {
		return fmt.Errorf("%w: limits must be positive and the allocation lifetime at least 1m", ErrBadConfig)
	}
	if c.RelayPorts != (PortRange{}) && (c.RelayPorts.Min == 0 || c.RelayPorts.Max < c.RelayPorts.Min) {
		return fmt.Errorf("%w: relay port range %d-%d", ErrBadConfig, c.RelayPorts.Min, c.RelayPorts.Max)
	}
	if c.ReconnectMin == 0 {
		c.ReconnectMin = 250 * time.Millisecond
	}
	if c.ReconnectMax == 0 {
		c.ReconnectMax = 15 * time.Second
	}
	if c.PacketListener == nil {
		c.PacketListener = SystemNet{}
	}
	if c.Listen == nil {
		c.Listen = SystemNet{}.Listen
	}
	if c.Dial == nil {
		d := &net.Dialer{Timeout: 10 * time.Second}
		c.Dial = d.DialContext
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	return nil
}

// PortRange is an inclusive range of ports; the zero value is none.
type PortRange struct{ Min, Max uint16 }

// ParsePortRange parses "MIN-MAX" (empty: the zero range).
func ParsePortRange(s string) (PortRange, error) {
	if s == "" {
		return PortRange{}, nil
	}
	var lo, hi uint16
	if _, err := fmt.Sscanf(s, "%d-%d", &lo, &hi); err != nil || lo == 0 || hi < lo {
		return PortRange{}, fmt.Errorf("%w: port range %q: want MIN-MAX, e.g. 49152-65535", ErrBadConfig, s)
	}
	return PortRange{lo, hi}, nil
}

// SystemNet opens sockets in the process's own network.
type SystemNet struct{}

// ListenPacket implements PacketListener.
func (SystemNet) ListenPacket(network, address string) (net.PacketConn, error) {
	return net.ListenPacket(network, address) //nolint:noctx // bind only
}

// Listen is net.Listen.
func (SystemNet) Listen(network, address string) (net.Listener, error) {
	return net.Listen(network, address) //nolint:noctx // bind only
}
