package signal_test

import (
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

// BenchmarkOfflineStoreAndDeliver leaves b.N sealed messages for an
// offline user (each fsynced in bbolt before its ack), then signs the user
// in and reads them all: stored msgs/s and delivery msgs/s.
func BenchmarkOfflineStoreAndDeliver(b *testing.B) {
	url, _ := runServer(b, signal.Config{DataDir: b.TempDir(), RateLimit: 1e6, RateBurst: 1 << 20, SendQueue: 1 << 16,
		Offline: signal.OfflineLimits{MaxMessages: 1 << 20, MaxBytes: 1 << 30}})
	_, bobKey, _ := ed25519.GenerateKey(nil)
	login(b, url, "bob", bobKey).conn.Close()
	alice := login(b, url, "alice", nil)
	sealed := sealFor(b, alice, "m", "two hundred bytes of text, more or less, which is a typical chat message length for this benchmark....................................................................")
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		s := *sealed
		s.ID = fmt.Sprint("m", i)
		alice.send(proto.TypeSealed, s.ID, "bob", &s)
		alice.readUntil(proto.TypeAck)
	}
	stored := time.Since(start)
	start = time.Now()
	bob := login(b, url, "bob", bobKey)
	for i := 0; i < b.N; i++ {
		bob.readUntil(proto.TypeSealed)
	}
	delivered := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/stored.Seconds(), "stored-msgs/s")
	b.ReportMetric(float64(b.N)/delivered.Seconds(), "delivered-msgs/s")
}
