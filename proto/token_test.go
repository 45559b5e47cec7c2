package proto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha1" //nolint:gosec // reference computation for the TURN REST test
	"encoding/base64"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func TestRelayTokenVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key := testKey(t, 1)
	other := testKey(t, 2)
	good := &RelayToken{User: "alice", Supernode: "sn-one", Issued: now.Unix(), Expiry: now.Add(time.Minute).Unix(), Nonce: "abc"}
	sign := func(k ed25519.PrivateKey, tok *RelayToken) string {
		t.Helper()
		s, err := SignRelayToken(k, tok)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	valid := sign(key, good)
	expired := sign(key, &RelayToken{User: "alice", Supernode: "sn-one", Issued: now.Add(-time.Hour).Unix(), Expiry: now.Add(-time.Minute).Unix()})
	// Flip one bit of the payload, keeping it canonical: change the user.
	p, _ := ParseRelayToken(valid)
	tampered := assembleToken(bytes.Replace(p.Payload, []byte(`"alice"`), []byte(`"alicf"`), 1), p.Signature)
	cases := []struct {
		name  string
		token string
		key   ed25519.PublicKey
		sn    string
		code  Code
		msg   string
	}{
		{"valid", valid, key.Public().(ed25519.PublicKey), "sn-one", "", ""},
		{"empty", "", key.Public().(ed25519.PublicKey), "sn-one", CodeTokenInvalid, "no relay token"},
		{"garbage", "hello", key.Public().(ed25519.PublicKey), "sn-one", CodeTokenInvalid, "does not start"},
		{"forged by another key", sign(other, good), key.Public().(ed25519.PublicKey), "sn-one", CodeTokenInvalid, "does not verify"},
		{"tampered payload", tampered, key.Public().(ed25519.PublicKey), "sn-one", CodeTokenInvalid, "does not verify"},
		{"other supernode", valid, key.Public().(ed25519.PublicKey), "sn-two", CodeTokenInvalid, `for supernode "sn-one"`},
		{"expired", expired, key.Public().(ed25519.PublicKey), "sn-one", CodeTokenExpired, "expired 1m0s ago"},
		{"truncated signature", valid[:len(valid)-4], key.Public().(ed25519.PublicKey), "sn-one", CodeTokenInvalid, "signature must be"},
		{"no key", valid, nil, "sn-one", CodeTokenInvalid, "does not verify"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tok, err := VerifyRelayToken(tc.token, tc.key, tc.sn, now)
			if tc.code == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if !reflect.DeepEqual(tok, good) {
					t.Fatalf("token %+v, want %+v", tok, good)
				}
				return
			}
			if CodeOf(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("err %v, want code %s containing %q", err, tc.code, tc.msg)
			}
		})
	}
}

func TestRelayTokenNonCanonical(t *testing.T) {
	key := testKey(t, 3)
	tok := &RelayToken{User: "bob", Supernode: "sn", Issued: 10, Expiry: 20}
	s, err := SignRelayToken(key, tok)
	if err != nil {
		t.Fatal(err)
	}
	p, err := ParseRelayToken(s)
	if err != nil {
		t.Fatal(err)
	}
	// Same fields, extra space: signed properly but not canonical.
	loose := append([]byte(" "), p.Payload...)
	bad := assembleToken(loose, ed25519.Sign(key, tokenSigned(loose)))
	if _, err := ParseRelayToken(bad); CodeOf(err) != CodeTokenInvalid || !strings.Contains(err.Error(), "canonical") {
		t.Fatalf("non-canonical payload: %v", err)
	}
	unknown := []byte(`{"u":"bob","sn":"sn","exp":20,"iat":10,"x":1}`)
	if _, err := ParseRelayToken(assembleToken(unknown, ed25519.Sign(key, tokenSigned(unknown)))); CodeOf(err) != CodeTokenInvalid {
		t.Fatalf("unknown field: %v", err)
	}
	if _, err := SignRelayToken(key, &RelayToken{User: "Bad Name", Supernode: "sn", Issued: 1, Expiry: 2}); CodeOf(err) != CodeTokenInvalid {
		t.Fatalf("sign invalid token: %v", err)
	}
}

func TestTURNCredentials(t *testing.T) {
	secret := []byte("0123456789abcdef")
	exp := time.Unix(1_900_000_000, 0)
	user, pass := TURNCredentials(secret, "alice", exp)
	if user != "1900000000:alice" {
		t.Fatalf("username %q", user)
	}
	mac := hmac.New(sha1.New, secret)
	mac.Write([]byte(user))
	if want := base64.StdEncoding.EncodeToString(mac.Sum(nil)); pass != want {
		t.Fatalf("password %q, want %q", pass, want)
	}
	gotExp, gotUser, err := ParseTURNUsername(user)
	if err != nil || !gotExp.Equal(exp) || gotUser != "alice" {
		t.Fatalf("parse: %v %v %v", gotExp, gotUser, err)
	}
	for _, bad := range []string{"alice", "x:alice", "-5:alice", "100:Alice", "100:"} {
		if _, _, err := ParseTURNUsername(bad); CodeOf(err) != CodeAuthFailed {
			t.Errorf("ParseTURNUsername(%q) = %v, want auth_failed", bad, err)
		}
	}
}

func TestRelayFrames(t *testing.T) {
	var buf bytes.Buffer
	hello := &RelayHello{Op: RelayOpProbe, Nonce: base64.StdEncoding.EncodeToString(make([]byte, 16)), Bytes: 1000}
	if err := WriteRelayFrame(&buf, hello); err != nil {
		t.Fatal(err)
	}
	var got RelayHello
	if err := ReadRelayFrame(&buf, &got); err != nil || !reflect.DeepEqual(&got, hello) {
		t.Fatalf("read %+v %v", got, err)
	}
	cases := []struct {
		name string
		raw  []byte
		code Code
	}{
		{"zero length", []byte{0, 0}, CodeBadFrame},
		{"too long", []byte{0xff, 0xff}, CodeBadFrame},
		{"not json", append([]byte{0, 3}, "abc"...), CodeBadFrame},
		{"unknown op", append([]byte{0, 13}, `{"op":"spam"}`...), CodeBadRequest},
		{"probe without nonce", append([]byte{0, 14}, `{"op":"probe"}`...), CodeBadRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var h RelayHello
			if err := ReadRelayFrame(bytes.NewReader(tc.raw), &h); CodeOf(err) != tc.code {
				t.Fatalf("err %v, want %s", err, tc.code)
			}
		})
	}
	var h RelayHello
	if err := ReadRelayFrame(bytes.NewReader([]byte{0, 10, '{'}), &h); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("short frame: %v", err)
	}
	if err := WriteRelayFrame(&buf, &RelayReply{}); CodeOf(err) != CodeBadRequest {
		t.Fatalf("reply neither ok nor error: %v", err)
	}
}

func TestSupernodeBodies(t *testing.T) {
	fp := strings.Repeat("ab", 32)
	valid := []struct {
		typ Type
		b   Body
	}{
		{TypeSupernodeRegister, &SupernodeRegister{QUIC: "203.0.113.7:443", TURNUDP: "203.0.113.7:3478", TURNTLS: "203.0.113.7:443", Fingerprint: fp, MaxSessions: 10, MaxRelayMbps: 20}},
		{TypeSupernodeStatus, &SupernodeStatus{ID: "sn-a", State: SupernodeRefused, Reason: "no answer to an unsolicited probe"}},
		{TypeSupernodeStatus, &SupernodeStatus{ID: "sn-a", State: SupernodePromoted, Reason: "ok", TURNSecret: base64.StdEncoding.EncodeToString(make([]byte, 32)), TokenKey: base64.StdEncoding.EncodeToString(make([]byte, 32))}},
		{TypeSupernodeHeartbeat, &SupernodeHeartbeat{Sessions: 3, Users: 2, RelayMbps: 0.5}},
		{TypeSupernodes, &SupernodeList{Supernodes: []SupernodeInfo{{ID: "sn-a", QUIC: "203.0.113.7:443", Fingerprint: fp, Token: "prt1.x.y", Expires: 5}}}},
		{TypeRelayRequest, &RelayRequest{Exclude: []string{"sn-a"}, Reason: "over budget"}},
	}
	for _, v := range valid {
		raw := mustEncode(t, v.typ, "x1", "", v.b)
		if _, err := Decode(raw); err != nil {
			t.Errorf("%s: %v", v.typ, err)
		}
	}
	invalid := []struct {
		name string
		b    Body
	}{
		{"register without quic", &SupernodeRegister{Fingerprint: fp}},
		{"register hostname", &SupernodeRegister{QUIC: "relay.example:443", Fingerprint: fp}},
		{"register port 0", &SupernodeRegister{QUIC: "203.0.113.7:0", Fingerprint: fp}},
		{"register bad fingerprint", &SupernodeRegister{QUIC: "203.0.113.7:443", Fingerprint: strings.Repeat("AB", 32)}},
		{"status promoted without secret", &SupernodeStatus{ID: "sn", State: SupernodePromoted}},
		{"status unknown state", &SupernodeStatus{ID: "sn", State: "elected"}},
		{"heartbeat negative", &SupernodeHeartbeat{Sessions: -1}},
		{"request bad id", &RelayRequest{Exclude: []string{"a b"}}},
	}
	for _, tc := range invalid {
		if err := tc.b.Validate(); CodeOf(err) != CodeBadRequest {
			t.Errorf("%s: %v, want bad_request", tc.name, err)
		}
	}
}

// FuzzParseRelayToken: any string that parses re-encodes to itself, and
// verification never panics.
func FuzzParseRelayToken(f *testing.F) {
	key := testKey(f, 9)
	for _, tok := range []*RelayToken{
		{User: "alice", Supernode: "sn-1", Issued: 1, Expiry: 2},
		{User: "b.o_b-9", Supernode: "sn:x", Issued: 1_800_000_000, Expiry: 1_800_000_600, Nonce: "AAAA"},
	} {
		s, err := SignRelayToken(key, tok)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(s)
	}
	f.Add("prt1..")
	f.Add("prt1.e30.AAAA")
	pub := key.Public().(ed25519.PublicKey)
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseRelayToken(s)
		if _, verr := VerifyRelayToken(s, pub, "sn-1", time.Unix(1, 0)); verr != nil {
			if c := CodeOf(verr); c != CodeTokenInvalid && c != CodeTokenExpired {
				t.Fatalf("verify error code %s: %v", c, verr)
			}
		}
		if err != nil {
			if CodeOf(err) != CodeTokenInvalid {
				t.Fatalf("parse error code %s", CodeOf(err))
			}
			return
		}
		if p.Encode() != s {
			t.Fatalf("re-encode %q != %q", p.Encode(), s)
		}
		p2, err := ParseRelayToken(p.Encode())
		if err != nil || !reflect.DeepEqual(p, p2) {
			t.Fatalf("round trip: %+v vs %+v (%v)", p, p2, err)
		}
	})
}

// FuzzRelayFrame: a frame that decodes as a hello (or reply) re-encodes
// into a frame that decodes to the same value.
func FuzzRelayFrame(f *testing.F) {
	for _, b := range []Body{
		&RelayHello{Op: RelayOpRelay, Token: "prt1.abc.def"},
		&RelayHello{Op: RelayOpProbe, Nonce: base64.StdEncoding.EncodeToString(make([]byte, 32)), Bytes: 65536},
		&RelayReply{OK: true, Signature: base64.StdEncoding.EncodeToString(make([]byte, 64))},
		&RelayReply{Error: &Error{Code: CodeTokenExpired, Message: "expired"}},
	} {
		var buf bytes.Buffer
		if err := WriteRelayFrame(&buf, b); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var h RelayHello
		if err := ReadRelayFrame(bytes.NewReader(data), &h); err == nil {
			roundTrip(t, &h, new(RelayHello))
		}
		var r RelayReply
		if err := ReadRelayFrame(bytes.NewReader(data), &r); err == nil {
			roundTrip(t, &r, new(RelayReply))
		}
	})
}

func roundTrip(t *testing.T, v, into Body) {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteRelayFrame(&buf, v); err != nil {
		if CodeOf(err) == CodeTooLarge {
			return // escaping may grow the JSON past the limit
		}
		t.Fatalf("re-encode %+v: %v", v, err)
	}
	if err := ReadRelayFrame(&buf, into); err != nil || !reflect.DeepEqual(v, into) {
		t.Fatalf("round trip %+v vs %+v (%v)", v, into, err)
	}
}
