package supernode

import (
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// peerPolicy decides where a relay may send. By default it refuses every
// address that is not on the public Internet — loopback, RFC 1918 and ULA
// private ranges, link-local, multicast, "this network", shared address
// space (RFC 6598) and reserved space — and this supernode's own addresses
// except its relay ports, so nobody can use a supernode to reach services
// behind it (the CVE-2020-26262 class: coturn relaying to 127.0.0.1 via
// 0.0.0.0). Prefixes in allow override all of that.
type peerPolicy struct {
	allow []netip.Prefix
	own   map[netip.Addr]bool // set before serving, read-only after
}

var deniedRanges = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),     // "this network" (RFC 1122 3.2.1.3); 0.0.0.0 reaches the host
	netip.MustParsePrefix("100.64.0.0/10"), // shared address space (RFC 6598)
	netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments (RFC 6890)
	netip.MustParsePrefix("240.0.0.0/4"),   // reserved, and 255.255.255.255
	netip.MustParsePrefix("fec0::/10"),     // deprecated site-local
	netip.MustParsePrefix("64:ff9b:1::/48"),
}

// verdict classifies ip: allowed outright, allowed only to relay ports
// (this host), or denied with a reason.
func (p *peerPolicy) verdict(ip netip.Addr) (ok, ownOnly bool, reason string) {
	ip = ip.Unmap()
	for _, pre := range p.allow {
		if pre.Contains(ip) {
			return true, false, ""
		}
	}
	switch {
	case !ip.IsValid():
		return false, false, "not an IP address"
	case ip.IsUnspecified():
		return false, false, "unspecified address"
	case ip.IsLoopback():
		return false, false, "loopback address"
	case ip.IsPrivate():
		return false, false, "private address"
	case ip.IsLinkLocalUnicast(), ip.IsLinkLocalMulticast():
		return false, false, "link-local address"
	case ip.IsMulticast(), ip.IsInterfaceLocalMulticast():
		return false, false, "multicast address"
	}
	for _, pre := range deniedRanges {
		if pre.Contains(ip) {
			return false, false, "reserved address (" + pre.String() + ")"
		}
	}
	if p.own[ip] {
		return true, true, "this supernode's own address"
	}
	return true, false, ""
}

// budget is a byte-rate limit (a token bucket in bytes, counted on the
// wire). It allows a second's worth of burst: SCTP (chat, files) sends in
// congestion-window bursts, and a session within its rate on average must
// not lose packets to them.
type budget struct{ lim *rate.Limiter }

func newBudget(kbps float64) budget {
	bps := kbps * 1000 / 8
	burst := max(int(bps), 16<<10)
	return budget{rate.NewLimiter(rate.Limit(bps), burst)}
}

func (b budget) allow(now time.Time, n int) bool { return b.lim.AllowN(now, n) }

// userCounts tracks allocations per user (coturn's user-quota).
type userCounts struct {
	mu sync.Mutex // guards n
	n  map[string]int
}

func (u *userCounts) get(user string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.n[user]
}

func (u *userCounts) add(user string, d int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.n == nil {
		u.n = map[string]int{}
	}
	if u.n[user] += d; u.n[user] <= 0 {
		delete(u.n, user)
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case nil:
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// distinct is the number of users with allocations.
func (u *userCounts) distinct() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.n)
}
