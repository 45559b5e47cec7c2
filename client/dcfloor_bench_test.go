package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/dcbench"
)

// BenchmarkDataChannelFloor sends 64 MiB per op over one bare pion data
// channel on loopback (internal/dcbench): the floor under
// BenchmarkFileTransfer. The receiver takes messages in OnMessage (pion's
// callback, as Parley does) or reads a detached channel; with pion's
// default SCTP receive buffer (1 MiB) or a larger one; with the sender's
// buffered-amount marks at Parley's 1/4 MiB or higher.
//
//	go test -run XXX -bench DataChannelFloor -benchtime 3x ./client/
func BenchmarkDataChannelFloor(b *testing.B) {
	const total = 64 << 20
	for _, tc := range []struct {
		name string
		cfg  dcbench.Config
	}{
		{"callback", dcbench.Config{}},
		{"callback/rcvbuf4M", dcbench.Config{RecvBuffer: 4 << 20}},
		{"callback/marks4-16M", dcbench.Config{Low: 4 << 20, High: 16 << 20}},
		{"callback/rcvbuf4M/marks4-16M", dcbench.Config{RecvBuffer: 4 << 20, Low: 4 << 20, High: 16 << 20}},
		{"callback/16KiB", dcbench.Config{Chunk: 16 << 10}},
		{"detached", dcbench.Config{Detach: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			tc.cfg.Settings = client.LoopbackOnly
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
			defer cancel()
			p, err := dcbench.New(ctx, tc.cfg)
			if err != nil {
				b.Fatal(err)
			}
			defer p.Close()
			b.SetBytes(total)
			b.ResetTimer()
			var sum dcbench.Result
			for i := 0; i < b.N; i++ {
				r, err := p.Send(ctx, total)
				if err != nil {
					b.Fatal(err)
				}
				sum.Bytes, sum.Elapsed, sum.CPU = sum.Bytes+r.Bytes, sum.Elapsed+r.Elapsed, sum.CPU+r.CPU
			}
			reportRate(b, sum)
		})
	}
}

// reportRate reports MB/s and the CPU the process spent per MB (both
// ends of the transfer are in this process): on a shared machine the
// second says more than the first, and 2 cores / cpu-ms/MB bounds what
// an idle 2-core machine could reach.
func reportRate(b *testing.B, r dcbench.Result) {
	b.ReportMetric(r.MBps(), "MB/s")
	b.ReportMetric(r.CPUPerMB(), "cpu-ms/MB")
	b.ReportMetric(0, "ns/op")
}
