package client_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/dcbench"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/pion/webrtc/v4"
)

// benchFileSize is the file each op of the transfer benchmarks sends.
const benchFileSize = 64 << 20

// filePair is a sender and a receiver that takes every file, on a direct
// path or (relayed) only through a local supernode.
func filePair(b *testing.B, relayed bool) (alice, bob *peer) {
	b.Helper()
	srv := signaltest.Start(b, signal.Config{RateLimit: 10000, RateBurst: 10000, Supernodes: signal.SupernodeConfig{
		AllowAddrs: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, ProbeBytes: 256 << 10, MinMbps: 1,
		ProbeTimeout: 2 * time.Second, Heartbeat: 200 * time.Millisecond,
	}})
	policy := webrtc.ICETransportPolicyAll
	if relayed {
		sn := supernodetest.Start(b, srv.URL, supernode.Config{Name: "snbench", AllowPeers: supernodetest.Loopback,
			MaxSessionKbps: 1e8, MaxRelayMbps: 1e5})
		sn.WaitState(b, proto.SupernodePromoted, 15*time.Second)
		policy = webrtc.ICETransportPolicyRelay
	}
	dir := b.TempDir()
	alice = startClient(b, srv.URL, "alice", nil, func(c *client.Config) { c.ICETransportPolicy = policy })
	bob = startClient(b, srv.URL, "bob", nil, func(c *client.Config) {
		c.ICETransportPolicy = policy
		c.Files = client.FileConfig{Dir: filepath.Join(dir, "in"), StateDir: filepath.Join(dir, "state"),
			MaxSize: 1 << 40, AutoAccept: func(string, proto.FileInfo) bool { return true }}
	})
	alice.ev.Wait(b, wait, "alice sees bob", online("bob"))
	// A first message opens the link: the ops measure transfers on it,
	// as the floor measures a channel already open.
	if _, err := alice.Send(context.Background(), "bob", "hello"); err != nil {
		b.Fatal(err)
	}
	alice.ev.Wait(b, wait, "link", func(e client.Event) bool {
		l, ok := e.(client.LinkEvent)
		return ok && l.State == "open"
	})
	return alice, bob
}

// sendOneFile sends src from alice to bob and returns how long the bytes
// took — from bob's offer (auto-accepted) to the file checked and saved —
// and where bob saved it.
func sendOneFile(b *testing.B, alice, bob *peer, src, wantPath string) (time.Duration, string) {
	b.Helper()
	id, err := alice.SendFile(context.Background(), "bob", src)
	if err != nil {
		b.Fatal(err)
	}
	bob.ev.Wait(b, wait, "offer", fileOffer(id))
	start := time.Now()
	got, ok := bob.ev.Wait(b, 5*time.Minute, "bob has the file", fileEnd(id)).(client.FileDoneEvent)
	took := time.Since(start)
	if !ok {
		b.Fatalf("transfer failed: %+v", bob.ev.Wait(b, time.Second, "end", fileEnd(id)))
	}
	alice.ev.Wait(b, wait, "alice hears", fileEnd(id))
	if p := bob.ev.Wait(b, wait, "link", func(e client.Event) bool {
		l, ok := e.(client.LinkEvent)
		return ok && l.State == "open"
	}).(client.LinkEvent); p.Path != wantPath {
		b.Fatalf("link path %q, want %q", p.Path, wantPath)
	}
	return took, got.File
}

// BenchmarkFileTransfer sends a 64 MiB file per op between two clients
// on loopback, direct and relayed through a local supernode (QUIC
// datagrams), and reports the rate from the offer's acceptance to the
// file checked and saved (MB/s), and the CPU both clients (and the
// supernode) spent per MB.
//
//	go test -run XXX -bench FileTransfer -benchtime 3x ./client/
func BenchmarkFileTransfer(b *testing.B) {
	for _, tc := range []struct {
		name    string
		relayed bool
	}{{"direct", false}, {"relayed", true}} {
		b.Run(tc.name, func(b *testing.B) {
			alice, bob := filePair(b, tc.relayed)
			src, sum := testutil.RandomFile(b, b.TempDir(), "bench.bin", benchFileSize)
			want := map[bool]string{false: "direct", true: "relay"}[tc.relayed]
			b.SetBytes(benchFileSize)
			b.ResetTimer()
			var took time.Duration
			var saved []string
			drops0 := udpDrops()
			cpu0 := dcbench.CPUTime()
			for i := 0; i < b.N; i++ {
				d, f := sendOneFile(b, alice, bob, src, want)
				took += d
				saved = append(saved, f)
			}
			reportRate(b, dcbench.Result{Bytes: int64(b.N) * benchFileSize, Elapsed: took, CPU: dcbench.CPUTime() - cpu0})
			b.ReportMetric(float64(udpDrops()-drops0)/float64(b.N), "udp-drops/op")
			b.StopTimer()
			for _, f := range saved {
				if h := testutil.FileSHA256(b, f); h != sum {
					b.Fatalf("received SHA-256 %s, sent %s", h, sum)
				}
				os.Remove(f)
			}
		})
	}
}

// BenchmarkChatDuringTransfer measures how long a chat message takes
// from Send to the peer's MessageEvent while a file runs on the same
// link at full speed (both clients in this process, one clock), beside
// the same with no transfer: 100 messages, one at a time, 10 ms apart.
// Reports the median, the 90th percentile and the slowest.
//
//	go test -run XXX -bench ChatDuringTransfer -benchtime 1x ./client/
func BenchmarkChatDuringTransfer(b *testing.B) {
	for _, busy := range []bool{false, true} {
		b.Run(map[bool]string{false: "idle", true: "transfer"}[busy], func(b *testing.B) {
			alice, bob := filePair(b, false)
			src, _ := testutil.RandomFile(b, b.TempDir(), "bench.bin", 4*benchFileSize)
			ctx := context.Background()
			var lat []time.Duration
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				var id string
				if busy {
					var err error
					if id, err = alice.SendFile(ctx, "bob", src); err != nil {
						b.Fatal(err)
					}
					bob.ev.Wait(b, wait, "bytes flow", func(e client.Event) bool {
						p, ok := e.(client.FileProgressEvent)
						return ok && p.ID == id && p.Bytes > 0
					})
				}
				for j := 0; j < 100; j++ {
					text := "ping " + strconv.Itoa(i) + " " + strconv.Itoa(j)
					start := time.Now()
					mark := bob.ev.Len()
					if _, err := alice.Send(ctx, "bob", text); err != nil {
						b.Fatal(err)
					}
					m := bob.ev.WaitSince(b, mark, wait, "ping", func(e client.Event) bool {
						m, ok := e.(client.MessageEvent)
						return ok && m.Text == text
					}).(client.MessageEvent)
					lat = append(lat, time.Since(start))
					if d := time.Since(start); d > 50*time.Millisecond && testing.Verbose() {
						b.Logf("ping %d took %v", j, d)
					}
					if m.Path != "direct" {
						b.Fatalf("ping went by %q", m.Path)
					}
					time.Sleep(10 * time.Millisecond)
				}
				if busy {
					if n := bob.ev.Count(fileEnd(id)); n != 0 {
						b.Logf("the transfer ended before the pings did: measure with a larger file")
					}
					bob.ev.Wait(b, 5*time.Minute, "file", fileEnd(id))
				}
			}
			b.StopTimer()
			sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
			ms := func(q float64) float64 {
				return float64(lat[min(len(lat)-1, int(q*float64(len(lat))))].Microseconds()) / 1000
			}
			b.ReportMetric(ms(0.5), "p50-ms")
			b.ReportMetric(ms(0.9), "p90-ms")
			b.ReportMetric(ms(1), "max-ms")
			b.ReportMetric(0, "ns/op")
		})
	}
}
