package natlab

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/stun/v4"
)

// stunServer answers STUN Binding requests (RFC 5389 section 7.3) with the
// source address it saw, until t ends. It is deliberately tiny so this
// package does not depend on nat/.
func stunServer(t *testing.T, h *Host) netip.AddrPort {
	t.Helper()
	pc, err := h.ListenPacket("udp4", h.Addr().String()+":3478")
	if err != nil {
		t.Fatal(err)
	}
	serveUDP(t, pc, func(b []byte, ua *net.UDPAddr) {
		req := &stun.Message{Raw: append([]byte(nil), b...)}
		if req.Decode() != nil || req.Type != stun.BindingRequest {
			return
		}
		resp, err := stun.Build(stun.NewTransactionIDSetter(req.TransactionID), stun.BindingSuccess,
			&stun.XORMappedAddress{IP: ua.IP, Port: ua.Port}, stun.Fingerprint)
		if err == nil {
			_, _ = pc.WriteTo(resp.Raw, ua)
		}
	})
	return pc.LocalAddr().(*net.UDPAddr).AddrPort()
}

// newAgent makes a pion ICE agent whose sockets live in h's namespace.
func newAgent(t *testing.T, h *Host, stunAddr netip.AddrPort) *ice.Agent {
	t.Helper()
	uri, err := stun.ParseURI("stun:" + stunAddr.String())
	if err != nil {
		t.Fatal(err)
	}
	disc, fail, check := 500*time.Millisecond, 2*time.Second, 50*time.Millisecond
	a, err := ice.NewAgent(&ice.AgentConfig{
		Net:                 h.Net(),
		Urls:                []*stun.URI{uri},
		NetworkTypes:        []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:      []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive},
		MulticastDNSMode:    ice.MulticastDNSModeDisabled,
		DisconnectedTimeout: &disc,
		FailedTimeout:       &fail,
		CheckInterval:       &check,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close() })
	return a
}

// gather runs candidate gathering and returns the candidates.
func gather(t *testing.T, a *ice.Agent) []ice.Candidate {
	t.Helper()
	var mu sync.Mutex
	var cands []ice.Candidate
	done := make(chan struct{})
	if err := a.OnCandidate(func(c ice.Candidate) {
		if c == nil {
			close(done)
			return
		}
		mu.Lock()
		cands = append(cands, c)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	if err := a.GatherCandidates(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("gathering did not finish in 10s")
	}
	mu.Lock()
	defer mu.Unlock()
	return cands
}

// TestNetPionGather runs a pion ICE agent inside each home through
// Host.Net: its host candidates must be the namespace's own address only
// (not the test machine's interfaces) and its server-reflexive candidate
// the home's public address.
func TestNetPionGather(t *testing.T) {
	lab := New(t, Config{})
	stunAddr := stunServer(t, lab.AddPublicHost("stun"))
	for _, kind := range []NATKind{None, FullCone, Symmetric} {
		t.Run(kind.String(), func(t *testing.T) {
			home := lab.AddHome("g"+kind.String()[:4], kind)
			cands := gather(t, newAgent(t, home.Client, stunAddr))
			var host, srflx []string
			for _, c := range cands {
				switch c.Type() {
				case ice.CandidateTypeHost:
					host = append(host, c.Address())
				case ice.CandidateTypeServerReflexive:
					srflx = append(srflx, c.Address())
				}
			}
			if len(host) != 1 || host[0] != home.Client.Addr().String() {
				t.Errorf("host candidates %v, want only %v", host, home.Client.Addr())
			}
			if kind == None {
				// srflx equal to host is pruned by pion; nothing else allowed.
				for _, s := range srflx {
					if s != home.WAN.String() {
						t.Errorf("srflx %v, want %v", s, home.WAN)
					}
				}
				return
			}
			if len(srflx) != 1 || srflx[0] != home.WAN.String() {
				t.Errorf("srflx candidates %v, want %v", srflx, home.WAN)
			}
		})
	}
}

// TestNetPionConnect connects ICE agents in two homes through the kernel
// NATs: punchable pairs connect, symmetric against port-restricted does
// not (RFC 4787 section 4.1 / 5: APDM + APDF on both sides).
func TestNetPionConnect(t *testing.T) {
	lab := New(t, Config{})
	stunAddr := stunServer(t, lab.AddPublicHost("stun"))
	cases := []struct {
		a, b    NATKind
		connect bool
	}{
		{FullCone, PortRestricted, true},
		{PortRestricted, PortRestricted, true},
		{Symmetric, FullCone, true},   // via peer-reflexive candidates
		{Symmetric, Restricted, true}, // ADF admits the symmetric peer's new port
		{Symmetric, PortRestricted, false},
	}
	homes := make([][2]*Home, len(cases))
	for i, c := range cases {
		homes[i] = [2]*Home{lab.AddHome(fmt.Sprintf("a%d", i), c.a), lab.AddHome(fmt.Sprintf("b%d", i), c.b)}
	}
	for i, c := range cases {
		t.Run(c.a.String()+"-"+c.b.String(), func(t *testing.T) {
			t.Parallel()
			ha, hb := homes[i][0], homes[i][1]
			aa, ab := newAgent(t, ha.Client, stunAddr), newAgent(t, hb.Client, stunAddr)
			for _, p := range [][2]*ice.Agent{{aa, ab}, {ab, aa}} {
				from, to := p[0], p[1]
				if err := from.OnCandidate(func(cand ice.Candidate) {
					if cand != nil {
						_ = to.AddRemoteCandidate(cand)
					}
				}); err != nil {
					t.Fatal(err)
				}
			}
			ua, pa, _ := aa.GetLocalUserCredentials()
			ub, pb, _ := ab.GetLocalUserCredentials()
			if err := aa.GatherCandidates(); err != nil {
				t.Fatal(err)
			}
			if err := ab.GatherCandidates(); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			defer cancel()
			type res struct {
				c   *ice.Conn
				err error
			}
			accepted := make(chan res, 1)
			go func() {
				c, err := ab.Accept(ctx, ua, pa)
				accepted <- res{c, err}
			}()
			start := time.Now()
			ca, errA := aa.Dial(ctx, ub, pb)
			rb := <-accepted
			took := time.Since(start)
			connected := errA == nil && rb.err == nil
			if connected != c.connect {
				t.Fatalf("connected=%v after %v (dial: %v, accept: %v), want %v", connected, took, errA, rb.err, c.connect)
			}
			if !connected {
				t.Logf("no path, as expected (%v)", took)
				return
			}
			pair, err := aa.GetSelectedCandidatePair()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("connected in %v via %s", took, pair)
			// The remote address must be b's public address: a direct
			// path through both NATs, not anything on the test machine.
			if got := pair.Remote.Address(); got != hb.WAN.String() {
				t.Errorf("selected remote %s, want %v", got, hb.WAN)
			}
			if _, err := ca.Write([]byte("ping")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			_ = rb.c.SetReadDeadline(time.Now().Add(2 * time.Second))
			n, err := rb.c.Read(buf)
			if err != nil || string(buf[:n]) != "ping" {
				t.Fatalf("read %q, %v", buf[:n], err)
			}
		})
	}
}

func TestNetRejectsHostnames(t *testing.T) {
	lab := New(t, Config{})
	h := lab.AddPublicHost("s")
	n := h.Net()
	cases := []struct {
		name string
		call func() error
	}{
		{"ResolveUDPAddr", func() error { _, err := n.ResolveUDPAddr("udp4", "stun.example.com:3478"); return err }},
		{"ResolveTCPAddr", func() error { _, err := n.ResolveTCPAddr("tcp4", "localhost:80"); return err }},
		{"ResolveIPAddr", func() error { _, err := n.ResolveIPAddr("ip4", "example.com"); return err }},
		{"Dial", func() error { _, err := n.Dial("udp4", "example.com:53"); return err }},
		{"ListenPacket", func() error { _, err := h.ListenPacket("udp4", "localhost:0"); return err }},
		{"Listen", func() error { _, err := h.Listen("tcp4", "example.com:0"); return err }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := c.call(); !errors.Is(err, ErrNotLiteral) {
				t.Fatalf("err = %v, want ErrNotLiteral", err)
			}
		})
	}
	// Literals work, and interfaces are the namespace's own.
	if _, err := n.ResolveUDPAddr("udp4", "203.0.113.1:3478"); err != nil {
		t.Fatal(err)
	}
	ifs, err := n.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ifi := range ifs {
		names = append(names, ifi.Name)
	}
	if got := strings.Join(names, ","); got != "lo,eth0" {
		t.Fatalf("interfaces %s, want lo,eth0", got)
	}
	eth, err := n.InterfaceByName("eth0")
	if err != nil {
		t.Fatal(err)
	}
	addrs, _ := eth.Addrs()
	if len(addrs) != 2 || !strings.HasPrefix(addrs[0].String(), h.Addrs[0].String()+"/") {
		t.Fatalf("eth0 addrs %v, want %v", addrs, h.Addrs)
	}
	if _, err := n.InterfaceByIndex(eth.Index); err != nil {
		t.Fatal(err)
	}
}
