package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/audiogap"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
)

// startLabPeer is startPeer for benchmarks: a client signed in from home,
// auto-answering, without NAT discovery.
func startLabPeer(tb testing.TB, w *world, home *natlab.Home, name string, opts ...peerOpts) *peer {
	tb.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	cfg := client.Config{
		Server: w.sigURL, Name: name, Key: key,
		Dial:          home.Client.DialContext,
		SettingEngine: labICE(home),
		AutoAnswer:    true,
		StatsInterval: 250 * time.Millisecond,
	}
	for _, o := range opts {
		o(home, &cfg)
	}
	return launchPeer(tb, home, name, cfg)
}

// BenchmarkRelayedVoiceUnderLoss: a symmetric <-> symmetric call (which
// must relay) with both homes' links delayed 10 ms and losing 2 % or 5 %
// each way, carried by the supernode's relay stream alone or with
// ChannelData as QUIC datagrams. Each b.N is one second of call; run
// -benchtime 15x.
func BenchmarkRelayedVoiceUnderLoss(b *testing.B) {
	for _, loss := range []float64{0.02, 0.05} {
		for _, mode := range []string{"stream", "datagram"} {
			b.Run(fmt.Sprintf("loss=%.0f%%/%s", loss*100, mode), func(b *testing.B) { relayedVoice(b, loss, mode) })
		}
	}
}

func relayedVoice(b *testing.B, loss float64, mode string) {
	{
		{
			w := newWorld(b)
			startRelaySignal(b, w)
			host := w.lab.AddPublicHost("sn")
			sn := startLabSupernode(b, w, host, "sn1", host.Addrs[0])
			sn.WaitState(b, proto.SupernodePromoted, 30*time.Second)
			ha := w.lab.AddHome("va", natlab.Symmetric)
			hb := w.lab.AddHome("vb", natlab.Symmetric)
			for i, h := range []*natlab.Home{ha, hb} {
				w.lab.Impair(h, natlab.Impairment{Delay: 10 * time.Millisecond, Loss: loss, Seed: uint64(i + 1)})
			}
			sink := &audiogap.Recorder{}
			opts := func(home *natlab.Home, cfg *client.Config) {
				relayInHome(home, cfg)
				cfg.Relay.StreamsOnly = mode == "stream"
				cfg.NATReport = &proto.NATReport{Type: proto.NATSymmetric} // warm at once
			}
			alice := startLabPeer(b, w, ha, "alice", opts, func(_ *natlab.Home, cfg *client.Config) {
				cfg.AudioSink = func(string) (client.AudioSink, error) { return sink, nil }
			})
			startLabPeer(b, w, hb, "bob", opts)
			alice.ev.Wait(b, 20*time.Second, "alice sees bob", func(s stamped) bool { return isOnline("bob")(s.ev) })
			if err := alice.Call(context.Background(), "bob"); err != nil {
				b.Fatal(err)
			}
			ce := alice.ev.Wait(b, 30*time.Second, "call settles", func(s stamped) bool { return callSettled("bob")(s.ev) }).ev.(client.CallEvent)
			if ce.State != client.CallConnected || ce.Path != "relay" {
				b.Fatalf("call %+v, want relayed", ce)
			}
			time.Sleep(time.Second) // past the start of media
			from := time.Now()
			b.ResetTimer()
			time.Sleep(time.Duration(b.N) * time.Second)
			b.StopTimer()
			p50, p99, unusable, n := sink.Quality(from, time.Now(), 60*time.Millisecond)
			b.ReportMetric(float64(p50)/1e6, "p50-late-ms")
			b.ReportMetric(float64(p99)/1e6, "p99-late-ms")
			b.ReportMetric(unusable, "late-or-lost-%")
			b.ReportMetric(float64(n), "packets")
			st := sn.Stats()
			b.Logf("%s: %d packets at alice from bob, %d datagrams in / %d out at the supernode", mode, n, st.DatagramsIn, st.DatagramsOut)
		}
	}
}
