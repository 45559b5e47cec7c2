package natlab

import (
	"fmt"
	"net/netip"
)

// Cut drops every packet between addresses a and b on the internet, both
// ways, as a broken link between two networks would (the packets to and
// from everyone else pass). It is an nftables table in the internet
// namespace's bridge forward hook: packets vanish, no ICMP comes back.
// The returned function heals the cut (and the lab removes it at
// teardown with its namespaces).
func (l *Lab) Cut(a, b netip.Addr) (heal func()) {
	l.t.Helper()
	if !a.Is4() || !b.Is4() {
		l.t.Fatalf("natlab: cut %s <-> %s: IPv4 addresses only", a, b)
	}
	l.mu.Lock()
	l.cuts++
	table := fmt.Sprintf("cut%d", l.cuts)
	l.mu.Unlock()
	rules := fmt.Sprintf(`table bridge %s {
  chain drops {
    type filter hook forward priority 0; policy accept;
    ip saddr %s ip daddr %s drop
    ip saddr %s ip daddr %s drop
  }
}
`, table, a, b, b, a)
	if err := l.nft(l.inetHost, rules); err != nil {
		l.t.Fatalf("natlab: cut %s <-> %s: %v", a, b, err)
	}
	l.log.Info("natlab: cut", "a", a, "b", b, "table", table)
	return func() {
		if err := l.nft(l.inetHost, "delete table bridge "+table+"\n"); err != nil {
			l.t.Errorf("natlab: heal cut %s <-> %s: %v", a, b, err)
		}
	}
}
