package supernode

import (
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // TURN REST credentials are HMAC-SHA1 by definition
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"net/netip"
	"runtime"
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
//
// The TURN UDP listener is read by the data plane (dataplane.go) when the
// platform allows: pion then sees only what the fast path leaves to it.
func (s *Server) newTURN() (*turn.Server, error) {
	perm := s.permission
	var pcs []turn.PacketConnConfig
	if s.turnUDP != nil {
		if s.dp = newDataplane(s, s.turnUDP, runtime.GOMAXPROCS(0) >= 2); s.dp != nil {
			s.turnUDP = s.dp.lisPC
		}
		pcs = append(pcs, turn.PacketConnConfig{PacketConn: s.turnUDP, RelayAddressGenerator: &relayGen{s, viaUDP}, PermissionHandler: perm})
	}
	lns := []turn.ListenerConfig{{Listener: s.streams, RelayAddressGenerator: &relayGen{s, viaStream}, PermissionHandler: perm}}
	tcpGen := &relayGen{s, viaTCP}
	if s.turnTCP != nil {
		lns = append(lns, turn.ListenerConfig{Listener: s.turnTCP, RelayAddressGenerator: tcpGen, PermissionHandler: perm})
	}
	if s.turnTLS != nil {
		tl := s.turnTLS
		if s.cfg.TURNTLSListener == nil { // else TLS is terminated already
			tl = tls.NewListener(tl, &tls.Config{Certificates: []tls.Certificate{*s.cert}, MinVersion: tls.VersionTLS12})
		}
		lns = append(lns, turn.ListenerConfig{Listener: tl, RelayAddressGenerator: tcpGen, PermissionHandler: perm})
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
				s.release(addrPort(src), true)
				s.linkAllocation(addrPort(src), addrPort(relay).Port())
				s.log.Debug("supernode: allocation", "user", user, "src", src, "relay", relay, "via", proto)
			},
			OnAllocationDeleted: func(src, _ net.Addr, _, user, _ string) {
				s.users.add(user, -1)
				if s.dp != nil {
					if _, udp := src.(*net.UDPAddr); udp {
						s.dp.setClient(addrPort(src), nil)
					}
				}
			},
			OnPermissionCreated: func(_, _ net.Addr, _, user, _ string, _ net.Addr, peer net.IP) {
				s.log.Debug("supernode: permission", "user", user, "peer", peer)
			},
			// Channels are what the fast paths forward by.
			OnChannelCreated: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
				if c := s.relays.get(addrPort(relay).Port()); c != nil {
					c.setChannel(number, addrPort(peer), true)
				}
			},
			OnChannelDeleted: func(_, _ net.Addr, _, _, _ string, relay, peer net.Addr, number uint16) {
				if c := s.relays.get(addrPort(relay).Port()); c != nil {
					c.setChannel(number, addrPort(peer), false)
				}
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
// 8656 section 7.2 step 7) when it does not fit (admitSession). A QUIC
// relay stream was admitted, and its place reserved, before its first
// Allocate: that reservation is its pass.
func (s *Server) turnQuota(user, _ string, src net.Addr) bool {
	if err := s.admitSession(user, addrPort(src), false); err != nil {
		if _, stream := s.streamUser(src); stream {
			s.stats.streamAllocRefused.Add(1)
		}
		s.limitedLog("turn allocation refused", "user", user, "src", src, "err", err)
		return false
	}
	return true
}

// linkAllocation tells the fast paths whose allocation a new relay port
// is: a TURN UDP client's address, or a QUIC relay stream.
func (s *Server) linkAllocation(src netip.AddrPort, port uint16) {
	c := s.relays.get(port)
	if c == nil {
		return
	}
	switch c.kind {
	case viaUDP:
		if s.dp != nil && c.sock != nil {
			s.dp.setClient(src, c)
		}
	case viaStream:
		s.mu.Lock()
		sc := s.streamConns[src]
		s.mu.Unlock()
		if sc != nil {
			sc.relay.Store(c)
			c.stream.Store(sc)
		}
	}
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
