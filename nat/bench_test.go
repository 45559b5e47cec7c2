package nat

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// BenchmarkServerBinding measures request/response round trips to a STUN
// server on 127.0.0.1, one outstanding request at a time.
func BenchmarkServerBinding(b *testing.B) {
	s := startServer(b, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	c := newUDPClient(b)
	dst := s.Addrs().Primary
	pkt, _ := request(0)
	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		t0 := time.Now()
		c.send(dst, pkt)
		if _, _, ok := c.recv(time.Second); !ok {
			b.Fatal("no answer on loopback")
		}
		lat = append(lat, time.Since(t0))
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "req/s")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-us")
}

// BenchmarkServerBindingBatch keeps 32 requests in flight: the server's
// throughput rather than the round-trip time.
func BenchmarkServerBindingBatch(b *testing.B) {
	const window = 32
	s := startServer(b, ServerConfig{Primary: netip.AddrPortFrom(loopback1, 0)})
	c := newUDPClient(b)
	dst := s.Addrs().Primary
	pkts := make([][]byte, window)
	for i := range pkts {
		pkts[i], _ = request(0)
	}
	b.ResetTimer()
	start := time.Now()
	answered := 0
	for sent := 0; sent < b.N; {
		n := min(window, b.N-sent)
		for i := range n {
			c.send(dst, pkts[i])
		}
		sent += n
		for range n {
			if _, _, ok := c.recv(200 * time.Millisecond); !ok {
				break // a loopback drop: counted below
			}
			answered++
		}
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(answered)/elapsed.Seconds(), "req/s")
	b.ReportMetric(100*float64(b.N-answered)/float64(b.N), "loss-%")
}

// BenchmarkServerHandle is the CPU cost of decoding a request and
// encoding its response, without sockets.
func BenchmarkServerHandle(b *testing.B) {
	s, in := fuzzServer()
	pkt, _ := request(changeIPFlag | changePortFlag)
	src := netip.MustParseAddrPort("203.0.113.9:40000")
	var h handler
	b.ReportAllocs()
	for b.Loop() {
		if _, resp := s.handle(&h, in, pkt, src); resp == nil {
			b.Fatal("no response")
		}
	}
}

// BenchmarkDiscoverLoopback is one full Discover (test I, filtering II
// and III, mapping, hairpin) against a two-IP server on loopback.
func BenchmarkDiscoverLoopback(b *testing.B) {
	s := twoIPServer(b)
	cfg := fastClient(DiscoverConfig{Server: s.Addrs().Primary.String(), ListenAddr: "127.0.0.1:0"})
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		if _, err := Discover(context.Background(), cfg); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(time.Since(start).Microseconds())/1000/float64(b.N), "ms/discover")
}
