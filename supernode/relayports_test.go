package supernode_test

import (
	"net"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/logging"
	"github.com/pion/turn/v5"
)

// TestRelayPorts: relayed traffic uses the port range the operator opened
// in the firewall, and a range with nothing free refuses the allocation
// rather than going outside it.
func TestRelayPorts(t *testing.T) {
	// A range free now: ports the kernel just handed out and took back.
	var lo int
	for {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lo = pc.LocalAddr().(*net.UDPAddr).Port
		pc.Close()
		if lo < 65000 {
			break
		}
	}
	rng := supernode.PortRange{Min: uint16(lo), Max: uint16(lo + 3)}
	sig := loopbackSignal(t, nil)
	sn := supernodetest.Start(t, sig.URL, supernode.Config{RelayPorts: rng})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	u := signIn(t, sig.URL, "carol")
	a := sn.Addrs()
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelDisabled
	allocate := func() (net.PacketConn, error) {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pc.Close() })
		c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: a.TURNUDP.String(), STUNServerAddr: a.TURNUDP.String(),
			Username: u.ice[0].Username, Password: u.ice[0].Credential, Conn: pc, LoggerFactory: lf})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		if err := c.Listen(); err != nil {
			t.Fatal(err)
		}
		return c.Allocate()
	}
	var relays []net.PacketConn
	for i := 0; i < 4; i++ {
		r, err := allocate()
		if err != nil {
			t.Fatalf("allocation %d in a range of 4: %v", i, err)
		}
		relays = append(relays, r)
		if p := r.LocalAddr().(*net.UDPAddr).Port; p < int(rng.Min) || p > int(rng.Max) {
			t.Fatalf("relayed address port %d outside %d-%d", p, rng.Min, rng.Max)
		}
	}
	if r, err := allocate(); err == nil {
		t.Fatalf("a fifth allocation in a range of 4 got %v", r.LocalAddr())
	}
	for _, r := range relays {
		r.Close()
	}
}
