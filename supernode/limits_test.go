package supernode

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
)

func TestPeerPolicyVerdict(t *testing.T) {
	own := netip.MustParseAddr("203.0.113.7")
	p := peerPolicy{own: map[netip.Addr]bool{own: true}, allow: []netip.Prefix{netip.MustParsePrefix("10.9.0.0/16")}}
	cases := []struct {
		ip      string
		ok, own bool
		reason  string
	}{
		{"198.51.100.4", true, false, ""},
		{"2001:db8::1", true, false, ""},
		{"203.0.113.7", true, true, "this supernode's own address"},
		{"10.9.1.1", true, false, ""}, // allow-listed
		{"10.1.1.1", false, false, "private address"},
		{"127.0.0.1", false, false, "loopback address"},
		{"::1", false, false, "loopback address"},
		{"::ffff:127.0.0.1", false, false, "loopback address"},
		{"0.0.0.0", false, false, "unspecified address"},
		{"0.1.2.3", false, false, "reserved address (0.0.0.0/8)"},
		{"169.254.169.254", false, false, "link-local address"},
		{"fe80::1", false, false, "link-local address"},
		{"fd00::1", false, false, "private address"},
		{"224.0.0.1", false, false, "link-local address"},
		{"239.1.1.1", false, false, "multicast address"},
		{"100.64.1.1", false, false, "reserved address (100.64.0.0/10)"},
		{"255.255.255.255", false, false, "reserved address (240.0.0.0/4)"},
	}
	for _, tc := range cases {
		ok, ownOnly, reason := p.verdict(netip.MustParseAddr(tc.ip))
		if ok != tc.ok || ownOnly != tc.own || reason != tc.reason {
			t.Errorf("%s: got (%v, %v, %q), want (%v, %v, %q)", tc.ip, ok, ownOnly, reason, tc.ok, tc.own, tc.reason)
		}
	}
}

func TestRelayPortsAndUsers(t *testing.T) {
	var r relayPorts
	a, b := &relayConn{}, &relayConn{}
	r.add(5000, a)
	r.add(5000, b) // the port was reused before a's Close ran
	r.remove(5000, a)
	if r.get(5000) != b {
		t.Fatal("a stale Close removed the port's new allocation")
	}
	r.remove(5000, b)
	if r.has(5000) {
		t.Fatal("port still held")
	}
	var u userCounts
	u.add("a", 1)
	u.add("a", 1)
	u.add("b", 1)
	u.add("b", -1)
	if u.get("a") != 2 || u.get("b") != 0 || u.distinct() != 1 {
		t.Fatalf("counts a=%d b=%d distinct=%d", u.get("a"), u.get("b"), u.distinct())
	}
}

func TestAllocsPerRelayCount(t *testing.T) {
	s := &Server{}
	c := &relayConn{s: s, session: newBudget(1e6)}
	now := time.Now()
	if n := testing.AllocsPerRun(1000, func() { c.count(200, now) }); n != 0 {
		t.Fatalf("count allocates %.1f times per packet", n)
	}
}

// TestDefaultSessionsFitRegistration: a budget however large implies a
// session count the signaling server accepts in a registration (a 100
// Gbit/s budget once asked for 2.6 million and was never promoted).
func TestDefaultSessionsFitRegistration(t *testing.T) {
	for _, mbps := range []float64{0.1, 50, 1e4, 1e5, 1e6} {
		n := defaultMaxSessions(mbps)
		r := proto.SupernodeRegister{QUIC: "203.0.113.5:443", Fingerprint: strings.Repeat("ab", 32), MaxSessions: n, MaxRelayMbps: mbps}
		if err := r.Validate(); err != nil || n < 8 {
			t.Errorf("%g Mbit/s: %d sessions: %v", mbps, n, err)
		}
	}
}
