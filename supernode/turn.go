package supernode

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by definition
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// realm is the TURN realm (RFC 8489 section 9.2) of every supernode.
const realm = "parley"

// newTURN builds the pion/turn server over the supernode's listeners: UDP,
// TCP and TLS for browsers and the QUIC stream listener for native clients.
// Each listener gets its own allocation manager (pion's design); relay
// sockets come from relayGen so that every allocation obeys the limits.
func (s *Server) newTURN() (*turn.Server, error) {
	gen := &relayGen{s: s}
	perm := s.permission
	var pcs []turn.PacketConnConfig
	if s.turnUDP != nil {
		pcs = append(pcs, turn.PacketConnConfig{PacketConn: s.turnUDP, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	lns := []turn.ListenerConfig{{Listener: s.streams, RelayAddressGenerator: gen, PermissionHandler: perm}}
	if s.turnTCP != nil {
		lns = append(lns, turn.ListenerConfig{Listener: s.turnTCP, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	if s.turnTLS != nil {
		tl := s.turnTLS
		if s.cfg.TURNTLSListener == nil { // else TLS is terminated already
			tl = tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{*s.cert}, MinVersion: tls.VersionTLS12})
		}
		lns = append(lns, turn.ListenerConfig{Listener: tl, RelayAddressGenerator: gen, PermissionHandler: perm})
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	srv, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs:  pcs,
		ListenerConfigs:    lns,
		LoggerFactory:      lf,
		Realm:              realm,
		AuthHandler:        s.turnAuth,
		QuotaHandler:       s.turnQuota,
		AllocationLifetime: s.cfg.AllocationLifetime,
		EventHandler: turn.EventHandler{
			OnAuth: func(src, _ net.Addr, proto, user, _ string, method string, ok bool) {
				if !ok {
					s.stats.turnAuthFailures.Add(1)
					s.limitedLog("turn auth refused", "src", src, "user", user, "method", method)
				}
			},
			OnAllocationCreated: func(src, _ net.Addr, proto, user, _ string, relay net.Addr, _ int) {
				s.users.add(user, 1)
				s.stats.allocations.Add(1)
				s.log.Debug("supernode: allocation", "user", user, "src", src, "relay", relay, "via", proto)
			},
			OnAllocationDeleted: func(src, _ net.Addr, _, user, _ string) {
				s.users.add(user, -1)
			},
			OnPermissionCreated: func(_, _ net.Addr, _, user, _ string, _ net.Addr, peer net.IP) {
				s.log.Debug("supernode: permission", "user", user, "peer", peer)
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("supernode: turn server: %w", err)
	}
	return srv, nil
}

// turnAuth implements TURN REST authentication (draft-uberti-behave-
// turn-rest-00 section 2.2): the username is "expiry:user" and the
// password HMAC-SHA1(secret, username), the secret being the one the
// signaling server gave this supernode on promotion. On a QUIC stream the
// user must also be the one its relay token was issued to.
func (s *Server) turnAuth(ra *turn.RequestAttributes) (string, []byte, bool) {
	p := s.promo.Load()
	if p == nil {
		return "", nil, false
	}
	expiry, user, err := proto.ParseTURNUsername(ra.Username)
	if err != nil || time.Now().After(expiry) {
		return "", nil, false
	}
	if tokUser, ok := s.streamUser(ra.SrcAddr); ok && tokUser != user {
		s.stats.tokenMismatch.Add(1)
		return "", nil, false
	}
	mac := hmac.New(sha1.New, p.secret)
	mac.Write([]byte(ra.Username))
	password := base64.StdEncoding.EncodeToString(mac.Sum(nil))
	return user, turn.GenerateAuthKey(ra.Username, ra.Realm, password), true
}

// turnQuota refuses a new allocation (486 Allocation Quota Reached, RFC
// 8656 section 7.2 step 7) when the supernode is not accepting sessions,
// is full, or the user already holds its quota.
func (s *Server) turnQuota(user, _ string, src net.Addr) bool {
	if err := s.admitSession(user); err != nil {
		s.limitedLog("turn allocation refused", "user", user, "src", src, "err", err)
		return false
	}
	return true
}

// admitSession checks the session limits for a new session of user, and
// counts the refusal. It returns a *proto.Error saying which limit.
func (s *Server) admitSession(user string) error {
	if !s.accepting.Load() {
		s.stats.notPromoted.Add(1)
		return proto.Errorf(proto.CodeUnavailable, "supernode %s is not promoted (%s)", s.cfg.Name, s.stateReason())
	}
	if n := s.sessions(); n >= s.cfg.MaxSessions {
		s.stats.sessionsFull.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "supernode %s is full: %d of %d sessions", s.cfg.Name, n, s.cfg.MaxSessions)
	}
	if n := s.users.get(user); n >= s.cfg.MaxAllocationsPerUser {
		s.stats.userOverQuota.Add(1)
		return proto.Errorf(proto.CodeOverBudget, "%s already has %d relay sessions on %s (limit %d)", user, n, s.cfg.Name, s.cfg.MaxAllocationsPerUser)
	}
	return nil
}

// sessions is the number of live TURN allocations.
func (s *Server) sessions() int {
	if s.turn == nil {
		return 0
	}
	return s.turn.AllocationCount()
}

// permission is the TURN PermissionHandler (CreatePermission and
// ChannelBind, RFC 8656 sections 9 and 12): the peer policy, per IP.
func (s *Server) permission(client net.Addr, peer net.IP) bool {
	ip, _ := netip.AddrFromSlice(peer)
	ok, _, reason := s.policy.verdict(ip.Unmap())
	if !ok {
		s.stats.peerDenied.Add(1)
		s.limitedLog("relay to peer refused", "client", client, "peer", peer, "reason", reason)
	}
	return ok
}

// relayGen allocates the relayed transport address of an allocation: a
// UDP socket from Config.PacketListener, advertised on PublicAddr.
type relayGen struct{ s *Server }

func (g *relayGen) Validate() error { return nil }

func (g *relayGen) AllocatePacketConn(conf turn.AllocateListenerConfig) (net.PacketConn, net.Addr, error) {
	s := g.s
	if conf.Network != "udp4" && conf.Network != "udp6" {
		return nil, nil, fmt.Errorf("supernode: relay network %q not supported", conf.Network)
	}
	if (conf.Network == "udp6") != s.public.Is6() {
		return nil, nil, fmt.Errorf("supernode: relay family %s does not match public address %s", conf.Network, s.public)
	}
	port := 0
	if conf.RequestedPort > 0 {
		port = conf.RequestedPort
	}
	pc, err := s.cfg.PacketListener.ListenPacket(conf.Network, net.JoinHostPort(s.bindIP(), strconv.Itoa(port)))
	if err != nil {
		return nil, nil, fmt.Errorf("supernode: relay socket: %w", err)
	}
	lp := addrPort(pc.LocalAddr()).Port()
	s.relays.add(lp)
	rc := &relayConn{PacketConn: pc, s: s, port: lp, session: newBudget(s.cfg.MaxSessionKbps)}
	return rc, &net.UDPAddr{IP: s.public.AsSlice(), Port: int(lp)}, nil
}

var errNoTCPRelay = errors.New("supernode: TCP relay allocations (RFC 6062) are not offered")

func (g *relayGen) AllocateListener(turn.AllocateListenerConfig) (net.Listener, net.Addr, error) {
	return nil, nil, errNoTCPRelay
}

func (g *relayGen) AllocateConn(turn.AllocateConnConfig) (net.Conn, error) {
	return nil, errNoTCPRelay
}
