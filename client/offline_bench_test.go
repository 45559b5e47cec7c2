package client_test

import (
	"crypto/ed25519"
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// BenchmarkSealOpen measures sealing and opening one 200-byte message,
// including both Ed25519→X25519 conversions.
func BenchmarkSealOpen(b *testing.B) {
	_, alice, _ := ed25519.GenerateKey(nil)
	bobPub, bob, _ := ed25519.GenerateKey(nil)
	msg := &proto.Chat{ID: "m1", Text: strings.Repeat("x", 200)}
	b.ReportAllocs()
	for b.Loop() {
		s, err := client.Seal(alice, bobPub, msg)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := client.Open(bob, s); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/seal+open")
}
