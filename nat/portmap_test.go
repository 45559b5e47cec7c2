package nat

import (
	"context"
	"encoding/binary"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
)

// fakeGateway is a NAT-PMP (RFC 6886) and optionally PCP (RFC 6887)
// server on 127.0.0.1: a real protocol peer for MapPort, with a mapping
// table instead of a NAT.
type fakeGateway struct {
	gwOpts
	conn  net.PacketConn
	extIP netip.Addr

	mu       sync.Mutex // guards the fields below
	mappings map[uint16]uint16
	pmpReqs  int
	pcpReqs  int
	done     chan struct{}
}

// gwOpts choose how a fakeGateway behaves.
type gwOpts struct {
	pcp    bool  // answers PCP; otherwise UNSUPP_VERSION like a NAT-PMP-only router
	refuse uint8 // non-zero: result code for every mapping request
	silent bool  // answers nothing
}

func startFakeGateway(t *testing.T, o gwOpts) *fakeGateway {
	t.Helper()
	g := &fakeGateway{gwOpts: o}
	g.conn = listenUDP(t, "127.0.0.1:0")
	g.extIP = netip.MustParseAddr("203.0.113.77")
	g.mappings = map[uint16]uint16{}
	g.done = make(chan struct{})
	go g.serve()
	t.Cleanup(func() {
		_ = g.conn.Close()
		<-g.done
	})
	return g
}

func (g *fakeGateway) port() uint16 { return addrPortOf(g.conn.LocalAddr()).Port() }

func (g *fakeGateway) counts() (pmp, pcp, mapped int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.pmpReqs, g.pcpReqs, len(g.mappings)
}

func (g *fakeGateway) serve() {
	defer close(g.done)
	buf := make([]byte, 1500)
	for {
		n, from, err := g.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if resp := g.handle(buf[:n], addrPortOf(from)); resp != nil && !g.silent {
			_, _ = g.conn.WriteTo(resp, from)
		}
	}
}

// assign grants or deletes a mapping and returns the external port.
func (g *fakeGateway) assignLocked(internal, suggested uint16, lifetime uint32) uint16 {
	if lifetime == 0 {
		delete(g.mappings, internal)
		return 0
	}
	if ext, ok := g.mappings[internal]; ok {
		return ext
	}
	ext := suggested
	for _, used := range g.mappings {
		if used == ext || ext == 0 {
			ext = 40000 + uint16(len(g.mappings))
		}
	}
	g.mappings[internal] = ext
	return ext
}

func (g *fakeGateway) handle(b []byte, from netip.AddrPort) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(b) < 2 {
		return nil
	}
	unsupp := pmpResponse{op: pmpRespBit + b[1]&0x7f, result: resultUnsuppVersion}
	switch b[0] {
	case pmpVersion:
		g.pmpReqs++
		switch {
		case b[1] == pmpOpPublicAddr && len(b) == 2:
			return pmpResponse{op: pmpRespBit, result: uint16(g.refuse), externalIP: g.extIP}.marshal()
		case b[1] == pmpOpMapUDP && len(b) == 12:
			internal := binary.BigEndian.Uint16(b[4:6])
			suggested := binary.BigEndian.Uint16(b[6:8])
			lifetime := binary.BigEndian.Uint32(b[8:12])
			r := pmpResponse{op: pmpRespBit + pmpOpMapUDP, result: uint16(g.refuse), internalPort: internal}
			if g.refuse == 0 {
				r.externalPort = g.assignLocked(internal, suggested, lifetime)
				r.lifetime = lifetime
			}
			return r.marshal()
		}
		return pmpResponse{op: pmpRespBit + b[1], result: 5}.marshal() // unsupported opcode
	case pcpVersion:
		g.pcpReqs++
		if !g.pcp {
			return unsupp.marshal()
		}
		if len(b) != pcpHeaderSize+pcpMapDataSize || b[1] != pcpOpMap {
			return pcpResponse{opcode: b[1] & 0x7f, result: 3}.marshal() // MALFORMED_REQUEST
		}
		lifetime := binary.BigEndian.Uint32(b[4:8])
		client := netip.AddrFrom16([16]byte(b[8:24])).Unmap()
		m := b[pcpHeaderSize:]
		r := pcpResponse{opcode: pcpOpMap, lifetime: lifetime, hasMap: true, protocol: m[12],
			internalPort: binary.BigEndian.Uint16(m[16:18]), externalIP: g.extIP}
		copy(r.nonce[:], m[0:12])
		switch {
		case client != from.Addr():
			r.result = 12 // ADDRESS_MISMATCH (RFC 6887 section 8.1)
		case g.refuse != 0:
			r.result = g.refuse
		default:
			r.externalPort = g.assignLocked(r.internalPort, binary.BigEndian.Uint16(m[18:20]), lifetime)
		}
		return r.marshal()
	}
	return unsupp.marshal()
}

// fakeIGD is a UPnP IGD (WANIPConnection:1) over HTTP on 127.0.0.1,
// driven through goupnp's real description fetch and SOAP calls.
type fakeIGD struct {
	srv   *httptest.Server
	fault func(action string, args map[string]string) int // UPnP error code to return, 0 = ok

	mu       sync.Mutex                   // guards the fields below
	mappings map[string]map[string]string // external port -> AddPortMapping args
	calls    []string
}

const igdDescription = `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0">
<specVersion><major>1</major><minor>0</minor></specVersion>
<device>
 <deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
 <friendlyName>parley test IGD</friendlyName>
 <UDN>uuid:00000000-0000-0000-0000-000000000001</UDN>
 <deviceList><device>
  <deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType>
  <UDN>uuid:00000000-0000-0000-0000-000000000002</UDN>
  <deviceList><device>
   <deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
   <UDN>uuid:00000000-0000-0000-0000-000000000003</UDN>
   <serviceList><service>
    <serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
    <serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
    <SCPDURL>/scpd.xml</SCPDURL>
    <controlURL>/ctl</controlURL>
    <eventSubURL>/evt</eventSubURL>
   </service></serviceList>
  </device></deviceList>
 </device></deviceList>
</device>
</root>`

func startFakeIGD(t *testing.T, fault func(string, map[string]string) int) *fakeIGD {
	t.Helper()
	g := &fakeIGD{fault: fault, mappings: map[string]map[string]string{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/rootDesc.xml", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/xml")
		_, _ = io.WriteString(w, igdDescription)
	})
	mux.HandleFunc("/ctl", g.control)
	g.srv = httptest.NewServer(mux) // listens on 127.0.0.1
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeIGD) location(t *testing.T) *url.URL {
	u, err := url.Parse(g.srv.URL + "/rootDesc.xml")
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// soapArgs collects the leaf elements of a SOAP request body.
func soapArgs(r io.Reader) (map[string]string, error) {
	args := map[string]string{}
	d := xml.NewDecoder(r)
	var cur string
	for {
		tok, err := d.Token()
		if err == io.EOF {
			return args, nil
		}
		if err != nil {
			return nil, err
		}
		switch v := tok.(type) {
		case xml.StartElement:
			cur = v.Name.Local
		case xml.CharData:
			if cur != "" {
				args[cur] = strings.TrimSpace(string(v))
			}
		case xml.EndElement:
			cur = ""
		}
	}
}

func (g *fakeIGD) control(w http.ResponseWriter, r *http.Request) {
	const ns = "urn:schemas-upnp-org:service:WANIPConnection:1"
	action := strings.Trim(r.Header.Get("SOAPACTION"), `"`)
	action, ok := strings.CutPrefix(action, ns+"#")
	args, err := soapArgs(r.Body)
	if !ok || err != nil {
		http.Error(w, "bad SOAP", http.StatusBadRequest)
		return
	}
	g.mu.Lock()
	g.calls = append(g.calls, action)
	g.mu.Unlock()
	envelope := func(body string) string {
		return `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>` + body + `</s:Body></s:Envelope>`
	}
	if code := g.fault(action, args); code != 0 {
		w.WriteHeader(http.StatusInternalServerError)
		_, _ = io.WriteString(w, envelope(fmt.Sprintf(`<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail><UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>%d</errorCode><errorDescription>test</errorDescription></UPnPError></detail></s:Fault>`, code)))
		return
	}
	var out string
	g.mu.Lock()
	switch action {
	case "GetExternalIPAddress":
		out = `<NewExternalIPAddress>203.0.113.99</NewExternalIPAddress>`
	case "AddPortMapping":
		g.mappings[args["NewExternalPort"]] = args
	case "DeletePortMapping":
		delete(g.mappings, args["NewExternalPort"])
	}
	g.mu.Unlock()
	_, _ = io.WriteString(w, envelope(`<u:`+action+`Response xmlns:u="`+ns+`">`+out+`</u:`+action+`Response>`))
}

func (g *fakeIGD) mapping(ext uint16) map[string]string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.mappings[strconv.Itoa(int(ext))]
}

// loopbackGateway points NAT-PMP/PCP at the fake gateway and keeps UPnP
// off unless a test turns it on: nothing here reaches the real gateway
// or multicasts.
func loopbackGateway(gw *fakeGateway) MapPortConfig {
	return MapPortConfig{
		InternalPort: 4000,
		Gateway:      func() (netip.Addr, error) { return loopback1, nil },
		PMPPort:      gw.port(),
		DisableUPnP:  true,
		RTO:          20 * time.Millisecond,
		Timeout:      300 * time.Millisecond,
	}
}

func TestMapPortPMPAndPCP(t *testing.T) {
	tests := []struct {
		name         string
		gw           gwOpts
		wantProto    string
		wantPMPReqs  int // requests the gateway saw in NAT-PMP form
		wantRefused  bool
		wantNoAnswer bool
	}{
		{"NAT-PMP-only router", gwOpts{}, "nat-pmp", 2, false, false},
		{"PCP router", gwOpts{pcp: true}, "pcp", 0, false, false},
		{"PCP router refuses: no NAT-PMP fallback", gwOpts{pcp: true, refuse: 2}, "", 0, true, false},
		{"NAT-PMP router refuses", gwOpts{refuse: 2}, "", 1, true, false},
		{"silent gateway", gwOpts{silent: true}, "", 1, false, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			gw := startFakeGateway(t, tc.gw)
			cfg := loopbackGateway(gw)
			start := time.Now()
			m, err := MapPort(context.Background(), cfg)
			pmpReqs, _, _ := gw.counts()
			if tc.wantProto == "" {
				if !errors.Is(err, ErrNoPortMapping) {
					t.Fatalf("err %v, want ErrNoPortMapping", err)
				}
				if errors.Is(err, ErrMappingRefused) != tc.wantRefused {
					t.Errorf("err %v: refused=%v, want %v", err, errors.Is(err, ErrMappingRefused), tc.wantRefused)
				}
				if tc.wantNoAnswer && time.Since(start) > 4*cfg.Timeout {
					t.Errorf("silent gateway took %s, want about 2 x %s", time.Since(start), cfg.Timeout)
				}
				if (pmpReqs > 0) != (tc.wantPMPReqs > 0) {
					t.Errorf("gateway saw %d NAT-PMP requests, want %d", pmpReqs, tc.wantPMPReqs)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.Protocol != tc.wantProto || m.External != netip.MustParseAddrPort("203.0.113.77:4000") ||
				m.Internal != netip.AddrPortFrom(loopback1, 4000) || m.Lifetime != 2*time.Hour || m.Gateway != loopback1 {
				t.Errorf("got %+v", m)
			}
			if pmpReqs != tc.wantPMPReqs {
				t.Errorf("gateway saw %d NAT-PMP requests, want %d", pmpReqs, tc.wantPMPReqs)
			}
			var r proto.NATReport
			m.Fill(&r)
			if err := r.Validate(); err != nil || r.PortMapping != tc.wantProto || r.MappedAddr != "203.0.113.77:4000" {
				t.Errorf("report %+v (validate: %v)", r, err)
			}
			if _, _, n := gw.counts(); n != 1 {
				t.Fatalf("gateway holds %d mappings, want 1", n)
			}
			if err := m.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			if _, _, n := gw.counts(); n != 0 {
				t.Errorf("gateway holds %d mappings after Release, want 0", n)
			}
		})
	}
}

func TestMapPortUPnP(t *testing.T) {
	noFault := func(string, map[string]string) int { return 0 }
	tests := []struct {
		name      string
		fault     func(string, map[string]string) int
		wantProto string
		wantLease time.Duration
	}{
		{"IGD grants", noFault, "upnp", time.Hour},
		{"IGD takes permanent leases only", func(a string, args map[string]string) int {
			if a == "AddPortMapping" && args["NewLeaseDuration"] != "0" {
				return upnpOnlyPermanent
			}
			return 0
		}, "upnp", 0},
		{"IGD refuses: NAT-PMP next", func(a string, _ map[string]string) int {
			if a == "AddPortMapping" {
				return 501
			}
			return 0
		}, "nat-pmp", time.Hour},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			igd := startFakeIGD(t, tc.fault)
			gw := startFakeGateway(t, gwOpts{})
			cfg := loopbackGateway(gw)
			cfg.DisableUPnP = false
			cfg.UPnP = UPnPAt(igd.location(t))
			cfg.Lifetime = time.Hour
			cfg.ExternalPort = 4444
			m, err := MapPort(context.Background(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			if m.Protocol != tc.wantProto || m.Lifetime != tc.wantLease || m.External.Port() != 4444 {
				t.Fatalf("got %+v, want %s with lease %s on port 4444", m, tc.wantProto, tc.wantLease)
			}
			if tc.wantProto != "upnp" {
				return
			}
			if m.External.Addr().String() != "203.0.113.99" || m.Internal != netip.AddrPortFrom(loopback1, 4000) {
				t.Errorf("got %+v", m)
			}
			args := igd.mapping(4444)
			if args["NewInternalClient"] != "127.0.0.1" || args["NewInternalPort"] != "4000" || args["NewProtocol"] != "UDP" || args["NewPortMappingDescription"] != "parley" {
				t.Errorf("IGD got AddPortMapping %v", args)
			}
			if err := m.Release(context.Background()); err != nil {
				t.Fatal(err)
			}
			if igd.mapping(4444) != nil {
				t.Error("mapping still on the IGD after Release")
			}
		})
	}
}

func TestMapPortErrors(t *testing.T) {
	if _, err := MapPort(context.Background(), MapPortConfig{}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("no port: %v, want ErrBadConfig", err)
	}
	if _, err := MapPort(context.Background(), MapPortConfig{InternalPort: 1, Timeout: -1}); !errors.Is(err, ErrBadConfig) {
		t.Errorf("negative timeout: %v, want ErrBadConfig", err)
	}
	noGW := MapPortConfig{
		InternalPort: 4000,
		DisableUPnP:  true,
		Gateway:      func() (netip.Addr, error) { return netip.Addr{}, ErrNoGateway },
	}
	if _, err := MapPort(context.Background(), noGW); !errors.Is(err, ErrNoPortMapping) || !errors.Is(err, ErrNoGateway) {
		t.Errorf("no gateway: %v, want ErrNoPortMapping wrapping ErrNoGateway", err)
	}
	// A cancelled context ends a wait on a silent gateway at once.
	gw := startFakeGateway(t, gwOpts{silent: true})
	cfg := loopbackGateway(gw)
	cfg.Timeout = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := MapPort(ctx, cfg); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled: %v, want DeadlineExceeded", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Errorf("cancel took %s", time.Since(start))
	}
}

func TestParseProcNetRoute(t *testing.T) {
	// Little-endian hosts print the gateway 10.0.2.1 as 0102000A.
	const table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n" +
		"eth1\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0\n" +
		"eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n" +
		"eth0\t0002000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n" +
		"eth2\t00000000\t0103000A\t0001\t0\t0\t0\t00000000\t0\t0\t0\n" // no RTF_GATEWAY
	gw, err := parseProcNetRoute([]byte(table))
	if err != nil {
		t.Fatal(err)
	}
	want := "10.0.2.1"
	if binary.NativeEndian.Uint16([]byte{1, 0}) != 1 {
		want = "1.2.0.10" // big-endian host reading a little-endian table
	}
	if gw.String() != want {
		t.Errorf("gateway %s, want %s", gw, want)
	}
	for _, bad := range []string{"", "Iface\tDestination\n", "Iface\nx y z\n", "h\neth0\t0000000\tZZ\t3\t0\t0\t0\t0\n"} {
		if _, err := parseProcNetRoute([]byte(bad)); !errors.Is(err, ErrNoGateway) {
			t.Errorf("parseProcNetRoute(%q): %v, want ErrNoGateway", bad, err)
		}
	}
}
