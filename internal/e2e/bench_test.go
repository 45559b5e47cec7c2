package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/nat"
)

// BenchmarkDiscover times nat.Discover from inside a home of each kind
// against the lab's two-IP STUN server, with the defaults `parley nat` and
// the client use (RTO 100 ms, 1 s per transaction). The time is dominated
// by the tests whose answer a NAT filters: each waits the full timeout.
func BenchmarkDiscover(b *testing.B) {
	w := newWorld(b)
	for i, k := range natlab.Kinds {
		home := w.lab.AddHome("d"+string(rune('0'+i)), k)
		b.Run(k.String(), func(b *testing.B) {
			b.ReportAllocs()
			var total time.Duration
			for b.Loop() {
				start := time.Now()
				r, err := nat.Discover(context.Background(), nat.DiscoverConfig{Server: w.iceURL, Listener: home.Client.Net()})
				total += time.Since(start)
				if err != nil {
					b.Fatal(err)
				}
				if r.Type != k.NATType() {
					b.Fatalf("%s: discovered %s", home, r.Type)
				}
			}
			b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms/discover")
		})
	}
}
