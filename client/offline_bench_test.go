package client_test

import (
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// BenchmarkSealOpen measures sealing and opening one 200-byte message:
// two binding checks (Ed25519 verify), one binding signature, two X25519
// agreements, two HKDF-SHA256 derivations and AES-256-GCM both ways.
func BenchmarkSealOpen(b *testing.B) {
	alice, _ := keys(b, "alice", 1)
	bob, bobPeer := keys(b, "bob", 2)
	msg := &proto.Chat{ID: "m1", Text: strings.Repeat("x", 200)}
	b.ReportAllocs()
	for b.Loop() {
		s, err := client.Seal(alice, bobPeer, msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.Open(bob, "alice", s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/seal+open")
}
