//go:build audiodevice

package device

import (
	"math"
	"os"
	"testing"
	"time"

	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/pion/rtp"
)

func TestMain(m *testing.M) { os.Exit(testutil.VerifyNoLeaks(m)) }

// sine returns n samples of a sine of freq Hz with peak amplitude amp
// (0..1 of full scale), starting at sample start.
func sine(freq, amp float64, start, n int) []int16 {
	out := make([]int16, n)
	for i := range out {
		out[i] = int16(amp * 32767 * math.Sin(2*math.Pi*freq*float64(start+i)/SampleRate))
	}
	return out
}

func le16(pcm []int16) []byte {
	b := make([]byte, 2*len(pcm))
	putS16(b, pcm)
	return b
}

// goertzel returns the amplitude (0..1 of full scale) of the freq Hz
// component of x.
func goertzel(x []int16, freq float64) float64 {
	w := 2 * math.Pi * freq / SampleRate
	coeff := 2 * math.Cos(w)
	var s1, s2 float64
	for _, v := range x {
		s := float64(v)/32768 + coeff*s1 - s2
		s2, s1 = s1, s
	}
	power := s1*s1 + s2*s2 - coeff*s1*s2
	return 2 * math.Sqrt(math.Max(power, 0)) / float64(len(x))
}

// dominant scans 50..4000 Hz in 5 Hz steps for the strongest component.
func dominant(x []int16) (freq, amp float64) {
	for f := 50.0; f <= 4000; f += 5 {
		if a := goertzel(x, f); a > amp {
			freq, amp = f, a
		}
	}
	return freq, amp
}

func rms(x []int16) float64 {
	var sum float64
	for _, v := range x {
		sum += float64(v) / 32768 * float64(v) / 32768
	}
	return math.Sqrt(sum / float64(len(x)))
}

func db(ratio float64) float64 { return 20 * math.Log10(ratio) }

// encodeFrames runs frames of pcm through a capture's queue and encoder,
// as the device thread and the call's sender would, and returns the
// packets.
func encodeFrames(t *testing.T, pcm []int16) [][]byte {
	t.Helper()
	c, _, err := newCapture(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var pkts [][]byte
	for off := 0; off+FrameSamples <= len(pcm); off += FrameSamples {
		// Two 10 ms periods per frame, like the device delivers them.
		c.onData(nil, le16(pcm[off:off+FrameSamples/2]), 0)
		c.onData(nil, le16(pcm[off+FrameSamples/2:off+FrameSamples]), 0)
		p, dur, err := c.Next()
		if err != nil {
			t.Fatal(err)
		}
		if d, err := audio.PacketDuration(p); err != nil || d != FrameLength || dur != FrameLength {
			t.Fatalf("packet %d: duration %v (TOC says %v, %v); want 20ms", len(pkts), dur, d, err)
		}
		pkts = append(pkts, p)
	}
	if s := c.Stats(); s.Frames != uint64(len(pkts)) || s.Encoded != uint64(len(pkts)) || s.Dropped != 0 {
		t.Fatalf("capture stats %+v for %d packets", s, len(pkts))
	}
	return pkts
}

// drain pulls everything buffered in p, as the device thread would.
func drain(p *playback) []int16 {
	out := make([]int16, p.Stats().Buffered)
	p.pull(out)
	return out
}

func rtpPacket(seq int, payload []byte) *rtp.Packet {
	return &rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 111, SequenceNumber: uint16(seq),
		Timestamp: uint32(seq * FrameSamples)}, Payload: payload}
}

// TestOpusRoundTrip encodes a sine through the capture path, decodes it
// through the playback path, and checks that what comes out has the same
// pitch and level.
func TestOpusRoundTrip(t *testing.T) {
	cases := []struct {
		name      string
		freq, amp float64
	}{
		{"440 Hz at -6 dBFS", 440, 0.5},
		{"1 kHz at -12 dBFS", 1000, 0.25},
		{"300 Hz at -20 dBFS", 300, 0.1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := sine(tc.freq, tc.amp, 0, SampleRate) // 1 s
			pkts := encodeFrames(t, in)
			if len(pkts) != 50 {
				t.Fatalf("%d packets for 1 s, want 50", len(pkts))
			}
			p, _, err := newPlayback(Options{Buffer: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for i, pk := range pkts {
				if err := p.WriteRTP(rtpPacket(1000+i, pk)); err != nil {
					t.Fatal(err)
				}
			}
			out := drain(p)
			if len(out) != len(in) {
				t.Fatalf("decoded %d samples, want %d", len(out), len(in))
			}
			// Judge the second half: the encoder has settled by then.
			half := out[len(out)/2:]
			f, a := dominant(half)
			if math.Abs(f-tc.freq) > 5 {
				t.Fatalf("dominant frequency %.0f Hz, want %.0f Hz", f, tc.freq)
			}
			if d := db(a / tc.amp); math.Abs(d) > 2 {
				t.Fatalf("%.0f Hz amplitude %.3f, want %.3f (%.1f dB off)", f, a, tc.amp, d)
			}
			if d := db(rms(half) / (tc.amp / math.Sqrt2)); math.Abs(d) > 2 {
				t.Fatalf("RMS %.3f, want %.3f (%.1f dB off)", rms(half), tc.amp/math.Sqrt2, d)
			}
			t.Logf("out: %.0f Hz at %.3f (%+.2f dB), %d bytes/packet avg", f, a, db(a/tc.amp), avgLen(pkts))
		})
	}
}

func avgLen(pkts [][]byte) int {
	n := 0
	for _, p := range pkts {
		n += len(p)
	}
	return n / len(pkts)
}

// TestPlaybackGaps feeds packets with losses, a duplicate and a late packet:
// every lost frame is concealed so the timeline stays continuous, late
// packets are dropped, and the concealed audio is the tone, not silence.
func TestPlaybackGaps(t *testing.T) {
	in := sine(440, 0.5, 0, 60*FrameSamples)
	pkts := encodeFrames(t, in)
	cases := []struct {
		name          string
		skip          map[int]bool // packets never sent
		resend        []int        // packets sent again at the end (late)
		lost, late    uint64
		frames        int     // frames of audio in the buffer at the end
		checkConceal  int     // a concealed frame whose 440 Hz level to check; -1 none
		minDB         float64 // its least level relative to the input
		wantConcealed uint64
	}{
		{"no loss", nil, nil, 0, 0, 60, -1, 0, 0},
		// FEC rebuilds the lost frame from the next packet at full level
		// (PLC alone gives about -6 dB, then fades).
		{"one lost (FEC)", map[int]bool{20: true}, nil, 1, 0, 60, 20, -2, 1},
		{"three lost (PLC then FEC)", map[int]bool{30: true, 31: true, 32: true}, nil, 3, 0, 60, 30, -10, 3},
		{"duplicate and late", nil, []int{59, 10}, 0, 2, 60, -1, 0, 0},
		{"long gap is skipped past maxConceal", map[int]bool{10: true, 11: true, 12: true, 13: true, 14: true, 15: true, 16: true, 17: true},
			nil, 8, 0, 60 - 8 + maxConceal, -1, 0, maxConceal},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, _, err := newPlayback(Options{Buffer: 2 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			defer p.Close()
			for i, pk := range pkts {
				if tc.skip[i] {
					continue
				}
				// Sequence numbers wrap during the stream (RFC 3550 A.1).
				if err := p.WriteRTP(rtpPacket(65536-25+i, pk)); err != nil {
					t.Fatalf("packet %d: %v", i, err)
				}
			}
			for _, i := range tc.resend {
				if err := p.WriteRTP(rtpPacket(65536-25+i, pkts[i])); err != nil {
					t.Fatal(err)
				}
			}
			s := p.Stats()
			if s.Lost != tc.lost || s.Concealed != tc.wantConcealed || s.Late != tc.late || s.Errors != 0 {
				t.Fatalf("stats %+v; want lost %d, concealed %d, late %d", s, tc.lost, tc.wantConcealed, tc.late)
			}
			if s.Decoded != uint64(60-len(tc.skip)) {
				t.Fatalf("decoded %d, want %d", s.Decoded, 60-len(tc.skip))
			}
			out := drain(p)
			if len(out) != tc.frames*FrameSamples {
				t.Fatalf("%d samples buffered, want %d frames", len(out), tc.frames)
			}
			if tc.checkConceal >= 0 {
				fr := out[tc.checkConceal*FrameSamples : (tc.checkConceal+1)*FrameSamples]
				if a := goertzel(fr, 440); db(a/0.5) < tc.minDB {
					t.Fatalf("concealed frame %d: 440 Hz at %.3f (%.1f dB), want at least %.0f dB", tc.checkConceal, a, db(a/0.5), tc.minDB)
				}
			}
		})
	}
}

func TestPlaybackBadInput(t *testing.T) {
	p, _, err := newPlayback(Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if err := p.WriteRTP(nil); err == nil {
		t.Fatal("nil packet accepted")
	}
	if err := p.WriteRTP(rtpPacket(1, nil)); err != nil {
		t.Fatalf("empty payload: %v", err)
	}
	// Code 3 packet claiming 63 frames of 20 ms: invalid (RFC 6716 3.2.5).
	err = p.WriteRTP(rtpPacket(2, []byte{0xfb, 0x3f, 0x00}))
	if err == nil {
		t.Fatal("corrupt packet decoded")
	}
	if s := p.Stats(); s.Errors != 1 || s.Buffered != FrameSamples {
		t.Fatalf("after a corrupt packet: %+v; want 1 error and one concealed frame buffered", s)
	}
	for i := range 200 { // random garbage never panics
		payload := make([]byte, 1+i%40)
		for j := range payload {
			payload[j] = byte(i*31 + j*17)
		}
		p.WriteRTP(rtpPacket(3+i, payload))
	}
	if s := p.Stats(); s.Buffered > s.Capacity {
		t.Fatalf("buffer %d over capacity %d", s.Buffered, s.Capacity)
	}
	p.Close()
	if err := p.WriteRTP(rtpPacket(500, []byte{0xf8, 0xff, 0xfe})); err != ErrClosed {
		t.Fatalf("after Close: %v, want ErrClosed", err)
	}
}

// TestPlaybackBounded: packets arriving faster than they are played never
// grow the buffer past its capacity; the oldest audio is dropped.
func TestPlaybackBounded(t *testing.T) {
	pkts := encodeFrames(t, sine(440, 0.5, 0, 100*FrameSamples))
	p, _, err := newPlayback(Options{Buffer: 200 * time.Millisecond, Prefill: 40 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	for i, pk := range pkts {
		if err := p.WriteRTP(rtpPacket(i, pk)); err != nil {
			t.Fatal(err)
		}
		if s := p.Stats(); s.Buffered > s.Capacity {
			t.Fatalf("packet %d: %d samples buffered, capacity %d", i, s.Buffered, s.Capacity)
		}
	}
	s := p.Stats()
	if s.Capacity != 9600 || s.Buffered != s.Capacity || s.Overflow != uint64(100*FrameSamples-s.Capacity) {
		t.Fatalf("stats %+v; want full 9600-sample buffer and the rest overflowed", s)
	}
	// Playback takes the newest audio and then, dry, plays silence until
	// the prefill depth is back.
	out := make([]int16, 12000)
	p.pull(out)
	if s := p.Stats(); s.Played != 9600 || s.Silence != 2400 || s.Underruns != 1 {
		t.Fatalf("after pulling 12000: %+v", s)
	}
	if r := rms(out[9600:]); r != 0 {
		t.Fatalf("underrun tail RMS %v, want silence", r)
	}
	p.WriteRTP(rtpPacket(100, pkts[0]))
	p.pull(out[:100])
	if s := p.Stats(); s.Played != 9600 {
		t.Fatalf("played %d before prefill (1 frame < 40 ms) was back", s.Played)
	}
	p.WriteRTP(rtpPacket(101, pkts[1]))
	p.pull(out[:100])
	if s := p.Stats(); s.Played != 9700 {
		t.Fatalf("played %d, want 9700 once 40 ms were buffered", s.Played)
	}
}

// TestCaptureQueueDropsOldest: a reader that falls behind gets the newest
// frames; the queue never grows past its bound.
func TestCaptureQueueDropsOldest(t *testing.T) {
	c, _, err := newCapture(Options{Queue: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	frame := make([]int16, FrameSamples)
	for i := range 30 {
		for j := range frame {
			frame[j] = int16(i) // frame i is the constant i
		}
		c.onData(nil, le16(frame), 0)
		if s := c.Stats(); s.Queued > 5 {
			t.Fatalf("frame %d: %d queued, bound 5", i, s.Queued)
		}
	}
	s := c.Stats()
	if s.Frames != 30 || s.Dropped != 25 || s.Queued != 5 {
		t.Fatalf("stats %+v; want 30 frames, 25 dropped, 5 queued", s)
	}
	if oldest := c.frames[c.head][0]; oldest != 25 {
		t.Fatalf("oldest queued frame is %d, want 25", oldest)
	}
	for range 5 {
		if _, _, err := c.Next(); err != nil {
			t.Fatal(err)
		}
	}
	// A partial period carries over into the next frame.
	c.onData(nil, le16(frame[:FrameSamples-1]), 0)
	if s := c.Stats(); s.Queued != 0 || s.Frames != 30 {
		t.Fatalf("after 959 samples: %+v", s)
	}
	c.onData(nil, le16(frame[:3]), 0)
	if s := c.Stats(); s.Queued != 1 || s.Frames != 31 {
		t.Fatalf("after 962 samples: %+v", s)
	}
	// Close wakes a waiting reader.
	c.Next()
	got := make(chan error, 1)
	go func() { _, _, err := c.Next(); got <- err }()
	c.Close()
	select {
	case err := <-got:
		if err != ErrClosed {
			t.Fatalf("Next after Close: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still blocked after Close")
	}
}
