//go:build audiodevice

package device

import (
	"testing"
	"time"
)

// FuzzWriteRTP feeds playback arbitrary packet streams: each packet is a
// sequence-number step byte, a length byte and that many payload bytes.
// Whatever arrives, WriteRTP must not panic, every packet is accounted
// for once, and the buffer stays within its capacity.
func FuzzWriteRTP(f *testing.F) {
	pkts := fuzzSeedPackets(f)
	var stream []byte
	for i, p := range pkts {
		step := byte(1)
		if i == 2 {
			step = 3 // a gap
		}
		stream = append(stream, step, byte(len(p)))
		stream = append(stream, p...)
	}
	f.Add(stream)
	f.Add([]byte{1, 3, 0xf8, 0xff, 0xfe, 0, 3, 0xf8, 0xff, 0xfe, 0xff, 1, 0xfb})
	f.Fuzz(func(t *testing.T, data []byte) {
		p, _, err := newPlayback(Options{Buffer: 100 * time.Millisecond, Prefill: 20 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		var seq uint16
		var sent, empty uint64
		out := make([]int16, 480)
		for len(data) >= 2 {
			seq += uint16(data[0])
			n := min(int(data[1]), len(data)-2)
			payload := data[2 : 2+n]
			data = data[2+n:]
			p.WriteRTP(rtpPacket(int(seq), payload))
			sent++
			if n == 0 {
				empty++
			}
			p.pull(out)
			if s := p.Stats(); s.Buffered > s.Capacity || s.Buffered < 0 {
				t.Fatalf("buffered %d of %d", s.Buffered, s.Capacity)
			}
		}
		s := p.Stats()
		if s.Packets != sent || s.Decoded+s.Errors+s.Late+empty != sent {
			t.Fatalf("%d packets (%d empty) but stats %+v", sent, empty, s)
		}
	})
}

// fuzzSeedPackets encodes 80 ms of a tone (few bytes: the fuzzer
// minimizes every new input, at a cost that grows with its square).
func fuzzSeedPackets(f *testing.F) [][]byte {
	c, _, err := newCapture(Options{})
	if err != nil {
		f.Fatal(err)
	}
	defer c.Close()
	var pkts [][]byte
	for i := range 4 {
		c.onData(nil, le16(sine(440, 0.5, i*FrameSamples, FrameSamples)), 0)
		p, _, err := c.Next()
		if err != nil {
			f.Fatal(err)
		}
		pkts = append(pkts, p)
	}
	return pkts
}
