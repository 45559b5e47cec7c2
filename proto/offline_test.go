package proto

import (
	"crypto/ed25519"
	"encoding/base64"
	"strings"
	"testing"
)

func TestSealedValidate(t *testing.T) {
	pub, _, _ := ed25519.GenerateKey(nil)
	b64 := base64.StdEncoding.EncodeToString
	good := Sealed{ID: "m1", SenderKey: b64(pub), Nonce: b64(make([]byte, NonceSize)), Box: b64(make([]byte, 40))}
	tests := []struct {
		name string
		mod  func(s *Sealed)
		code Code
	}{
		{"valid", func(s *Sealed) {}, ""},
		{"bad id", func(s *Sealed) { s.ID = "no spaces" }, CodeBadRequest},
		{"bad sender key", func(s *Sealed) { s.SenderKey = b64([]byte("short")) }, CodeBadRequest},
		{"short nonce", func(s *Sealed) { s.Nonce = b64(make([]byte, 12)) }, CodeBadRequest},
		{"box not base64", func(s *Sealed) { s.Box = "!!!" }, CodeBadRequest},
		{"box only a tag", func(s *Sealed) { s.Box = b64(make([]byte, 16)) }, CodeBadRequest},
		{"box too large", func(s *Sealed) { s.Box = b64(make([]byte, MaxSealedBox+1)) }, CodeTooLarge},
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
}
