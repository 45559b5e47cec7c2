package natlab

import (
	"net/netip"
	"testing"
)

// TestCut: a cut between two homes drops their packets both ways while
// each still reaches a third host; healing it lets them through again.
func TestCut(t *testing.T) {
	lab := New(t, Config{})
	srv := lab.AddPublicHost("srv")
	ha := lab.AddHome("ca", None)
	hb := lab.AddHome("cb", None)
	a := listenUDP(t, ha.Client, ":0")
	b := listenUDP(t, hb.Client, ":0")
	s := listenUDP(t, srv, srv.Addr().String()+":0")
	aAt := netip.AddrPortFrom(ha.WAN, a.addr().Port()) // None homes: the client owns the WAN address
	bAt := netip.AddrPortFrom(hb.WAN, b.addr().Port())
	if _, ok := sendUntil(t, a, bAt, b, "before", positiveWait); !ok {
		t.Fatal("a -> b before the cut did not arrive")
	}
	heal := lab.Cut(ha.WAN, hb.WAN)
	if _, ok := sendUntil(t, a, bAt, b, "cut a->b", negativeWait); ok {
		t.Fatal("a -> b arrived across the cut")
	}
	if _, ok := sendUntil(t, b, aAt, a, "cut b->a", negativeWait); ok {
		t.Fatal("b -> a arrived across the cut")
	}
	for _, p := range []*udpPeer{a, b} {
		if _, ok := sendUntil(t, p, s.addr(), s, "to srv", positiveWait); !ok {
			t.Fatal("a home lost the rest of the internet with the cut")
		}
	}
	heal()
	if _, ok := sendUntil(t, a, bAt, b, "healed", positiveWait); !ok {
		t.Fatal("a -> b after healing did not arrive")
	}
}
