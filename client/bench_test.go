package client_test

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sort"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

// BenchmarkCallSetup measures, on loopback, from Call to (a) the chat data
// channel being open (the first message can go peer to peer) and (b) the
// first RTP packet received by the caller, for a pair of clients with no
// peer connection yet. Sign-in is outside the timer.
func BenchmarkCallSetup(b *testing.B) {
	srv := signaltest.Start(b, signal.Config{})
	var dcOpen, firstRTP []time.Duration
	b.ReportAllocs()
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		a, aev, stopA := benchClient(b, srv.URL, fmt.Sprintf("a%d", i), false)
		_, bev, stopB := benchClient(b, srv.URL, fmt.Sprintf("b%d", i), true)
		bname := fmt.Sprintf("b%d", i)
		aev.Wait(b, 10*time.Second, "presence", func(e client.Event) bool {
			p, ok := e.(client.PresenceEvent)
			return ok && p.Name == bname && p.Online()
		})
		_ = bev
		b.StartTimer()
		start := time.Now()
		if err := a.Call(context.Background(), bname); err != nil {
			b.Fatal(err)
		}
		aev.Wait(b, 10*time.Second, "dc open", func(e client.Event) bool {
			l, ok := e.(client.LinkEvent)
			return ok && l.State == "open"
		})
		dcOpen = append(dcOpen, time.Since(start))
		aev.Wait(b, 10*time.Second, "first audio", func(e client.Event) bool {
			_, ok := e.(client.AudioEvent)
			return ok
		})
		firstRTP = append(firstRTP, time.Since(start))
		b.StopTimer()
		stopA()
		stopB()
	}
	b.ReportMetric(msMedian(dcOpen), "ms-to-datachannel")
	b.ReportMetric(msMedian(firstRTP), "ms-to-first-rtp")
	b.ReportMetric(0, "ns/op")
}

func msMedian(d []time.Duration) float64 {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return float64(s[len(s)/2].Microseconds()) / 1000
}

func benchClient(b *testing.B, url, name string, autoAnswer bool) (*client.Client, *testutil.Recorder[client.Event], func()) {
	_, key, _ := ed25519.GenerateKey(nil)
	c, err := client.New(client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly, AutoAnswer: autoAnswer})
	if err != nil {
		b.Fatal(err)
	}
	rec := testutil.Record(c.Events())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(ctx); close(done) }()
	return c, rec, func() { cancel(); <-done }
}
