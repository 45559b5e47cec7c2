package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

var b64 = base64.StdEncoding.EncodeToString

// validSealed returns a well-formed sealed message (its ciphertext is
// random bytes: proto checks shape, the client opens).
func validSealed(t testing.TB, priv ed25519.PrivateKey, name string) Sealed {
	t.Helper()
	enc, sig := SignEncKey(priv, name, make([]byte, EncKeySize))
	return Sealed{V: SealedVersion, ID: "m1", SenderKey: b64(priv.Public().(ed25519.PublicKey)), SenderEnc: enc, SenderEncSig: sig,
		Salt: b64(make([]byte, SealedSaltSize)), Nonce: b64(make([]byte, SealedNonce)), Ciphertext: b64(make([]byte, 40))}
}

func TestSealedValidate(t *testing.T) {
	_, priv, _ := ed25519.GenerateKey(nil)
	good := validSealed(t, priv, "alice")
	tests := []struct {
		name string
		mod  func(s *Sealed)
		code Code
	}{
		{"valid", func(s *Sealed) {}, ""},
		{"old version", func(s *Sealed) { s.V = 1 }, CodeBadRequest},
		{"no version", func(s *Sealed) { s.V = 0 }, CodeBadRequest},
		{"bad id", func(s *Sealed) { s.ID = "no spaces" }, CodeBadRequest},
		{"bad sender key", func(s *Sealed) { s.SenderKey = b64([]byte("short")) }, CodeBadRequest},
		{"no sender enc", func(s *Sealed) { s.SenderEnc = "" }, CodeBadRequest},
		{"short sender enc", func(s *Sealed) { s.SenderEnc = b64(make([]byte, 31)) }, CodeBadRequest},
		{"no binding", func(s *Sealed) { s.SenderEncSig = "" }, CodeBadRequest},
		{"short binding", func(s *Sealed) { s.SenderEncSig = b64(make([]byte, 63)) }, CodeBadRequest},
		{"short salt", func(s *Sealed) { s.Salt = b64(make([]byte, 8)) }, CodeBadRequest},
		{"salt not base64", func(s *Sealed) { s.Salt = "!!!!!!!!!!!!!!!!!!!!!!!!" }, CodeBadRequest},
		{"NaCl-sized nonce", func(s *Sealed) { s.Nonce = b64(make([]byte, 24)) }, CodeBadRequest},
		{"ciphertext not base64", func(s *Sealed) { s.Ciphertext = "!!!" }, CodeBadRequest},
		{"ciphertext only a tag", func(s *Sealed) { s.Ciphertext = b64(make([]byte, SealedTagSize)) }, CodeBadRequest},
		{"ciphertext too large", func(s *Sealed) { s.Ciphertext = b64(make([]byte, MaxSealedCiphertext+1)) }, CodeTooLarge},
		{"negative stored", func(s *Sealed) { s.Stored = -1 }, CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good
			tc.mod(&s)
			err := s.Validate()
			if tc.code == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}
	// Routed, and it round-trips through an envelope.
	if !TypeSealed.Routed() || TypeSealedReceipt.Routed() {
		t.Fatal("sealed must be routed, sealed_receipt not")
	}
	env, err := New(TypeSealed, "m1", "bob", &good)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := Encode(env)
	back, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	s, err := DecodeBody[*Sealed](back)
	if err != nil || *s != good || !strings.Contains(string(raw), `"sealed"`) {
		t.Fatalf("round trip: %+v %v", s, err)
	}
	if len(s.SaltBytes()) != SealedSaltSize || len(s.NonceBytes()) != SealedNonce || len(s.CiphertextBytes()) != 40 {
		t.Fatal("decoded field sizes")
	}
}

func TestEncKeyBinding(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(nil)
	other, _, _ := ed25519.GenerateKey(nil)
	encPub := make([]byte, EncKeySize)
	encPub[0] = 9
	enc, sig := SignEncKey(priv, "alice", encPub)
	if got, err := VerifyEncKey(pub, "alice", enc, sig); err != nil || string(got) != string(encPub) {
		t.Fatalf("valid binding: %v", err)
	}
	otherEnc, _ := SignEncKey(priv, "alice", make([]byte, EncKeySize))
	tests := []struct {
		name           string
		id             ed25519.PublicKey
		who, key, bind string
		code           Code
	}{
		{"other identity", other, "alice", enc, sig, CodeForbidden},
		{"other name", pub, "alicia", enc, sig, CodeForbidden},
		{"other enc key", pub, "alice", otherEnc, sig, CodeForbidden},
		{"sig not base64", pub, "alice", enc, "x", CodeBadRequest},
		{"key missing", pub, "alice", "", sig, CodeBadRequest},
		{"short identity", pub[:5], "alice", enc, sig, CodeBadRequest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := VerifyEncKey(tc.id, tc.who, tc.key, tc.bind); CodeOf(err) != tc.code {
				t.Fatalf("got %v, want %s", err, tc.code)
			}
		})
	}

	// In auth: optional, but when present it must verify (auth_failed) and
	// be well formed (bad_request); presence checks the shape only.
	a := SignAuth(priv, "c", "alice")
	if err := a.Validate(); err != nil {
		t.Fatalf("auth without enc key: %v", err)
	}
	a.EncKey, a.EncSig = enc, sig
	if err := a.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := VerifyAuth(a, "c"); err != nil {
		t.Fatalf("auth with a bound enc key: %v", err)
	}
	a.EncKey = otherEnc
	if err := VerifyAuth(a, "c"); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("auth with an unbound enc key: %v", err)
	}
	a.EncSig = ""
	if err := a.Validate(); CodeOf(err) != CodeBadRequest {
		t.Fatalf("enc key without sig: %v", err)
	}
	p := Presence{Name: "alice", Status: StatusOffline, PublicKey: b64(pub), EncKey: enc}
	if err := p.Validate(); CodeOf(err) != CodeBadRequest {
		t.Fatalf("presence enc key without sig: %v", err)
	}
	p.EncSig = sig
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestSealedInfoAndAAD(t *testing.T) {
	a := make(ed25519.PublicKey, 32)
	b := make(ed25519.PublicKey, 32)
	b[0] = 1
	if string(SealedInfo(a, b)) == string(SealedInfo(b, a)) {
		t.Fatal("info does not distinguish sender from recipient")
	}
	if got := len(SealedInfo(a, b)); got != len(SealedInfoLabel)+64 {
		t.Fatalf("info is %d bytes", got)
	}
	if got := string(SealedAAD("m1", "alice", "bob")); got != "parley-sealed-v2\nm1\nalice\nbob" {
		t.Fatalf("aad %q", got)
	}
}
