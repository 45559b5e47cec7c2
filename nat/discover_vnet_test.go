package nat

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/logging"
	"github.com/pion/transport/v5/vnet"

	"github.com/parley-voice/parley/proto"
)

// The virtual Internet of these tests uses documentation addresses only
// (RFC 5737); no packet leaves the process.
const (
	vStunIP1  = "198.51.100.1"
	vStunIP2  = "198.51.100.2"
	vNATIP    = "203.0.113.10"
	vPublicIP = "203.0.113.50" // a host with no NAT
	vLANCIDR  = "192.168.1.0/24"
	vLANHost  = "192.168.1.2"
)

// vlab is one topology: a STUN server on the virtual WAN and a client
// either directly on it or behind a vnet NAT router.
type vlab struct {
	cfg    vlabConfig
	wan    *vnet.Router
	client *vnet.Net
	srv    *Server
	local  string // client's IP
}

type vlabConfig struct {
	nat          *vnet.NATType // nil = client on the WAN, no NAT
	serverIPs    int           // 0 = no STUN server (down), 1 = change-port only, 2 = full
	bindingOnly  bool
	noHairpin    bool // WAN drops packets from the NAT's IP to itself
	blockUDPToSr bool // WAN drops everything to the STUN server
	wildcard     bool // the client socket is bound to 0.0.0.0
}

// vnetBuildMu serialises building vnet topologies: vnet's MAC address
// generator keeps unguarded global state (a data race under -race when
// parallel tests build routers at once). Running them is safe.
var vnetBuildMu sync.Mutex

func quietLogs() logging.LoggerFactory {
	return &logging.DefaultLoggerFactory{Writer: io.Discard, DefaultLogLevel: logging.LogLevelDisabled}
}

func newVLab(t *testing.T, cfg vlabConfig) *vlab {
	t.Helper()
	vnetBuildMu.Lock()
	defer vnetBuildMu.Unlock()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	wan, err := vnet.NewRouter(&vnet.RouterConfig{CIDR: "0.0.0.0/0", LoggerFactory: quietLogs()})
	must(err)
	lab := &vlab{cfg: cfg, wan: wan}

	srvNet, err := vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vStunIP1, vStunIP2}})
	must(err)
	must(wan.AddNet(srvNet))

	if cfg.nat == nil {
		lab.local = vPublicIP
		lab.client, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vPublicIP}})
		must(err)
		must(wan.AddNet(lab.client))
	} else {
		lan, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR: vLANCIDR, StaticIPs: []string{vNATIP}, NATType: cfg.nat, LoggerFactory: quietLogs(),
		})
		must(err)
		must(wan.AddRouter(lan))
		lab.local = vLANHost
		lab.client, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vLANHost}})
		must(err)
		must(lan.AddNet(lab.client))
	}
	natIP := net.ParseIP(vNATIP)
	stunIPs := []net.IP{net.ParseIP(vStunIP1), net.ParseIP(vStunIP2)}
	wan.AddChunkFilter(func(c vnet.Chunk) bool {
		dst := c.DestinationAddr().(*net.UDPAddr).IP
		src := c.SourceAddr().(*net.UDPAddr).IP
		if cfg.noHairpin && dst.Equal(natIP) && src.Equal(natIP) {
			return false
		}
		if cfg.blockUDPToSr && (dst.Equal(stunIPs[0]) || dst.Equal(stunIPs[1])) {
			return false
		}
		return true
	})
	must(wan.Start())
	t.Cleanup(func() { _ = wan.Stop() })

	if cfg.serverIPs > 0 {
		sc := ServerConfig{
			Primary:     netip.MustParseAddrPort(vStunIP1 + ":3478"),
			Alternate:   netip.AddrPortFrom(netip.Addr{}, 3479),
			BindingOnly: cfg.bindingOnly,
			Listener:    srvNet,
		}
		if cfg.serverIPs == 2 {
			sc.Alternate = netip.MustParseAddrPort(vStunIP2 + ":3479")
		}
		lab.srv = startServer(t, sc)
	}
	return lab
}

// discover runs Probe from a fresh client socket.
func (l *vlab) discover(t *testing.T) *Result {
	t.Helper()
	cfg := fastClient(DiscoverConfig{
		Server: vStunIP1 + ":3478",
		// vnet routes through goroutines; leave room under -race.
		RTO:     30 * time.Millisecond,
		Timeout: 300 * time.Millisecond,
	})
	if l.cfg.wildcard {
		// Discover opens the socket itself and must ask the vnet, not
		// this host, whether the mapped IP is local.
		cfg.Listener, cfg.ListenAddr = l.client, "0.0.0.0:0"
	} else {
		conn, err := l.client.ListenPacket("udp4", l.local+":0")
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		cfg.Conn = conn
	}
	res, err := Probe(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

var vnetBehaviors = []struct {
	vnet  vnet.EndpointDependencyType
	proto proto.Behavior
}{
	{vnet.EndpointIndependent, proto.BehaviorEndpointIndependent},
	{vnet.EndpointAddrDependent, proto.BehaviorAddressDependent},
	{vnet.EndpointAddrPortDependent, proto.BehaviorAddressAndPortDependent},
}

// TestDiscoverVNet is one test body over many topologies: every RFC 4787
// mapping x filtering combination of vnet's NAT, behind a server with two
// IPs.
func TestDiscoverVNet(t *testing.T) {
	for _, m := range vnetBehaviors {
		for _, f := range vnetBehaviors {
			name := fmt.Sprintf("mapping=%s/filtering=%s", m.proto, f.proto)
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				lab := newVLab(t, vlabConfig{
					nat:       &vnet.NATType{MappingBehavior: m.vnet, FilteringBehavior: f.vnet},
					serverIPs: 2,
				})
				res := lab.discover(t)
				r := res.Report
				if r.Mapping != m.proto || r.Filtering != f.proto {
					t.Errorf("mapping %q filtering %q, want %q %q (notes %q)", r.Mapping, r.Filtering, m.proto, f.proto, res.Notes)
				}
				if want := proto.ClassifyNAT(m.proto, f.proto); r.Type != want {
					t.Errorf("type %q, want %q", r.Type, want)
				}
				if ap, err := netip.ParseAddrPort(r.PublicAddr); err != nil || ap.Addr().String() != vNATIP {
					t.Errorf("public address %q, want the NAT's %s", r.PublicAddr, vNATIP)
				}
				if r.LocalAddr == r.PublicAddr {
					t.Errorf("local address %s equals public address behind a NAT", r.LocalAddr)
				}
				// vnet has no hairpin option. A packet to our own public
				// address leaves the NAT and comes back through the WAN
				// router: it passes when the mapping is reused (EIM) or
				// the filter lets anyone in (EIF).
				wantHairpin := "no"
				if m.proto == proto.BehaviorEndpointIndependent || f.proto == proto.BehaviorEndpointIndependent {
					wantHairpin = "yes"
				}
				if r.Hairpin != wantHairpin {
					t.Errorf("hairpin %q, want %q", r.Hairpin, wantHairpin)
				}
				if len(res.Notes) != 0 {
					t.Errorf("unexpected notes %q", res.Notes)
				}
			})
		}
	}
}

// TestDiscoverVNetSpecial covers the topologies around the matrix: no NAT,
// 1:1 NAT, blocked UDP, a dead server, one-IP and plain servers, and a NAT
// that does not hairpin.
func TestDiscoverVNetSpecial(t *testing.T) {
	eim := vnet.EndpointIndependent
	apd := vnet.EndpointAddrPortDependent
	adf := vnet.EndpointAddrDependent
	tests := []struct {
		name      string
		cfg       vlabConfig
		mapping   proto.Behavior
		filtering proto.Behavior
		typ       proto.NATType
		hairpin   string
		blocked   bool
		notes     bool
	}{
		{"no NAT", vlabConfig{serverIPs: 2},
			proto.BehaviorNone, proto.BehaviorNone, proto.NATNone, "yes", false, false},
		{"no NAT, wildcard socket", vlabConfig{serverIPs: 2, wildcard: true},
			proto.BehaviorNone, proto.BehaviorNone, proto.NATNone, "yes", false, false},
		{"full cone, wildcard socket", vlabConfig{serverIPs: 2, wildcard: true, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: eim}},
			proto.BehaviorEndpointIndependent, proto.BehaviorEndpointIndependent, proto.NATFullCone, "yes", false, false},
		{"1:1 NAT", vlabConfig{serverIPs: 2, nat: &vnet.NATType{Mode: vnet.NATModeNAT1To1}},
			"", "", "", "", false, false}, // checked below: vnet needs a local IP pairing
		{"UDP blocked", vlabConfig{serverIPs: 2, blockUDPToSr: true, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: apd}},
			"", "", proto.NATUDPBlocked, "", true, true},
		{"server down", vlabConfig{serverIPs: 0, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: apd}},
			"", "", proto.NATUDPBlocked, "", true, true},
		{"no hairpin", vlabConfig{serverIPs: 2, noHairpin: true, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: apd}},
			proto.BehaviorEndpointIndependent, proto.BehaviorAddressAndPortDependent, proto.NATPortRestricted, "no", false, false},
		{"one-IP server, EIM/EIF", vlabConfig{serverIPs: 1, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: eim}},
			proto.BehaviorUnknown, proto.BehaviorUnknown, proto.NATUnknown, "yes", false, true},
		{"one-IP server, EIM/ADF", vlabConfig{serverIPs: 1, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: adf}},
			proto.BehaviorUnknown, proto.BehaviorUnknown, proto.NATUnknown, "yes", false, true},
		{"one-IP server, APDF known", vlabConfig{serverIPs: 1, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: apd}},
			proto.BehaviorUnknown, proto.BehaviorAddressAndPortDependent, proto.NATUnknown, "yes", false, true},
		{"one-IP server, APDM known: symmetric", vlabConfig{serverIPs: 1, nat: &vnet.NATType{MappingBehavior: apd, FilteringBehavior: apd}},
			proto.BehaviorAddressAndPortDependent, proto.BehaviorAddressAndPortDependent, proto.NATSymmetric, "no", false, true},
		{"binding-only server", vlabConfig{serverIPs: 1, bindingOnly: true, nat: &vnet.NATType{MappingBehavior: eim, FilteringBehavior: apd}},
			proto.BehaviorUnknown, proto.BehaviorUnknown, proto.NATUnknown, "yes", false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if tc.cfg.nat != nil && tc.cfg.nat.Mode == vnet.NATModeNAT1To1 {
				testDiscoverVNet1To1(t)
				return
			}
			lab := newVLab(t, tc.cfg)
			res := lab.discover(t)
			r := res.Report
			if r.Mapping != tc.mapping || r.Filtering != tc.filtering || r.Type != tc.typ {
				t.Errorf("mapping %q filtering %q type %q, want %q %q %q (notes %q)",
					r.Mapping, r.Filtering, r.Type, tc.mapping, tc.filtering, tc.typ, res.Notes)
			}
			if r.Hairpin != tc.hairpin || r.UDPBlocked != tc.blocked {
				t.Errorf("hairpin %q blocked %v, want %q %v", r.Hairpin, r.UDPBlocked, tc.hairpin, tc.blocked)
			}
			if (len(res.Notes) > 0) != tc.notes {
				t.Errorf("notes %q, want notes: %v", res.Notes, tc.notes)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("report does not validate: %v", err)
			}
		})
	}
}

// testDiscoverVNet1To1 puts the client behind a 1:1 NAT (static mapping,
// port kept): endpoint-independent both ways, but still a NAT.
func testDiscoverVNet1To1(t *testing.T) {
	var srvNet, client *vnet.Net
	var wan *vnet.Router
	func() {
		vnetBuildMu.Lock()
		defer vnetBuildMu.Unlock()
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		var err error
		wan, err = vnet.NewRouter(&vnet.RouterConfig{CIDR: "0.0.0.0/0", LoggerFactory: quietLogs()})
		must(err)
		srvNet, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vStunIP1, vStunIP2}})
		must(err)
		must(wan.AddNet(srvNet))
		// "public/local" pairs the NAT's public IP with the host behind it.
		lan, err := vnet.NewRouter(&vnet.RouterConfig{
			CIDR: vLANCIDR, StaticIPs: []string{vNATIP + "/" + vLANHost},
			NATType: &vnet.NATType{Mode: vnet.NATModeNAT1To1}, LoggerFactory: quietLogs(),
		})
		must(err)
		must(wan.AddRouter(lan))
		client, err = vnet.NewNet(&vnet.NetConfig{StaticIPs: []string{vLANHost}})
		must(err)
		must(lan.AddNet(client))
		must(wan.Start())
		t.Cleanup(func() { _ = wan.Stop() })
	}()
	startServer(t, ServerConfig{
		Primary:   netip.MustParseAddrPort(vStunIP1 + ":3478"),
		Alternate: netip.MustParseAddrPort(vStunIP2 + ":3479"),
		Listener:  srvNet,
	})
	// The port is kept, so with a wildcard socket only the bind test tells
	// the NAT's IP is not ours.
	for _, wildcard := range []bool{false, true} {
		lab := &vlab{cfg: vlabConfig{wildcard: wildcard}, wan: wan, client: client, local: vLANHost}
		r := lab.discover(t).Report
		local, _ := netip.ParseAddrPort(r.LocalAddr)
		public, _ := netip.ParseAddrPort(r.PublicAddr)
		if r.Mapping != proto.BehaviorEndpointIndependent || r.Filtering != proto.BehaviorEndpointIndependent || r.Type != proto.NATFullCone {
			t.Errorf("1:1 NAT (wildcard %v): got %+v, want full cone", wildcard, r)
		}
		if public.Addr().String() != vNATIP || public.Port() != local.Port() {
			t.Errorf("1:1 NAT (wildcard %v): public %s local %s, want %s with the same port", wildcard, public, local, vNATIP)
		}
	}
}
