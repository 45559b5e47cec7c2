package proto

import (
	"crypto/ed25519"
	"strings"
	"testing"
)

const testSDP = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n" +
	"a=fingerprint:sha-256 AB:CD:EF:01\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=fingerprint:sha-256 AB:CD:EF:01\r\n"

func TestSDPSignature(t *testing.T) {
	_, alice, _ := ed25519.GenerateKey(nil)
	_, mallory, _ := ed25519.GenerateKey(nil)
	pub := alice.Public().(ed25519.PublicKey)
	s := &SDP{Session: "s1", SDP: testSDP}
	SignSDP(alice, TypeOffer, "alice", "bob", s)
	if err := s.Validate(); err != nil {
		t.Fatal(err)
	}
	if err := VerifySDP(pub, TypeOffer, "alice", "bob", s); err != nil {
		t.Fatalf("good signature refused: %v", err)
	}
	// Case and order of the lines do not matter.
	same := *s
	same.SDP = strings.Replace(testSDP, "AB:CD:EF:01", "ab:cd:ef:01", 1)
	if err := VerifySDP(pub, TypeOffer, "alice", "bob", &same); err != nil {
		t.Fatalf("same fingerprints, other case: %v", err)
	}
	swapped := *s
	swapped.SDP = strings.ReplaceAll(testSDP, "AB:CD:EF:01", "66:66:66:66")
	resigned := &SDP{Session: "s1", SDP: swapped.SDP}
	SignSDP(mallory, TypeOffer, "alice", "bob", resigned)
	cases := map[string]struct {
		s        *SDP
		t        Type
		from, to string
	}{
		"fingerprint swapped":         {&swapped, TypeOffer, "alice", "bob"},
		"signed by someone else":      {resigned, TypeOffer, "alice", "bob"},
		"replayed as an answer":       {s, TypeAnswer, "alice", "bob"},
		"replayed to someone else":    {s, TypeOffer, "alice", "carol"},
		"replayed on another session": {&SDP{Session: "s2", SDP: s.SDP, Sig: s.Sig}, TypeOffer, "alice", "bob"},
		"unsigned":                    {&SDP{Session: "s1", SDP: testSDP}, TypeOffer, "alice", "bob"},
		"no fingerprint at all":       {&SDP{Session: "s1", SDP: "v=0\r\n", Sig: s.Sig}, TypeOffer, "alice", "bob"},
	}
	for name, tc := range cases {
		if err := VerifySDP(pub, tc.t, tc.from, tc.to, tc.s); CodeOf(err) != CodeForbidden {
			t.Errorf("%s: %v, want forbidden", name, err)
		}
	}
}
