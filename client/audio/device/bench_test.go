//go:build audiodevice

package device

import (
	"testing"
	"time"
)

// The device thread's callbacks run in real time: they must not allocate.
func TestCallbacksDoNotAllocate(t *testing.T) {
	c, _, err := newCapture(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	period := le16(sine(440, 0.5, 0, FrameSamples/2))
	if n := testing.AllocsPerRun(200, func() { c.onData(nil, period, 0) }); n != 0 {
		t.Errorf("capture onData: %v allocs per period", n)
	}
	p, _, err := newPlayback(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	pkts := encodeFrames(t, sine(440, 0.5, 0, 10*FrameSamples))
	for i, pk := range pkts {
		p.WriteRTP(rtpPacket(i, pk))
	}
	out := make([]byte, 2*FrameSamples/2)
	if n := testing.AllocsPerRun(200, func() { p.onData(out, nil, 0) }); n != 0 {
		t.Errorf("playback onData: %v allocs per period", n)
	}
}

// BenchmarkCaptureFrame: one 20 ms frame through the capture queue and the
// Opus encoder, the work behind each Next.
func BenchmarkCaptureFrame(b *testing.B) {
	c, _, err := newCapture(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	var frames [50][]byte
	for i := range frames {
		frames[i] = le16(sine(440, 0.5, i*FrameSamples, FrameSamples))
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		c.onData(nil, frames[i%len(frames)], 0)
		if _, _, err := c.Next(); err != nil {
			b.Fatal(err)
		}
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(per.Seconds()*1e6, "us/frame")
	b.ReportMetric(float64(FrameLength)/float64(per), "x-realtime")
}

// BenchmarkPlaybackPacket: one 20 ms packet decoded into the buffer and
// pulled out by the device callback.
func BenchmarkPlaybackPacket(b *testing.B) {
	var in []int16
	for i := range 50 {
		in = append(in, sine(440, 0.5, i*FrameSamples, FrameSamples)...)
	}
	c, _, err := newCapture(Options{})
	if err != nil {
		b.Fatal(err)
	}
	var pkts [][]byte
	for off := 0; off < len(in); off += FrameSamples {
		c.onData(nil, le16(in[off:off+FrameSamples]), 0)
		p, _, err := c.Next()
		if err != nil {
			b.Fatal(err)
		}
		pkts = append(pkts, p)
	}
	c.Close()
	p, _, err := newPlayback(Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer p.Close()
	out := make([]byte, 2*FrameSamples)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 0; b.Loop(); i++ {
		if err := p.WriteRTP(rtpPacket(i, pkts[i%len(pkts)])); err != nil {
			b.Fatal(err)
		}
		p.onData(out, nil, 0)
	}
	per := time.Since(start) / time.Duration(b.N)
	b.ReportMetric(per.Seconds()*1e6, "us/packet")
	b.ReportMetric(float64(FrameLength)/float64(per), "x-realtime")
}
