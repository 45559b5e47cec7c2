package supernode_test

import (
	"crypto/ed25519"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
	"github.com/quic-go/quic-go"
)

// streamNetConn makes a relay stream a net.Conn for pion's TURN client.
type streamNetConn struct {
	*quic.Stream
	local, remote net.Addr
}

func (c streamNetConn) LocalAddr() net.Addr  { return c.local }
func (c streamNetConn) RemoteAddr() net.Addr { return c.remote }

// turnOverStream opens a relay stream with info's token and returns a TURN
// client on it (not yet allocated), or the supernode's refusal.
func turnOverStream(t testing.TB, info proto.SupernodeInfo) (*turn.Client, *proto.Error) {
	t.Helper()
	ap, _ := proto.ParseRelayAddr(info.QUIC)
	conn := quicDial(t, ap, info.Fingerprint)
	r, st := hello(t, conn, &proto.RelayHello{Op: proto.RelayOpRelay, Token: info.Token})
	if !r.OK {
		return nil, r.Error
	}
	nc := streamNetConn{Stream: st, local: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1}, remote: net.TCPAddrFromAddrPort(ap)}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: info.QUIC, STUNServerAddr: info.QUIC,
		Username: info.TURNUsername, Password: info.TURNPassword,
		Conn: turn.NewSTUNConn(nc), LoggerFactory: lf,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c, nil
}

// allocate makes one allocation on sn through a relay stream.
func allocate(t testing.TB, sn *supernodetest.Supernode, info proto.SupernodeInfo) (*turn.Client, net.PacketConn) {
	t.Helper()
	c, perr := turnOverStream(t, info)
	if perr != nil {
		t.Fatalf("relay stream refused: %v", perr)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate on %s: %v", sn.Status().Name, err)
	}
	t.Cleanup(func() { relay.Close() })
	return c, relay
}

// TestTokenAbuse: every way of opening a relay stream without a proper
// token is refused with its own error code, message and counter.
func TestTokenAbuse(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{Name: "snx"})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	a := sn.Addrs().QUIC
	conn := quicDial(t, a, sn.Fingerprint())
	now := time.Now()
	mint := func(key ed25519.PrivateKey, user, snID string, exp time.Time) string {
		s, err := proto.SignRelayToken(key, &proto.RelayToken{User: user, Supernode: snID, Issued: now.Add(-time.Hour).Unix(), Expiry: exp.Unix()})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	_, otherKey, _ := ed25519.GenerateKey(nil)
	cases := []struct {
		name    string
		hello   *proto.RelayHello
		code    proto.Code
		msg     string
		counter func(supernode.Stats) int64
	}{
		{"no token", &proto.RelayHello{Op: proto.RelayOpRelay}, proto.CodeTokenInvalid, "no relay token", func(s supernode.Stats) int64 { return s.TokenMissing }},
		{"half a hello", nil, proto.CodeTokenInvalid, "no relay hello within", func(s supernode.Stats) int64 { return s.TokenMissing }},
		{"expired", &proto.RelayHello{Op: proto.RelayOpRelay, Token: mint(tokenKey, "alice", "snx", now.Add(-time.Minute))}, proto.CodeTokenExpired, "expired", func(s supernode.Stats) int64 { return s.TokenExpired }},
		{"forged", &proto.RelayHello{Op: proto.RelayOpRelay, Token: mint(otherKey, "alice", "snx", now.Add(time.Minute))}, proto.CodeTokenInvalid, "does not verify", func(s supernode.Stats) int64 { return s.TokenInvalid }},
		{"garbage", &proto.RelayHello{Op: proto.RelayOpRelay, Token: "prt1.not.atoken"}, proto.CodeTokenInvalid, "relay token", func(s supernode.Stats) int64 { return s.TokenInvalid }},
		{"another supernode's", &proto.RelayHello{Op: proto.RelayOpRelay, Token: mint(tokenKey, "alice", "sny", now.Add(time.Minute))}, proto.CodeTokenInvalid, `for supernode "sny", not "snx"`, func(s supernode.Stats) int64 { return s.TokenOtherSN }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.counter(sn.Stats())
			var r *proto.RelayReply
			if tc.hello == nil {
				r, _ = hello(t, conn, nil) // one byte, then nothing: the supernode times out
			} else {
				r, _ = hello(t, conn, tc.hello)
			}
			if r.OK || r.Error == nil || r.Error.Code != tc.code || !strings.Contains(r.Error.Message, tc.msg) {
				t.Fatalf("reply %+v (%v), want %s containing %q", r, r.Error, tc.code, tc.msg)
			}
			if after := tc.counter(sn.Stats()); after != before+1 {
				t.Fatalf("counter %d -> %d", before, after)
			}
		})
	}
	// And the real thing works on the same connection.
	u := signIn(t, sig.URL, "alice")
	good := u.list(1).Supernodes[0]
	if r, _ := hello(t, conn, &proto.RelayHello{Op: proto.RelayOpRelay, Token: good.Token}); !r.OK {
		t.Fatalf("valid token refused: %v", r.Error)
	}
}

// TestPeerPolicy: a relay never reaches loopback, private, link-local or
// reserved addresses, nor this supernode's own non-relay ports.
func TestPeerPolicy(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{}) // no AllowPeers
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	info := signIn(t, sig.URL, "mallory").list(1).Supernodes[0]
	c, _ := allocate(t, sn, info)
	// (IPv6 peers are refused by pion before the policy: the relay is
	// IPv4, RFC 6156 443; the policy's v6 rules have a unit test.)
	for _, peer := range []string{"127.0.0.1:22", "10.1.2.3:80", "192.168.1.1:53", "172.16.0.1:5432", "169.254.169.254:80", "0.0.0.0:8080", "100.64.0.1:1", "255.255.255.255:9"} {
		t.Run(peer, func(t *testing.T) {
			before := sn.Stats().PeerDenied
			addr, _ := net.ResolveUDPAddr("udp", peer)
			err := c.CreatePermission(addr)
			if err == nil || !strings.Contains(err.Error(), "403") {
				t.Fatalf("permission for %s: %v, want 403 Forbidden", peer, err)
			}
			if sn.Stats().PeerDenied != before+1 {
				t.Fatalf("PeerDenied %d -> %d", before, sn.Stats().PeerDenied)
			}
		})
	}
	// A public address is allowed (nothing is sent to it).
	if err := c.CreatePermission(&net.UDPAddr{IP: net.IPv4(203, 0, 113, 9), Port: 5000}); err != nil {
		t.Fatalf("public peer refused: %v", err)
	}
}

// TestBudgets: a user over its allocation quota, and anyone once the
// supernode is full, is refused with over_budget and a counter; TURN with
// bad credentials (the browser path) is refused and counted.
func TestBudgets(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{MaxAllocationsPerUser: 1, MaxSessions: 2})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	alice := signIn(t, sig.URL, "alice").list(1).Supernodes[0]
	bob := signIn(t, sig.URL, "bob").list(1).Supernodes[0]
	carol := signIn(t, sig.URL, "carol").list(1).Supernodes[0]

	allocate(t, sn, alice)
	_, perr := turnOverStream(t, alice)
	if perr == nil || perr.Code != proto.CodeOverBudget || !strings.Contains(perr.Message, "alice already has 1 relay sessions") {
		t.Fatalf("second session for alice: %v", perr)
	}
	if n := sn.Stats().UserOverQuota; n != 1 {
		t.Fatalf("UserOverQuota %d", n)
	}
	allocate(t, sn, bob)
	_, perr = turnOverStream(t, carol)
	if perr == nil || perr.Code != proto.CodeOverBudget || !strings.Contains(perr.Message, "is full: 2 of 2 sessions") {
		t.Fatalf("carol on a full supernode: %v", perr)
	}
	if n := sn.Stats().SessionsFull; n != 1 {
		t.Fatalf("SessionsFull %d", n)
	}

	// Browser path: TURN over UDP with a wrong password.
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: carol.TURNUDP, STUNServerAddr: carol.TURNUDP,
		Username: carol.TURNUsername, Password: "not-the-password", Conn: pc, LoggerFactory: lf, RTO: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Allocate(); err == nil {
		t.Fatal("allocation with a wrong password succeeded")
	}
	if n := sn.Stats().TURNAuthFail; n == 0 {
		t.Fatal("TURN auth failure not counted")
	}
}

// TestBandwidthBudgets: a session sending faster than its own budget has
// the excess dropped and counted; traffic within budget passes. (The
// operator's total is not enforced by dropping packets of every call:
// TestShedNewestFlow.)
func TestBandwidthBudgets(t *testing.T) {
	cases := []struct {
		name    string
		cfg     supernode.Config
		counter func(supernode.Stats) int64
	}{
		{"per session", supernode.Config{MaxSessionKbps: 200, MaxRelayMbps: 1000}, func(s supernode.Stats) int64 { return s.SessionDrops }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sig := loopbackSignal(t, nil)
			tc.cfg.AllowPeers = supernodetest.Loopback
			sn := supernodetest.Start(t, sig.URL, tc.cfg)
			sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
			_, relay := allocate(t, sn, signIn(t, sig.URL, "alice").list(1).Supernodes[0])
			// A plain UDP peer on loopback receives what the relay sends.
			peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer peer.Close()
			got := make(chan int, 1)
			go func() {
				n, buf := 0, make([]byte, 2000)
				for {
					peer.SetReadDeadline(time.Now().Add(time.Second))
					if _, _, err := peer.ReadFrom(buf); err != nil {
						got <- n
						return
					}
					n++
				}
			}()
			// 300 packets of 1000 bytes in ~0.3 s: ~8 Mbit/s, far over
			// both budgets (the burst allowance is 16 KiB).
			payload := make([]byte, 1000)
			for i := 0; i < 300; i++ {
				relay.WriteTo(payload, peer.LocalAddr())
				time.Sleep(time.Millisecond)
			}
			n := <-got
			drops := tc.counter(sn.Stats())
			t.Logf("%d of 300 packets reached the peer, %d dropped over budget", n, drops)
			if n == 0 || n > 150 || drops == 0 {
				t.Fatalf("%d packets passed, %d counted as dropped: the budget did not bind", n, drops)
			}
		})
	}
}

// TestBrowserCredentials: the welcome of a signed-in user lists every
// promoted supernode as TURN servers (UDP, TCP) with HMAC
// credentials, and they allocate over plain TURN UDP (the browser path).
func TestBrowserCredentials(t *testing.T) {
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	u := signIn(t, sig.URL, "carol")
	// No turns: URL: a browser verifies a turns: server's certificate
	// against the URL's host, and an IP with the supernode's self-signed
	// certificate never passes (TURNTLSName names one that does).
	if len(u.ice) != 1 || len(u.ice[0].URLs) != 2 {
		t.Fatalf("welcome ICE servers %+v", u.ice)
	}
	a := sn.Addrs()
	want := []string{"turn:" + a.TURNUDP.String() + "?transport=udp", "turn:" + a.TURNTCP.String() + "?transport=tcp"}
	for i, w := range want {
		if u.ice[0].URLs[i] != w {
			t.Fatalf("url %d: %q, want %q", i, u.ice[0].URLs[i], w)
		}
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: a.TURNUDP.String(), STUNServerAddr: a.TURNUDP.String(),
		Username: u.ice[0].Username, Password: u.ice[0].Credential, Conn: pc, LoggerFactory: lf})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	relay, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate with the welcome's credentials: %v", err)
	}
	relay.Close()
}
