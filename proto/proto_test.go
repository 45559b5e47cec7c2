package proto

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func mustEncode(t testing.TB, typ Type, id, to string, b Body) []byte {
	t.Helper()
	env, err := New(typ, id, to, b)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := Encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

func TestDecodeValid(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	mid := "0"
	idx := uint16(0)
	cases := []struct {
		name string
		typ  Type
		to   string
		body Body
	}{
		{"hello", TypeHello, "", &Hello{Challenge: "c3RhbGUgY2hhbGxlbmdlIGJ5dGVz", Version: 1}},
		{"auth", TypeAuth, "", SignAuth(priv, "abc", "alice")},
		{"auth with enc key", TypeAuth, "", authWithEnc(priv, "abc", "alice")},
		{"presence with enc key", TypePresence, "", presenceWithEnc(priv, "alice")},
		{"welcome", TypeWelcome, "", &Welcome{Name: "alice", Session: "s", Online: []Presence{{Name: "bob", Status: StatusOnline}}}},
		{"presence", TypePresence, "", &Presence{Status: StatusAway}},
		{"offer", TypeOffer, "bob", &SDP{Session: "s1", SDP: "v=0\r\n"}},
		{"answer with NAT hint", TypeAnswer, "bob", &SDP{Session: "s1", SDP: "v=0\r\n", NAT: NATSymmetric}},
		{"restart", TypeRestart, "bob", &Restart{Session: "s1"}},
		{"presence with NAT", TypePresence, "", &Presence{Name: "bob", Status: StatusOnline, NAT: NATFullCone}},
		{"candidate", TypeCandidate, "bob", &Candidate{Session: "s1", Candidate: "candidate:1 1 udp 1 127.0.0.1 5000 typ host", SDPMid: &mid, SDPMLineIndex: &idx}},
		{"end of candidates", TypeCandidate, "bob", &Candidate{Session: "s1"}},
		{"ring", TypeRing, "bob", &CallSignal{Call: "c1"}},
		{"chat", TypeChat, "bob", &Chat{ID: "m1", Text: "héllo ☎"}},
		{"delivered", TypeDelivered, "bob", &Receipt{ID: "m1"}},
		{"nat", TypeNATReport, "", &NATReport{PublicAddr: "203.0.113.5:4000", Mapping: BehaviorEndpointIndependent, Filtering: BehaviorAddressAndPortDependent, Type: NATPortRestricted}},
		{"error", TypeError, "", &Error{Code: CodeOffline, Message: "bob is offline", Ref: "m1"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			raw := mustEncode(t, tc.typ, "id-1", tc.to, tc.body)
			env, err := Decode(raw)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if env.Type != tc.typ || env.ID != "id-1" || env.To != tc.to {
				t.Fatalf("envelope %+v", env)
			}
			b, err := env.body()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(b, tc.body) {
				t.Fatalf("body %#v, want %#v", b, tc.body)
			}
		})
	}
}

func TestDecodeInvalid(t *testing.T) {
	cases := []struct {
		name string
		raw  string
		code Code
	}{
		{"empty", ``, CodeBadFrame},
		{"array", `[1,2]`, CodeBadFrame},
		{"trailing", `{"v":1,"type":"ping"} {}`, CodeBadFrame},
		{"version", `{"v":2,"type":"ping"}`, CodeBadVersion},
		{"no type", `{"v":1}`, CodeBadFrame},
		{"unknown type", `{"v":1,"type":"x"}`, CodeUnknownType},
		{"bad id", `{"v":1,"type":"ping","id":"a b"}`, CodeBadRequest},
		{"long id", `{"v":1,"type":"ping","id":"` + strings.Repeat("a", 65) + `"}`, CodeBadRequest},
		{"routed without to", `{"v":1,"type":"chat","body":{"id":"x","text":"t"}}`, CodeBadRequest},
		{"bad to", `{"v":1,"type":"chat","to":"../etc","body":{"id":"x","text":"t"}}`, CodeBadName},
		{"bad from", `{"v":1,"type":"chat","from":"A","to":"b","body":{"id":"x","text":"t"}}`, CodeBadName},
		{"empty text", `{"v":1,"type":"chat","to":"b","body":{"id":"x","text":""}}`, CodeBadRequest},
		{"long text", `{"v":1,"type":"chat","to":"b","body":{"id":"x","text":"` + strings.Repeat("a", MaxTextLen+1) + `"}}`, CodeTooLarge},
		{"body wrong type", `{"v":1,"type":"chat","to":"b","body":{"id":5}}`, CodeBadRequest},
		{"bad sdp", `{"v":1,"type":"offer","to":"b","body":{"session":"s","sdp":"x"}}`, CodeBadRequest},
		{"bad NAT hint in an offer", `{"v":1,"type":"offer","to":"b","body":{"session":"s","sdp":"v=0","nat":"cone-ish"}}`, CodeBadRequest},
		{"restart without a session", `{"v":1,"type":"restart","to":"b","body":{}}`, CodeBadRequest},
		{"bad NAT in presence", `{"v":1,"type":"presence","body":{"name":"bob","status":"online","nat":"x"}}`, CodeBadRequest},
		{"bad candidate", `{"v":1,"type":"candidate","to":"b","body":{"session":"s","candidate":"x"}}`, CodeBadRequest},
		{"key with a line break", `{"v":1,"type":"presence","body":{"name":"bob","status":"online","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n="}}`, CodeBadRequest},
		{"bad key", `{"v":1,"type":"auth","body":{"name":"a","public_key":"AAAA","signature":"AAAA"}}`, CodeBadRequest},
		{"reserved name", `{"v":1,"type":"auth","body":{"name":"server","public_key":"AAAA","signature":"AAAA"}}`, CodeBadName},
		{"bad presence", `{"v":1,"type":"presence","body":{"status":"dancing"}}`, CodeBadRequest},
		{"bad nat", `{"v":1,"type":"nat_report","body":{"public_addr":"nope","type":"none"}}`, CodeBadRequest},
		{"too large", `{"v":1,"type":"ping","pad":"` + strings.Repeat("a", MaxFrameSize) + `"}`, CodeTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.raw))
			var pe *Error
			if !errors.As(err, &pe) || pe.Code != tc.code {
				t.Fatalf("got %v, want code %s", err, tc.code)
			}
		})
	}
}

func TestAuthSignature(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	_, other, _ := ed25519.GenerateKey(nil)
	a := SignAuth(priv, "challenge-1", "alice")
	if err := VerifyAuth(a, "challenge-1"); err != nil {
		t.Fatalf("valid auth: %v", err)
	}
	for name, tc := range map[string]struct {
		a         *Auth
		challenge string
	}{
		"other challenge": {a, "challenge-2"},
		"other name":      {&Auth{Name: "bob", PublicKey: a.PublicKey, Signature: a.Signature}, "challenge-1"},
		"other key":       {&Auth{Name: "alice", PublicKey: SignAuth(other, "x", "alice").PublicKey, Signature: a.Signature}, "challenge-1"},
	} {
		if err := VerifyAuth(tc.a, tc.challenge); !errors.Is(err, ErrAuthFailed) {
			t.Errorf("%s: got %v, want auth_failed", name, err)
		}
	}
}

func authWithEnc(priv ed25519.PrivateKey, challenge, name string) *Auth {
	a := SignAuth(priv, challenge, name)
	a.EncKey, a.EncSig = SignEncKey(priv, name, make([]byte, EncKeySize))
	return a
}

func presenceWithEnc(priv ed25519.PrivateKey, name string) *Presence {
	enc, sig := SignEncKey(priv, name, make([]byte, EncKeySize))
	return &Presence{Name: name, Status: StatusOffline, PublicKey: b64(priv.Public().(ed25519.PublicKey)), LastSeen: 5, EncKey: enc, EncSig: sig}
}

func TestErrorIs(t *testing.T) {
	var err error = Errorf(CodeOffline, "bob is offline")
	if !errors.Is(err, ErrOffline) || errors.Is(err, ErrNameTaken) {
		t.Fatal("errors.Is by code")
	}
	if CodeOf(err) != CodeOffline || CodeOf(errors.New("x")) != CodeInternal {
		t.Fatal("CodeOf")
	}
}

func TestClassifyAndNeedsRelay(t *testing.T) {
	if got := ClassifyNAT(BehaviorEndpointIndependent, BehaviorAddressDependent); got != NATRestricted {
		t.Fatalf("EIM+ADF = %s", got)
	}
	if got := ClassifyNAT(BehaviorAddressAndPortDependent, BehaviorAddressAndPortDependent); got != NATSymmetric {
		t.Fatalf("APDM = %s", got)
	}
	cases := []struct {
		a, b NATType
		want bool
	}{
		{NATNone, NATSymmetric, false},
		{NATFullCone, NATSymmetric, false},
		{NATRestricted, NATSymmetric, false},
		{NATPortRestricted, NATSymmetric, true},
		{NATSymmetric, NATSymmetric, true},
		{NATPortRestricted, NATPortRestricted, false},
		{NATNone, NATUDPBlocked, true},
	}
	for _, tc := range cases {
		if got := NeedsRelay(tc.a, tc.b); got != tc.want {
			t.Errorf("NeedsRelay(%s, %s) = %v", tc.a, tc.b, got)
		}
		if got := NeedsRelay(tc.b, tc.a); got != tc.want {
			t.Errorf("NeedsRelay(%s, %s) = %v (not symmetric)", tc.b, tc.a, got)
		}
	}
}

func TestDataChannelMessages(t *testing.T) {
	for _, m := range []*DCMessage{
		{Type: DCChat, ID: "m1", Text: "hi", Time: 5},
		{Type: DCDelivered, ID: "m1"},
		{Type: DCTyping, Typing: true},
	} {
		b, err := EncodeDC(m)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeDC(b)
		if err != nil || !reflect.DeepEqual(got, m) {
			t.Fatalf("round trip %+v: %+v %v", m, got, err)
		}
	}
	for _, raw := range []string{`{"type":"chat","id":"m"}`, `{"type":"x"}`, `nope`, `{"type":"delivered"}`} {
		if _, err := DecodeDC([]byte(raw)); err == nil {
			t.Errorf("%s: no error", raw)
		}
	}
}

// FuzzDecode: any bytes either fail with a *Error or decode into an
// envelope that re-encodes and decodes to the same thing.
func FuzzDecode(f *testing.F) {
	_, priv, _ := ed25519.GenerateKey(nil)
	f.Add(mustEncode(f, TypeChat, "m1", "bob", &Chat{ID: "m1", Text: "hi"}))
	f.Add(mustEncode(f, TypeAuth, "a", "", SignAuth(priv, "abc", "alice")))
	f.Add(mustEncode(f, TypeAuth, "a", "", authWithEnc(priv, "abc", "alice")))
	f.Add(mustEncode(f, TypeWelcome, "", "", &Welcome{Name: "b", Session: "s", Online: []Presence{*presenceWithEnc(priv, "alice")}}))
	sl := validSealed(f, priv, "alice")
	f.Add(mustEncode(f, TypeSealed, "m1", "bob", &sl))
	f.Add(mustEncode(f, TypeOffer, "", "bob", &SDP{Session: "s", SDP: "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\n"}))
	f.Add(mustEncode(f, TypeWelcome, "", "", &Welcome{Name: "a", Session: "s", Online: []Presence{{Name: "b", Status: StatusOnline}}}))
	f.Add(mustEncode(f, TypeAnswer, "", "alice", &SDP{Session: "s", SDP: "v=0\r\n", NAT: NATSymmetric}))
	f.Add(mustEncode(f, TypePresence, "", "", &Presence{Name: "b", Status: StatusOnline, NAT: NATPortRestricted}))
	f.Add(mustEncode(f, TypeRestart, "", "bob", &Restart{Session: "s1"}))
	f.Add(mustEncode(f, TypeContacts, "c1", "", &Contacts{Replace: true, Add: []string{"bob", "carol"}, Remove: []string{"dave"}}))
	f.Add(mustEncode(f, TypePresenceList, "", "", &PresenceList{Ref: "c1", Entries: []Presence{*presenceWithEnc(priv, "alice"), {Name: "bob", Status: StatusOffline, LastSeen: 1}}}))
	f.Add(mustEncode(f, TypeDirectory, "d1", "", &DirectoryQuery{Prefix: "al", After: "alice", Limit: 20, Online: true, Watch: true}))
	f.Add(mustEncode(f, TypeDirectoryPage, "", "", &DirectoryPage{Ref: "d1", Entries: []Presence{{Name: "alice", Status: StatusOnline}}, Next: "alice", Watching: true}))
	f.Add([]byte(`{"v":1,"type":"ping"}`))
	f.Add([]byte(`{"v":1,"type":"nat_report","body":{"type":"symmetric","mapping":"address-and-port-dependent"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := Decode(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("non-protocol error %T %v", err, err)
			}
			return
		}
		b, err := env.body()
		if err != nil {
			t.Fatalf("decoded envelope has bad body: %v", err)
		}
		raw, err := Encode(env)
		if err != nil {
			return // may exceed the limit after re-encoding escapes
		}
		env2, err := Decode(raw)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		b2, _ := env2.body()
		j1, _ := json.Marshal(b)
		j2, _ := json.Marshal(b2)
		if env.Type != env2.Type || env.ID != env2.ID || env.To != env2.To || env.From != env2.From || string(j1) != string(j2) {
			t.Fatalf("round trip changed: %s vs %s", j1, j2)
		}
	})
}

func FuzzDecodeDC(f *testing.F) {
	f.Add([]byte(`{"type":"chat","id":"m1","text":"hi","ts":1}`))
	f.Add([]byte(`{"type":"delivered","id":"m1"}`))
	f.Add([]byte(`{"type":"typing","typing":true}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := DecodeDC(data)
		if err != nil {
			return
		}
		b, err := EncodeDC(m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		m2, err := DecodeDC(b)
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("round trip: %+v vs %+v (%v)", m, m2, err)
		}
	})
}

func TestValidateHostName(t *testing.T) {
	for h, ok := range map[string]bool{
		"example.org": true, "parley.example.org": true, "localhost": true, "a-b.c1.io": true, "xn--bcher-kva.example": true,
		"": false, "203.0.113.2": false, "-a.org": false, "a-.org": false, "a..org": false, "example.org.": false,
		"exa mple.org": false, "ex_ample.org": false, "[::1]": false, "a.org:443": false,
	} {
		if err := ValidateHostName(h); (err == nil) != ok {
			t.Errorf("ValidateHostName(%q) = %v, want ok=%v", h, err, ok)
		}
	}
}

func TestValidateDisplayName(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		ok       bool
	}{
		{"words", "Alice Martin", true},
		{"accents and emoji", "Zoë 🎻", true},
		{"emoji sequence with joiner", "Ana 👩‍💻", true},
		{"one character", "A", true},
		{"forty characters", strings.Repeat("é", 40), true},
		{"empty", "", false},
		{"forty-one characters", strings.Repeat("é", 41), false},
		{"leading space", " Alice", false},
		{"trailing space", "Alice ", false},
		{"two spaces", "Alice  Martin", false},
		{"tab", "Alice\tMartin", false},
		{"line break", "Alice\nMartin", false},
		{"no-break space", "Alice\u00a0Martin", false},
		{"bidi override", "Alice\u202eniltraM", false},
		{"zero-width space", "Al\u200bice", false},
		{"invalid UTF-8", "Alice\xff", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := ValidateDisplayName(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("ValidateDisplayName(%q) = %v, want ok %v", tc.in, err, tc.ok)
			}
			if err != nil && CodeOf(err) != CodeBadName {
				t.Errorf("error %v has not code bad_name", err)
			}
			if got := ValidDisplayName(tc.in); got != map[bool]string{true: tc.in}[tc.ok] {
				t.Errorf("ValidDisplayName(%q) = %q", tc.in, got)
			}
		})
	}
	// A chat message keeps its text whatever its display name: Validate
	// does not look at it (receivers drop a bad one with ValidDisplayName).
	m, err := DecodeDC([]byte(`{"type":"chat","id":"m1","text":"hi","display":"Alice\u202e"}`))
	if err != nil || m.Text != "hi" || ValidDisplayName(m.Display) != "" {
		t.Fatalf("DecodeDC with a bad display name: %+v, %v", m, err)
	}
}
