package client_test

import (
	"errors"
	"io"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/pion/webrtc/v4"
)

// The floor under file transfer: two bare pion peer connections on
// loopback, one reliable ordered data channel, the sender keeping the
// buffered amount between 1 and 4 MiB, the receiver counting bytes and
// doing nothing else. What Parley's transfers can reach is at most this.

// cpuTime is the CPU time this process has used (user and system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportRate reports MB/s and the CPU the process spent per MB (both
// ends of the transfer are in this process): on a shared machine the
// second says more than the first, and 2 cores / cpu-ms/MB bounds what
// an idle 2-core machine could reach.
func reportRate(b *testing.B, bytes int64, took, cpu time.Duration) {
	b.ReportMetric(float64(bytes)/took.Seconds()/1e6, "MB/s")
	b.ReportMetric(float64(cpu.Milliseconds())/(float64(bytes)/1e6), "cpu-ms/MB")
	b.ReportMetric(0, "ns/op")
}

// dcPair is two connected peer connections and the data channel
// between them.
type dcPair struct {
	a, b *webrtc.PeerConnection
	send *webrtc.DataChannel // on a
	recv *webrtc.DataChannel // on b
}

func newDCPair(tb testing.TB, mod func(*webrtc.SettingEngine)) *dcPair {
	tb.Helper()
	se := webrtc.SettingEngine{}
	client.LoopbackOnly(&se)
	if mod != nil {
		mod(&se)
	}
	api := webrtc.NewAPI(webrtc.WithSettingEngine(se))
	a, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		tb.Fatal(err)
	}
	b, err := api.NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		tb.Fatal(err)
	}
	p := &dcPair{a: a, b: b}
	tb.Cleanup(func() { a.Close(); b.Close() })
	got := make(chan *webrtc.DataChannel, 1)
	b.OnDataChannel(func(dc *webrtc.DataChannel) {
		dc.OnOpen(func() { got <- dc })
	})
	ordered := true
	p.send, err = a.CreateDataChannel("floor", &webrtc.DataChannelInit{Ordered: &ordered})
	if err != nil {
		tb.Fatal(err)
	}
	opened := make(chan struct{})
	p.send.OnOpen(func() { close(opened) })
	offer, err := a.CreateOffer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	gatherA := webrtc.GatheringCompletePromise(a)
	if err := a.SetLocalDescription(offer); err != nil {
		tb.Fatal(err)
	}
	<-gatherA
	if err := b.SetRemoteDescription(*a.LocalDescription()); err != nil {
		tb.Fatal(err)
	}
	answer, err := b.CreateAnswer(nil)
	if err != nil {
		tb.Fatal(err)
	}
	gatherB := webrtc.GatheringCompletePromise(b)
	if err := b.SetLocalDescription(answer); err != nil {
		tb.Fatal(err)
	}
	<-gatherB
	if err := a.SetRemoteDescription(*b.LocalDescription()); err != nil {
		tb.Fatal(err)
	}
	select {
	case p.recv = <-got:
	case <-time.After(20 * time.Second):
		tb.Fatal("data channel did not open")
	}
	select {
	case <-opened:
	case <-time.After(20 * time.Second):
		tb.Fatal("sender's data channel did not open")
	}
	return p
}

// sendPaced sends total bytes in chunk-sized messages on dc, waiting
// while more than high bytes are buffered until it drains to low.
func sendPaced(dc *webrtc.DataChannel, total int64, chunk int, low, high uint64) error {
	buf := make([]byte, chunk)
	drained := make(chan struct{}, 1)
	dc.SetBufferedAmountLowThreshold(low)
	dc.OnBufferedAmountLow(func() {
		select {
		case drained <- struct{}{}:
		default:
		}
	})
	for sent := int64(0); sent < total; sent += int64(chunk) {
		for dc.BufferedAmount() > high {
			select {
			case <-drained:
			case <-time.After(100 * time.Millisecond):
			}
		}
		if err := dc.Send(buf); err != nil {
			return err
		}
	}
	return nil
}

// BenchmarkDataChannelFloor sends 64 MiB per op over one pion data
// channel on loopback: the receiver takes messages in OnMessage (pion's
// callback, as Parley's chat does) or reads a detached channel, with the
// default or a larger SCTP receive buffer.
func BenchmarkDataChannelFloor(b *testing.B) {
	const total = 64 << 20
	for _, tc := range []struct {
		name     string
		detach   bool
		rcvBuf   uint32
		chunk    int
		low, hig uint64
	}{
		{"callback/64KiB", false, 0, 64 << 10, 1 << 20, 4 << 20},
		{"callback/64KiB/rcvbuf8M", false, 8 << 20, 64 << 10, 1 << 20, 4 << 20},
		{"callback/16KiB", false, 0, 16 << 10, 1 << 20, 4 << 20},
		{"detached/64KiB", true, 0, 64 << 10, 1 << 20, 4 << 20},
		{"detached/64KiB/rcvbuf8M", true, 8 << 20, 64 << 10, 1 << 20, 4 << 20},
	} {
		b.Run(tc.name, func(b *testing.B) {
			p := newDCPair(b, func(se *webrtc.SettingEngine) {
				if tc.detach {
					se.DetachDataChannels()
				}
				if tc.rcvBuf > 0 {
					se.SetSCTPMaxReceiveBufferSize(tc.rcvBuf)
				}
			})
			var got atomic.Int64
			want := int64(0)
			done := make(chan struct{}, 1)
			check := func() {
				if got.Load() >= want {
					select {
					case done <- struct{}{}:
					default:
					}
				}
			}
			if tc.detach {
				rw, err := p.recv.Detach()
				if err != nil {
					b.Fatal(err)
				}
				go func() {
					buf := make([]byte, 256<<10)
					for {
						n, err := rw.Read(buf)
						if err != nil {
							if !errors.Is(err, io.EOF) {
								return
							}
							return
						}
						got.Add(int64(n))
						check()
					}
				}()
				// The sender's side needs detaching too (pion: all or none);
				// Send on the DataChannel still works after it.
				if _, err := p.send.Detach(); err != nil {
					b.Fatal(err)
				}
			} else {
				p.recv.OnMessage(func(m webrtc.DataChannelMessage) {
					got.Add(int64(len(m.Data)))
					check()
				})
			}
			b.SetBytes(total)
			b.ResetTimer()
			start, cpu0 := time.Now(), cpuTime()
			for i := 0; i < b.N; i++ {
				want += total
				if err := sendPaced(p.send, total, tc.chunk, tc.low, tc.hig); err != nil {
					b.Fatal(err)
				}
				select {
				case <-done:
				case <-time.After(2 * time.Minute):
					b.Fatalf("received %d of %d bytes", got.Load(), want)
				}
				for got.Load() < want { // a stale signal from the previous op
					<-done
				}
			}
			reportRate(b, want, time.Since(start), cpuTime()-cpu0)
		})
	}
}
