package proto

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/netip"
	"unicode/utf8"
)

// Supernode messages. A supernode is a client that signs in like any other
// (hello, auth, welcome) and then registers as a relay candidate; the
// server probes it and answers with its decision, then keeps it honest
// with heartbeats and re-checks. Users get a list of promoted supernodes,
// each with a relay token and TURN credentials minted for that supernode.
const (
	TypeSupernodeRegister  Type = "sn_register"   // C→S: candidate offers to relay
	TypeSupernodeStatus    Type = "sn_status"     // S→C: decision about the candidate, with its reason
	TypeSupernodeHeartbeat Type = "sn_heartbeat"  // C→S: a promoted supernode's load; answered by ack
	TypeSupernodes         Type = "supernodes"    // S→C: supernodes this user may relay through
	TypeRelayRequest       Type = "relay_request" // C→S: ask for (another) supernode list
)

func init() {
	register(TypeSupernodeRegister, func() Body { return new(SupernodeRegister) })
	register(TypeSupernodeStatus, func() Body { return new(SupernodeStatus) })
	register(TypeSupernodeHeartbeat, func() Body { return new(SupernodeHeartbeat) })
	register(TypeSupernodes, func() Body { return new(SupernodeList) })
	register(TypeRelayRequest, func() Body { return new(RelayRequest) })
}

// RelayALPN is the TLS ALPN protocol of a supernode's QUIC listener.
const RelayALPN = "parley-relay/1"

// SupernodeRegister offers the sender as a supernode. Addresses are the
// ones others should use (IP literal and port); the server probes them
// from an address the candidate has never contacted before it promotes.
type SupernodeRegister struct {
	// Label is the operator's free-form name for status pages.
	Label string `json:"label,omitempty"`
	// QUIC is the relay's QUIC address (UDP), required.
	QUIC string `json:"quic"`
	// TURNUDP, TURNTCP and TURNTLS are the TURN listeners for browsers.
	TURNUDP string `json:"turn_udp,omitempty"`
	TURNTCP string `json:"turn_tcp,omitempty"`
	TURNTLS string `json:"turn_tls,omitempty"`
	// TURNTLSName, when set, is a DNS name under which TURNTLS presents a
	// certificate browsers trust; the server then hands browsers
	// turns:NAME:PORT instead of an IP they could not verify. Native
	// clients and the probe keep pinning Fingerprint (a connection
	// without that name in its SNI gets the pinned certificate).
	TURNTLSName string `json:"turn_tls_name,omitempty"`
	// Fingerprint is the lowercase hex SHA-256 of the DER certificate the
	// QUIC and TLS listeners present; clients pin it.
	Fingerprint string `json:"fingerprint"`
	// NAT is the candidate's own NAT report (informational: the probe decides).
	NAT *NATReport `json:"nat,omitempty"`
	// MaxSessions and MaxRelayMbps are the operator's budget; 0 = unstated.
	MaxSessions  int     `json:"max_sessions,omitempty"`
	MaxRelayMbps float64 `json:"max_relay_mbps,omitempty"`
	// MaxSessionKbps is the bandwidth one relay session may use, both
	// directions together; 0 = unstated. Users get it in SupernodeInfo
	// so they can keep a file transfer below it while a call shares the
	// session.
	MaxSessionKbps float64 `json:"max_session_kbps,omitempty"`
	// Version is the supernode software version.
	Version string `json:"version,omitempty"`
}

// Validate implements Body.
func (r *SupernodeRegister) Validate() error {
	if err := validateLabel("label", r.Label, 64); err != nil {
		return err
	}
	if r.QUIC == "" {
		return Errorf(CodeBadRequest, "supernode registration needs a QUIC address")
	}
	for _, a := range []struct{ name, v string }{{"quic", r.QUIC}, {"turn_udp", r.TURNUDP}, {"turn_tcp", r.TURNTCP}, {"turn_tls", r.TURNTLS}} {
		if a.v == "" {
			continue
		}
		if _, err := ParseRelayAddr(a.v); err != nil {
			return Errorf(CodeBadRequest, "%s: %s", a.name, messageOf(err))
		}
	}
	if err := ValidateFingerprint(r.Fingerprint); err != nil {
		return err
	}
	if r.TURNTLSName != "" {
		if r.TURNTLS == "" {
			return Errorf(CodeBadRequest, "turn_tls_name without turn_tls")
		}
		if err := ValidateHostName(r.TURNTLSName); err != nil {
			return err
		}
	}
	if r.NAT != nil {
		if err := r.NAT.Validate(); err != nil {
			return err
		}
	}
	if r.MaxSessions < 0 || r.MaxSessions > 1_000_000 || !finiteIn(r.MaxRelayMbps, 0, 1e6) || !finiteIn(r.MaxSessionKbps, 0, 1e9) {
		return Errorf(CodeBadRequest, "supernode budget out of range")
	}
	return validateLabel("version", r.Version, 64)
}

// ParseRelayAddr parses an advertised relay address: an IP literal and a
// non-zero port.
func ParseRelayAddr(s string) (netip.AddrPort, error) {
	ap, err := netip.ParseAddrPort(s)
	if err != nil {
		return netip.AddrPort{}, Errorf(CodeBadRequest, "address %q is not ip:port", truncate(s, 64))
	}
	if ap.Port() == 0 || ap.Addr().IsUnspecified() {
		return netip.AddrPort{}, Errorf(CodeBadRequest, "address %q has no usable ip or port", s)
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
}

// ValidateFingerprint checks a lowercase hex SHA-256 fingerprint.
func ValidateFingerprint(fp string) error {
	if len(fp) != 64 {
		return Errorf(CodeBadRequest, "fingerprint must be 64 hex digits (SHA-256)")
	}
	for i := 0; i < len(fp); i++ {
		c := fp[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return Errorf(CodeBadRequest, "fingerprint must be lowercase hex")
		}
	}
	return nil
}

// CertFingerprint is the pin of a DER certificate: lowercase hex SHA-256.
func CertFingerprint(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// PinnedTLSConfig is a client TLS config that accepts exactly the
// certificate whose fingerprint is fp (self-signed supernode certificates
// have no CA to check; the signaling server vouches for the pin instead).
// SupernodeCertName is the one DNS name in a supernode's self-signed
// certificate, and the SNI of every connection that pins one.
const SupernodeCertName = "parley-supernode"

func PinnedTLSConfig(fp string, alpn ...string) *tls.Config {
	return &tls.Config{
		// The SNI names the supernode's certificate: on a port shared with
		// a CA-issued one (parley serve's 443) it selects the pinned one.
		ServerName:         SupernodeCertName,
		MinVersion:         tls.VersionTLS13,
		NextProtos:         alpn,
		InsecureSkipVerify: true, //nolint:gosec // verified below by pin
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return Errorf(CodeAuthFailed, "supernode presented no certificate")
			}
			if got := CertFingerprint(raw[0]); got != fp {
				return Errorf(CodeAuthFailed, "supernode certificate %s… does not match the pinned %s…", got[:12], truncate(fp, 12))
			}
			return nil
		},
	}
}

// SupernodeState is where a candidate stands.
type SupernodeState string

const (
	SupernodeProbing  SupernodeState = "probing"  // registered; the server is checking it
	SupernodeWaiting  SupernodeState = "waiting"  // checks passed; waiting for the uptime threshold
	SupernodePromoted SupernodeState = "promoted" // relaying for users
	SupernodeRefused  SupernodeState = "refused"  // a check failed; Reason says which
	SupernodeDemoted  SupernodeState = "demoted"  // was promoted, is not any more; Reason says why
)

// SupernodeStatus tells a candidate what the server decided, and why.
type SupernodeStatus struct {
	// ID is the supernode's id in tokens and lists.
	ID     string         `json:"id"`
	State  SupernodeState `json:"state"`
	Reason string         `json:"reason"`
	// TURNSecret (base64) is this supernode's own TURN REST secret, sent
	// on promotion. No two supernodes share one.
	TURNSecret string `json:"turn_secret,omitempty"`
	// Realm is the TURN realm to use with TURNSecret.
	Realm string `json:"realm,omitempty"`
	// TokenKey (base64 Ed25519 public key) verifies relay tokens.
	TokenKey string `json:"token_key,omitempty"`
	// MeasuredMbps and RTTms are what the server's probe measured.
	MeasuredMbps float64 `json:"measured_mbps,omitempty"`
	RTTms        float64 `json:"rtt_ms,omitempty"`
	// HeartbeatMillis is how often to send a heartbeat once promoted.
	HeartbeatMillis int `json:"heartbeat_ms,omitempty"`
	// RetryAfterSeconds, when refused, says when registering again may help.
	RetryAfterSeconds int `json:"retry_after_seconds,omitempty"`
}

// Validate implements Body.
func (s *SupernodeStatus) Validate() error {
	if err := ValidateID(s.ID); err != nil {
		return err
	}
	switch s.State {
	case SupernodeProbing, SupernodeWaiting, SupernodePromoted, SupernodeRefused, SupernodeDemoted:
	default:
		return Errorf(CodeBadRequest, "supernode state %q unknown", truncate(string(s.State), 16))
	}
	if err := validateLabel("reason", s.Reason, 1024); err != nil {
		return err
	}
	if s.TURNSecret != "" {
		if b, err := base64.StdEncoding.DecodeString(s.TURNSecret); err != nil || len(b) < 16 || len(b) > 64 {
			return Errorf(CodeBadRequest, "turn_secret must be base64 of 16–64 bytes")
		}
	}
	if s.TokenKey != "" {
		if _, err := DecodePublicKey(s.TokenKey); err != nil {
			return err
		}
	}
	if s.State == SupernodePromoted && (s.TURNSecret == "" || s.TokenKey == "") {
		return Errorf(CodeBadRequest, "a promotion carries turn_secret and token_key")
	}
	if err := validateLabel("realm", s.Realm, 64); err != nil {
		return err
	}
	if !finiteIn(s.MeasuredMbps, 0, 1e6) || !finiteIn(s.RTTms, 0, 1e6) || s.HeartbeatMillis < 0 || s.HeartbeatMillis > 3_600_000 ||
		s.RetryAfterSeconds < 0 || s.RetryAfterSeconds > 86400 {
		return Errorf(CodeBadRequest, "supernode status figures out of range")
	}
	return nil
}

// SupernodeHeartbeat reports a promoted supernode's load.
type SupernodeHeartbeat struct {
	// Sessions is the number of live relay sessions (TURN allocations).
	Sessions int `json:"sessions"`
	// Users is how many distinct users those sessions belong to.
	Users int `json:"users"`
	// RelayMbps is the relayed rate, both directions, since the last beat.
	RelayMbps float64 `json:"relay_mbps"`
	// Draining asks the server to stop handing this supernode out
	// (the operator is stopping it).
	Draining bool `json:"draining,omitempty"`
}

// Validate implements Body.
func (h *SupernodeHeartbeat) Validate() error {
	if h.Sessions < 0 || h.Sessions > 10_000_000 || h.Users < 0 || h.Users > 10_000_000 || !finiteIn(h.RelayMbps, 0, 1e6) {
		return Errorf(CodeBadRequest, "heartbeat figures out of range")
	}
	return nil
}

// SupernodeInfo is one supernode as a user sees it: where to reach it,
// which certificate to pin, and the credentials minted for this user.
type SupernodeInfo struct {
	ID      string `json:"id"`
	Label   string `json:"label,omitempty"`
	QUIC    string `json:"quic"`
	TURNUDP string `json:"turn_udp,omitempty"`
	TURNTCP string `json:"turn_tcp,omitempty"`
	TURNTLS string `json:"turn_tls,omitempty"`
	// Fingerprint pins the supernode's certificate (hex SHA-256 of DER).
	Fingerprint string `json:"fingerprint"`
	// Load is the supernode's reported load, 0 (idle) to 1 (full).
	Load float64 `json:"load"`
	// SessionKbps is the supernode's per-session budget, both directions
	// together (0 = unstated): what a call and a file transfer relayed in
	// one session share.
	SessionKbps float64 `json:"session_kbps,omitempty"`
	// Token is a relay token for the QUIC listener.
	Token string `json:"token"`
	// TURNUsername and TURNPassword are TURN REST credentials.
	TURNUsername string `json:"turn_username"`
	TURNPassword string `json:"turn_password"`
	// Expires (unix seconds) is when Token expires; ask again before.
	Expires int64 `json:"expires"`
}

// Validate implements Body.
func (i *SupernodeInfo) Validate() error {
	if err := ValidateID(i.ID); err != nil {
		return err
	}
	if err := validateLabel("label", i.Label, 64); err != nil {
		return err
	}
	if _, err := ParseRelayAddr(i.QUIC); err != nil {
		return err
	}
	for _, a := range []string{i.TURNUDP, i.TURNTCP, i.TURNTLS} {
		if a == "" {
			continue
		}
		if _, err := ParseRelayAddr(a); err != nil {
			return err
		}
	}
	if err := ValidateFingerprint(i.Fingerprint); err != nil {
		return err
	}
	if !finiteIn(i.Load, 0, 1e3) || i.Expires < 0 || !finiteIn(i.SessionKbps, 0, 1e9) {
		return Errorf(CodeBadRequest, "supernode load or expiry out of range")
	}
	if len(i.Token) > MaxTokenLen || len(i.TURNUsername) > 128 || len(i.TURNPassword) > 128 {
		return Errorf(CodeBadRequest, "supernode credentials too long")
	}
	return nil
}

// MaxSupernodesListed bounds a SupernodeList.
const MaxSupernodesListed = 16

// SupernodeList gives a user the supernodes it may relay through, best
// first. ICEServers are the same supernodes as TURN servers for browsers.
type SupernodeList struct {
	Supernodes []SupernodeInfo `json:"supernodes"`
	ICEServers []ICEServer     `json:"ice_servers,omitempty"`
	// Reason says why the list was sent (sign-in, a promotion, a
	// demotion that moved this user, a request).
	Reason string `json:"reason,omitempty"`
}

// Validate implements Body.
func (l *SupernodeList) Validate() error {
	if len(l.Supernodes) > MaxSupernodesListed || len(l.ICEServers) > 4*MaxSupernodesListed {
		return Errorf(CodeBadRequest, "supernode list too long")
	}
	for i := range l.Supernodes {
		if err := l.Supernodes[i].Validate(); err != nil {
			return err
		}
	}
	for _, s := range l.ICEServers {
		if len(s.URLs) == 0 || len(s.URLs) > 8 || len(s.Username) > 128 || len(s.Credential) > 128 {
			return Errorf(CodeBadRequest, "ice server entry malformed")
		}
		for _, u := range s.URLs {
			if len(u) > 256 {
				return Errorf(CodeBadRequest, "ice server url too long")
			}
		}
	}
	return validateLabel("reason", l.Reason, 512)
}

// RelayRequest asks the server for a fresh supernode list, leaving out
// Exclude (ids of supernodes that refused us, with Reason).
type RelayRequest struct {
	Exclude []string `json:"exclude,omitempty"`
	Reason  string   `json:"reason,omitempty"`
}

// Validate implements Body.
func (r *RelayRequest) Validate() error {
	if len(r.Exclude) > MaxSupernodesListed {
		return Errorf(CodeBadRequest, "exclude lists more than %d supernodes", MaxSupernodesListed)
	}
	for _, id := range r.Exclude {
		if err := ValidateID(id); err != nil {
			return err
		}
	}
	return validateLabel("reason", r.Reason, 256)
}

// Relay stream protocol. The first bytes a client (or the signaling
// server's prober) sends on a new QUIC stream to a supernode are one
// RelayHello frame; the supernode answers with one RelayReply frame. After
// an accepted "relay" hello the stream carries TURN over TCP framing
// (RFC 8656 section 3.1), with ChannelData as QUIC datagrams when both
// asked for it; after "probe" the supernode sends Bytes bytes and closes.
//
// Frame: a 2-byte big-endian length, then that many bytes of JSON.

// MaxRelayFrame bounds one hello or reply frame.
const MaxRelayFrame = 4096

// RelayOp names what a stream is for.
type RelayOp string

const (
	RelayOpRelay RelayOp = "relay" // TURN over this stream, authorised by Token
	RelayOpProbe RelayOp = "probe" // the server checks reachability, identity and bandwidth
)

// MaxProbeBytes bounds the bandwidth test a probe may ask for.
const MaxProbeBytes = 64 << 20

// RelayHello opens a stream.
type RelayHello struct {
	Op RelayOp `json:"op"`
	// Token is the relay token (Op relay).
	Token string `json:"token,omitempty"`
	// Nonce (base64, Op probe) is signed by the supernode's identity key.
	Nonce string `json:"nonce,omitempty"`
	// Bytes (Op probe) is how much data to send for the bandwidth test.
	Bytes int `json:"bytes,omitempty"`
	// Datagrams (Op relay) asks to carry ChannelData as QUIC datagrams
	// (RFC 9221) beside the stream; see internal/relayconn.
	Datagrams bool `json:"datagrams,omitempty"`
}

// Validate implements Body.
func (h *RelayHello) Validate() error {
	switch h.Op {
	case RelayOpRelay:
		if len(h.Token) > MaxTokenLen {
			return Errorf(CodeTokenInvalid, "relay token too long")
		}
	case RelayOpProbe:
		if b, err := base64.StdEncoding.DecodeString(h.Nonce); err != nil || len(b) < 16 || len(b) > 64 {
			return Errorf(CodeBadRequest, "probe nonce must be base64 of 16–64 bytes")
		}
		if h.Bytes < 0 || h.Bytes > MaxProbeBytes {
			return Errorf(CodeBadRequest, "probe bytes must be 0–%d", MaxProbeBytes)
		}
	default:
		return Errorf(CodeBadRequest, "relay op %q unknown", truncate(string(h.Op), 16))
	}
	return nil
}

// RelayReply answers a RelayHello: OK, or Error with a stable code.
type RelayReply struct {
	OK    bool   `json:"ok"`
	Error *Error `json:"error,omitempty"`
	// Signature (base64, probes) is the supernode's Ed25519 signature
	// over ProbePayload(nonce, fingerprint).
	Signature string `json:"signature,omitempty"`
	// Datagrams confirms that ChannelData may travel as datagrams.
	Datagrams bool `json:"datagrams,omitempty"`
}

// Validate implements Body.
func (r *RelayReply) Validate() error {
	if r.OK == (r.Error != nil) {
		return Errorf(CodeBadRequest, "relay reply must be ok or carry an error, not both or neither")
	}
	if r.Error != nil {
		if err := r.Error.Validate(); err != nil {
			return err
		}
	}
	if r.Signature != "" {
		if b, err := base64.StdEncoding.DecodeString(r.Signature); err != nil || len(b) != 64 {
			return Errorf(CodeBadRequest, "probe signature must be base64 of 64 bytes")
		}
	}
	return nil
}

// ProbePayload is what a supernode signs to prove that the endpoint the
// server reached is the candidate that registered: the server's nonce
// and the certificate fingerprint it saw.
func ProbePayload(nonce, fingerprint string) []byte {
	return []byte("parley-probe-v1\n" + nonce + "\n" + fingerprint)
}

// WriteRelayFrame validates b and writes it as one frame.
func WriteRelayFrame(w io.Writer, b Body) error {
	if err := b.Validate(); err != nil {
		return err
	}
	raw, err := json.Marshal(b)
	if err != nil {
		return fmt.Errorf("proto: marshal relay frame: %w", err)
	}
	if len(raw) > MaxRelayFrame {
		return Errorf(CodeTooLarge, "relay frame of %d bytes exceeds %d", len(raw), MaxRelayFrame)
	}
	buf := make([]byte, 2+len(raw))
	binary.BigEndian.PutUint16(buf, uint16(len(raw)))
	copy(buf[2:], raw)
	_, err = w.Write(buf)
	return err
}

// ReadRelayFrame reads one frame into b and validates it. A short read is
// returned as is (io.ErrUnexpectedEOF, a timeout); bad content is a *Error.
func ReadRelayFrame(r io.Reader, b Body) error {
	var hdr [2]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := int(binary.BigEndian.Uint16(hdr[:]))
	if n == 0 || n > MaxRelayFrame {
		return Errorf(CodeBadFrame, "relay frame length %d not in 1–%d", n, MaxRelayFrame)
	}
	raw := make([]byte, n)
	if _, err := io.ReadFull(r, raw); err != nil {
		return err
	}
	return DecodeRelayFrame(raw, b)
}

// DecodeRelayFrame decodes a frame's JSON into b and validates it.
func DecodeRelayFrame(raw []byte, b Body) error {
	if len(raw) > MaxRelayFrame {
		return Errorf(CodeTooLarge, "relay frame of %d bytes exceeds %d", len(raw), MaxRelayFrame)
	}
	if err := json.Unmarshal(raw, b); err != nil {
		return Errorf(CodeBadFrame, "relay frame is not JSON: %v", err)
	}
	return b.Validate()
}

func validateLabel(what, s string, max int) error {
	if len(s) > max {
		return Errorf(CodeBadRequest, "%s longer than %d bytes", what, max)
	}
	if !utf8.ValidString(s) {
		return Errorf(CodeBadRequest, "%s is not valid UTF-8", what)
	}
	return nil
}

func finiteIn(f, lo, hi float64) bool {
	return !math.IsNaN(f) && !math.IsInf(f, 0) && f >= lo && f <= hi
}
