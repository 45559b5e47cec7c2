package nat

import (
	"bytes"
	"flag"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/pion/stun/v4"
)

// Every decoder of bytes from the network has a fuzz target here. Seeds are
// valid encodings; the committed corpus lives in testdata/fuzz/<Target>/
// and is rewritten from the seeds with:
//
//	go test ./nat -run TestWriteFuzzCorpus -update-corpus

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz seed files from the seed functions")

func fixedTx(b byte) [stun.TransactionIDSize]byte {
	var tx [stun.TransactionIDSize]byte
	for i := range tx {
		tx[i] = b + byte(i)
	}
	return tx
}

func stunRequestSeeds() [][]byte {
	var out [][]byte
	for i, r := range []bindingRequest{
		{tx: fixedTx(1)},
		{tx: fixedTx(2), hasChange: true, change: changePortFlag},
		{tx: fixedTx(3), hasChange: true, change: changeIPFlag | changePortFlag},
		{tx: fixedTx(4), hasChange: true},
		{tx: fixedTx(5), indication: true},
		{tx: fixedTx(6), unknown: []stun.AttrType{stun.AttrResponsePort, 0x7FFF}},
	} {
		var m stun.Message
		encodeBindingRequest(&m, r)
		out = append(out, append([]byte(nil), m.Raw...))
		if i == 0 {
			out = append(out, append([]byte(nil), m.Raw[:headerSize]...)) // header only
		}
	}
	// A request without FINGERPRINT, as many clients send.
	m := stun.MustBuild(stun.NewTransactionIDSetter(fixedTx(7)), stun.BindingRequest)
	out = append(out, m.Raw)
	return out
}

func stunResponseSeeds() [][]byte {
	var out [][]byte
	for _, r := range []bindingResponse{
		{tx: fixedTx(1), success: true, mapped: netip.MustParseAddrPort("203.0.113.10:49152")},
		{tx: fixedTx(2), success: true, mapped: netip.MustParseAddrPort("203.0.113.10:49152"),
			origin: netip.MustParseAddrPort("198.51.100.1:3478"), other: netip.MustParseAddrPort("198.51.100.2:3479")},
		{tx: fixedTx(3), success: true, mapped: netip.MustParseAddrPort("[2001:db8::1]:5000"),
			origin: netip.MustParseAddrPort("[2001:db8::2]:3478")},
		{tx: fixedTx(4), code: codeUnknownAttr, reason: reasonUnknown, unknown: []stun.AttrType{stun.AttrChangeRequest}},
		{tx: fixedTx(5), code: codeBadRequest, reason: reasonBadRequest},
	} {
		var m stun.Message
		if err := encodeBindingResponse(&m, r); err != nil {
			panic(err)
		}
		out = append(out, append([]byte(nil), m.Raw...))
	}
	// An RFC 3489 server: MAPPED-ADDRESS only, no FINGERPRINT.
	m := stun.MustBuild(stun.NewTransactionIDSetter(fixedTx(6)), stun.BindingSuccess,
		&stun.MappedAddress{IP: netip.MustParseAddr("203.0.113.11").AsSlice(), Port: 1234})
	out = append(out, m.Raw)
	return out
}

func pmpResponseSeeds() [][]byte {
	return [][]byte{
		pmpResponse{op: pmpRespBit, epoch: 7, externalIP: netip.MustParseAddr("203.0.113.77")}.marshal(),
		pmpResponse{op: pmpRespBit + pmpOpMapUDP, epoch: 8, internalPort: 4000, externalPort: 4001, lifetime: 7200}.marshal(),
		pmpResponse{op: pmpRespBit + pmpOpMapTCP, internalPort: 80, externalPort: 8080, lifetime: 60}.marshal(),
		pmpResponse{op: pmpRespBit + pmpOpMapUDP, result: 2}.marshal(),
		pmpResponse{op: pmpRespBit + pmpOpMapUDP, result: resultUnsuppVersion}.marshal(),
	}
}

func pcpResponseSeeds() [][]byte {
	return [][]byte{
		pcpResponse{opcode: pcpOpMap, lifetime: 7200, epoch: 9, hasMap: true, nonce: [12]byte{1, 2, 3}, protocol: pcpProtoUDP,
			internalPort: 4000, externalPort: 4000, externalIP: netip.MustParseAddr("203.0.113.77")}.marshal(),
		pcpResponse{opcode: pcpOpMap, result: 12, hasMap: true, nonce: [12]byte{4}, protocol: pcpProtoUDP, internalPort: 1,
			externalIP: netip.MustParseAddr("2001:db8::7")}.marshal(),
		pcpResponse{opcode: pcpOpMap, result: 1}.marshal(),
		pcpResponse{opcode: 0, epoch: 3}.marshal(), // ANNOUNCE
		pcpResponse{opcode: pcpOpMap, hasMap: true, protocol: pcpProtoUDP, internalPort: 5, externalPort: 6,
			externalIP: netip.MustParseAddr("203.0.113.1"), options: []pcpOption{{code: 1, data: []byte{1, 2, 3, 4, 5}}, {code: 0x80}}}.marshal(),
	}
}

// addSeeds adds seeds to f; the files under testdata/fuzz are added by the
// fuzzing engine itself.
func addSeeds(f *testing.F, seeds [][]byte) {
	for _, s := range seeds {
		f.Add(s)
	}
}

// fuzzServer is a two-IP server with addresses but no sockets, enough for
// handle.
func fuzzServer() (*Server, *sock) {
	s := &Server{log: slog.New(slog.DiscardHandler), twoIP: true}
	s.badLogs.every = 1 << 62
	addrs := [2][2]string{{"198.51.100.1:3478", "198.51.100.1:3479"}, {"198.51.100.2:3478", "198.51.100.2:3479"}}
	for i := range addrs {
		for j := range addrs[i] {
			s.socks[i][j] = &sock{addr: netip.MustParseAddrPort(addrs[i][j]), ip: i, port: j}
		}
	}
	return s, s.socks[0][0]
}

// FuzzServerHandle feeds the server's request path arbitrary datagrams: it
// must never panic, and whatever it answers must be a valid Binding
// response for the same transaction that tells the sender its address.
func FuzzServerHandle(f *testing.F) {
	addSeeds(f, stunRequestSeeds())
	addSeeds(f, stunResponseSeeds())
	s, in := fuzzServer()
	src := netip.MustParseAddrPort("203.0.113.9:40000")
	var h handler
	f.Fuzz(func(t *testing.T, b []byte) {
		out, resp := s.handle(&h, in, b, src)
		if resp == nil {
			return
		}
		var m stun.Message
		r, err := parseBindingResponse(&m, resp)
		if err != nil {
			t.Fatalf("server sent an unparsable response: %v", err)
		}
		if !bytes.Equal(r.tx[:], b[8:20]) {
			t.Fatal("response does not echo the transaction ID")
		}
		if r.success && (r.mapped != src || r.origin != out.addr) {
			t.Fatalf("mapped %s origin %s, want %s %s", r.mapped, r.origin, src, out.addr)
		}
		if !r.success && r.code != codeUnknownAttr {
			t.Fatalf("unexpected error code %d", r.code)
		}
	})
}

// FuzzParseBindingRequest checks decode -> encode -> decode on requests.
func FuzzParseBindingRequest(f *testing.F) {
	addSeeds(f, stunRequestSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		var m stun.Message
		r, err := parseBindingRequest(&m, b)
		if err != nil {
			return
		}
		encodeBindingRequest(&m, r)
		var m2 stun.Message
		r2, err := parseBindingRequest(&m2, m.Raw)
		if err != nil {
			t.Fatalf("re-encoded request does not parse: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", r, r2)
		}
	})
}

// FuzzParseBindingResponse checks the client's response parser: no panics,
// and decode -> encode -> decode keeps every field.
func FuzzParseBindingResponse(f *testing.F) {
	addSeeds(f, stunResponseSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		var m stun.Message
		r, err := parseBindingResponse(&m, b)
		if err != nil {
			return
		}
		if r.success && (!r.mapped.IsValid() || r.mapped.Port() == 0) {
			t.Fatalf("accepted unusable mapped address %s", r.mapped)
		}
		if len(r.reason) > 763 {
			return // longer than ERROR-CODE may carry: we do not re-encode it
		}
		var m2 stun.Message
		if err := encodeBindingResponse(&m2, r); err != nil {
			t.Fatalf("parsed response does not encode: %v", err)
		}
		r2, err := parseBindingResponse(&stun.Message{}, m2.Raw)
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the response:\n%+v\n%+v", r, r2)
		}
	})
}

// FuzzParsePMPResponse checks the NAT-PMP response parser.
func FuzzParsePMPResponse(f *testing.F) {
	addSeeds(f, pmpResponseSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePMPResponse(b)
		if err != nil {
			return
		}
		r2, err := parsePMPResponse(r.marshal())
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		if r != r2 {
			t.Fatalf("round trip changed the response:\n%+v\n%+v", r, r2)
		}
	})
}

// FuzzParsePCPResponse checks the PCP response parser.
func FuzzParsePCPResponse(f *testing.F) {
	addSeeds(f, pcpResponseSeeds())
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parsePCPResponse(b)
		if err != nil {
			return
		}
		enc := r.marshal()
		r2, err := parsePCPResponse(enc)
		if err != nil {
			t.Fatalf("re-encoded response does not parse: %v", err)
		}
		if !reflect.DeepEqual(r, r2) {
			t.Fatalf("round trip changed the response:\n%+v\n%+v", r, r2)
		}
	})
}

// TestWriteFuzzCorpus keeps testdata/fuzz in step with the seed functions
// (rewritten with -update-corpus) and checks the committed files exist.
func TestWriteFuzzCorpus(t *testing.T) {
	sets := map[string][][]byte{
		"FuzzServerHandle":         append(stunRequestSeeds(), stunResponseSeeds()...),
		"FuzzParseBindingRequest":  stunRequestSeeds(),
		"FuzzParseBindingResponse": stunResponseSeeds(),
		"FuzzParsePMPResponse":     pmpResponseSeeds(),
		"FuzzParsePCPResponse":     pcpResponseSeeds(),
	}
	for name, seeds := range sets {
		dir := filepath.Join("testdata", "fuzz", name)
		for i, s := range seeds {
			path := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", s)
			if *updateCorpus {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
					t.Fatal(err)
				}
				continue
			}
			got, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("seed corpus missing (run with -update-corpus): %v", err)
			}
			if string(got) != want {
				t.Errorf("%s is stale (run with -update-corpus)", path)
			}
		}
	}
}
