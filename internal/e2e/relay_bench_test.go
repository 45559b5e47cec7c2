package e2e

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
	"github.com/pion/rtp"
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

// arrivals is an AudioSink that records when each RTP packet arrived.
type arrivals struct {
	mu   sync.Mutex // guards the fields below
	on   bool
	ssrc uint32
	pt   map[uint8]int
	pkts []arrival
}

func (a *arrivals) start() {
	a.mu.Lock()
	a.on = true
	a.mu.Unlock()
}

type arrival struct {
	seq uint16
	ts  uint32
	at  time.Time
}

func (a *arrivals) WriteRTP(p *rtp.Packet) error {
	now := time.Now()
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.pt == nil {
		a.pt = map[uint8]int{}
	}
	a.pt[p.PayloadType]++
	if !a.on {
		return nil
	}
	if a.ssrc == 0 {
		a.ssrc = p.SSRC
	}
	if p.SSRC == a.ssrc {
		a.pkts = append(a.pkts, arrival{p.SequenceNumber, p.Timestamp, now})
	}
	return nil
}

func (a *arrivals) Close() error { return nil }

// voiceQuality turns arrivals into what a listener gets: each packet's
// lateness against the stream's own clock (48 kHz RTP timestamps, anchored
// at the earliest packet), p50/p99 of it, and the share of the packets
// sent in that span that were lost or later than a 60 ms jitter buffer.
func (a *arrivals) voiceQuality() (p50, p99 time.Duration, unusable float64, n int) {
	a.mu.Lock()
	pk := append([]arrival(nil), a.pkts...)
	a.mu.Unlock()
	if len(pk) < 10 {
		return 0, 0, 100, len(pk)
	}
	// Offset of each packet: arrival minus its media time; the smallest
	// is the path delay, everything above it is lateness.
	off := make([]time.Duration, len(pk))
	minOff := time.Duration(1<<62 - 1)
	for i, p := range pk {
		media := time.Duration(int64(p.ts-pk[0].ts)) * time.Second / 48000
		off[i] = p.at.Sub(pk[0].at) - media
		minOff = min(minOff, off[i])
	}
	late := make([]time.Duration, len(pk))
	bad := 0
	seen := map[uint16]bool{}
	lo, hi := pk[0].seq, pk[0].seq
	for i := range pk {
		late[i] = off[i] - minOff
		if late[i] > 60*time.Millisecond {
			bad++
		}
		seen[pk[i].seq] = true
		if int16(pk[i].seq-lo) < 0 {
			lo = pk[i].seq
		}
		if int16(pk[i].seq-hi) > 0 {
			hi = pk[i].seq
		}
	}
	sent := int(uint16(hi-lo)) + 1
	bad += sent - len(seen)
	sort.Slice(late, func(i, j int) bool { return late[i] < late[j] })
	return late[len(late)/2], late[len(late)*99/100], float64(bad) / float64(sent) * 100, sent
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
			sink := &arrivals{}
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
			sink.start()
			b.ResetTimer()
			time.Sleep(time.Duration(b.N) * time.Second)
			b.StopTimer()
			p50, p99, unusable, n := sink.voiceQuality()
			b.ReportMetric(float64(p50)/1e6, "p50-late-ms")
			b.ReportMetric(float64(p99)/1e6, "p99-late-ms")
			b.ReportMetric(unusable, "late-or-lost-%")
			b.ReportMetric(float64(n), "packets")
			st := sn.Stats()
			sink.mu.Lock()
			b.Logf("%s: %d packets at alice from bob (payload types %v), %d datagrams in / %d out at the supernode", mode, n, sink.pt, st.DatagramsIn, st.DatagramsOut)
			sink.mu.Unlock()
		}
	}
}
