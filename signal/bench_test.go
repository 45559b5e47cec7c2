package signal_test

import (
	"crypto/ed25519"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// BenchmarkRoute measures frames routed from one client to another through
// the server (decode, validate, stamp, re-encode, forward, ack): read
// receipts, the plain routed type closest in size to a short message's
// metadata. (Chat itself goes sealed through the mailbox: BenchmarkOffline.)
func BenchmarkRoute(b *testing.B) {
	srv := signaltest.Start(b, signal.Config{RateLimit: 1e9, RateBurst: 1 << 30, SendQueue: 4096})
	alice := login(b, srv.URL, "alice", nil)
	bob := login(b, srv.URL, "bob", nil)
	env, _ := proto.New(proto.TypeRead, "m1", "bob", &proto.Receipt{ID: "m1"})
	raw, _ := proto.Encode(env)
	done := make(chan error, 1)
	go func() {
		// Bob reads b.N chats; alice drains her acks.
		for n := 0; n < b.N; {
			bob.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, data, err := bob.conn.ReadMessage()
			if err != nil {
				done <- err
				return
			}
			if e, err := proto.Decode(data); err == nil && e.Type == proto.TypeRead {
				n++
			}
		}
		done <- nil
	}()
	go func() {
		for {
			alice.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, _, err := alice.conn.ReadMessage(); err != nil {
				return
			}
		}
	}()
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; i++ {
		if err := alice.conn.WriteMessage(websocket.TextMessage, raw); err != nil {
			b.Fatal(err)
		}
	}
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
}

// BenchmarkConnectionMemory measures the heap one signed-in idle connection
// costs the server (both ends are in this process, so the figure includes
// the test client's side too: an upper bound).
func BenchmarkConnectionMemory(b *testing.B) {
	const n = 300
	for i := 0; i < b.N; i++ {
		srv := signaltest.Start(b, signal.Config{})
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		clients := make([]*wsClient, 0, n)
		for j := 0; j < n; j++ {
			_, key, _ := ed25519.GenerateKey(nil)
			clients = append(clients, login(b, srv.URL, fmt.Sprintf("u%d", j), key))
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/n/1024, "KiB/conn")
		for _, c := range clients {
			c.conn.Close()
		}
		srv.Close()
	}
}
