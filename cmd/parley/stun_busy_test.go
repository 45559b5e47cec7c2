package main

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestSTUNPortInUse: a second `parley serve` on one machine finds UDP 3478
// taken by the first; the error says how to start it anyway instead of
// only "address already in use".
func TestSTUNPortInUse(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	taken := pc.LocalAddr().String()
	svc, err := startSTUN(context.Background(), &stunFlags{addr: taken, alt: ":0"}, "127.0.0.1:0", netip.Addr{}, newTestLogger(t), nil)
	if err == nil {
		svc.close()
		t.Fatalf("STUN started on %s, which is taken", taken)
	}
	for _, w := range []string{"already in use", "--stun", "--no-stun"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not say %q", err, w)
		}
	}
}
