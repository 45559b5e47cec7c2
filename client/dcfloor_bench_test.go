package client_test

import (
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/dcbench"
	"github.com/parley-voice/parley/internal/sockbuf"
	"github.com/pion/webrtc/v4"
)

// BenchmarkDataChannelFloor sends 64 MiB per op over one bare pion data
// channel on loopback (internal/dcbench): the floor under
// BenchmarkFileTransfer. The ICE sockets have the kernel's default
// buffers or internal/sockbuf's (as Parley's links do); the receiver
// takes messages in OnMessage (pion's callback, as Parley does) or reads
// a detached channel; pion's default SCTP receive buffer (1 MiB) or a
// larger one; the sender's buffered-amount marks at Parley's 1/2 MiB or
// higher; 64 KiB messages or 16 KiB (what browsers send). udp-drops is
// the machine's UDP receive-buffer overflows per op (/proc/net/snmp: other
// programs' count too).
//
//	go test -run XXX -bench DataChannelFloor -benchtime 3x ./client/
func BenchmarkDataChannelFloor(b *testing.B) {
	const total = 64 << 20
	bufs := func(se *webrtc.SettingEngine) { se.SetNet(&sockbuf.Net{}) }
	for _, tc := range []struct {
		name string
		cfg  dcbench.Config
	}{
		{"callback", dcbench.Config{}},
		{"callback/sockbuf", dcbench.Config{Settings: bufs}},
		{"callback/sockbuf/rcvbuf4M", dcbench.Config{Settings: bufs, RecvBuffer: 4 << 20}},
		{"callback/sockbuf/marks4-16M", dcbench.Config{Settings: bufs, Low: 4 << 20, High: 16 << 20}},
		{"callback/sockbuf/16KiB", dcbench.Config{Settings: bufs, Chunk: 16 << 10}},
		{"detached/sockbuf", dcbench.Config{Settings: bufs, Detach: true}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			mod := tc.cfg.Settings
			tc.cfg.Settings = func(se *webrtc.SettingEngine) {
				if mod != nil {
					mod(se)
				}
				client.LoopbackOnly(se)
			}
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
			drops0 := udpDrops()
			for i := 0; i < b.N; i++ {
				r, err := p.Send(ctx, total)
				if err != nil {
					b.Fatal(err)
				}
				sum.Bytes, sum.Elapsed, sum.CPU = sum.Bytes+r.Bytes, sum.Elapsed+r.Elapsed, sum.CPU+r.CPU
			}
			reportRate(b, sum)
			b.ReportMetric(float64(udpDrops()-drops0)/float64(b.N), "udp-drops/op")
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

// udpDrops is the machine's count of UDP datagrams dropped for a full
// receive buffer (Linux; 0 elsewhere).
func udpDrops() int64 {
	b, err := os.ReadFile("/proc/net/snmp")
	if err != nil {
		return 0
	}
	var head []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || f[0] != "Udp:" {
			continue
		}
		if head == nil {
			head = f
			continue
		}
		for i, name := range head {
			if name == "RcvbufErrors" && i < len(f) {
				n, _ := strconv.ParseInt(f[i], 10, 64)
				return n
			}
		}
	}
	return 0
}
