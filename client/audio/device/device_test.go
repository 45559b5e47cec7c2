//go:build audiodevice

package device

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/internal/testutil"
)

// The tests here open real miniaudio devices on its Null backend: virtual
// devices, paced by miniaudio's own timer, that need no sound card.
var null = Options{Backend: "null"}

// waitFor polls cond until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	testutil.Eventually(t, d, what, cond)
}

func TestOpenErrors(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		opts Options
		want error
	}{
		{"unknown backend", Options{Backend: "nosuch"}, ErrUnknownBackend},
		{"bad options", Options{Backend: "null", Bitrate: 1}, ErrBadOptions},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if c, err := OpenCapture(ctx, tc.opts); !errors.Is(err, tc.want) || c != nil {
				t.Fatalf("OpenCapture: %v, %v; want %v", c, err, tc.want)
			}
			if s, err := OpenPlayback(tc.opts); !errors.Is(err, tc.want) || s != nil {
				t.Fatalf("OpenPlayback: %v, %v; want %v", s, err, tc.want)
			}
		})
	}
	if err := Available(); err != nil {
		t.Fatalf("Available with the audiodevice tag: %v", err)
	}
}

// The default backend list never falls back to the null backend: a
// machine without sound gets an error, not a silent call.
func TestDefaultBackendsAreReal(t *testing.T) {
	list, err := backendList("")
	if err != nil || len(list) == 0 {
		t.Fatalf("backendList(\"\") = %v, %v", list, err)
	}
	for _, b := range list {
		if b == backendNull || b == backendNull-1 /* ma_backend_custom */ {
			t.Fatalf("default list %v includes the null or custom backend", list)
		}
	}
	if l, err := backendList("NULL"); err != nil || len(l) != 1 || l[0] != backendNull {
		t.Fatalf("backendList(NULL) = %v, %v", l, err)
	}
}

// TestCaptureDevice: the null input device yields 20 ms Opus packets at
// real-time pace, and cancelling the context releases it.
func TestCaptureDevice(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c, err := OpenCapture(ctx, null)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const warmup, measured = 5, 40
	var total time.Duration
	var start time.Time
	for i := range warmup + measured {
		if i == warmup {
			start = time.Now()
		}
		p, dur, err := c.Next()
		if err != nil {
			t.Fatalf("packet %d: %v", i, err)
		}
		d, err := audio.PacketDuration(p)
		if err != nil || d != FrameLength || dur != FrameLength {
			t.Fatalf("packet %d: %d bytes, TOC duration %v (%v), Next said %v; want 20ms", i, len(p), d, err, dur)
		}
		if i >= warmup {
			total += dur
		}
	}
	elapsed := time.Since(start)
	// 40 frames are 800 ms of audio; the device cannot record them faster
	// than real time (less what the queue held at the start).
	if elapsed < total-200*time.Millisecond || elapsed > total+400*time.Millisecond {
		t.Fatalf("%v of audio took %v", total, elapsed)
	}
	t.Logf("%d packets, %v of audio in %v", measured, total, elapsed)
	if s := c.Stats(); s.Encoded != warmup+measured || s.Frames < s.Encoded {
		t.Fatalf("stats %+v", s)
	}
	cancel()
	done := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.Next(); err != nil {
				done <- err
				return
			}
		}
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Next after cancel: %v, want ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Next still returns packets after the context was cancelled")
	}
}

// TestCaptureDeviceSlowReader: nobody reads; the queue stays at its bound
// and old frames are dropped.
func TestCaptureDeviceSlowReader(t *testing.T) {
	opts := null
	opts.Queue = 60 * time.Millisecond
	c, err := OpenCapture(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitFor(t, 5*time.Second, "frames dropped", func() bool { return c.Stats().Dropped >= 5 })
	if s := c.Stats(); s.Queued != 3 || s.Frames != s.Dropped+uint64(s.Queued) {
		t.Fatalf("stats %+v; want 3 queued and the rest dropped", s)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.Next(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Next after Close: %v", err)
	}
}

// TestPlaybackDevice: the null output device plays what WriteRTP decodes,
// through a gap, without errors, and the buffer stays bounded when packets
// come in a burst.
func TestPlaybackDevice(t *testing.T) {
	pkts := encodeFrames(t, sine(440, 0.5, 0, 150*FrameSamples))
	s, err := OpenPlayback(null)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// 1 s paced at real time in 100 ms bursts, packet 20 lost.
	seq := 0
	for burst := range 10 {
		for range 5 {
			if seq != 20 {
				if err := s.WriteRTP(rtpPacket(seq, pkts[seq])); err != nil {
					t.Fatalf("packet %d: %v", seq, err)
				}
			}
			seq++
		}
		want := uint64(burst * 5 * FrameSamples)
		waitFor(t, 5*time.Second, "device plays the buffer", func() bool { return s.Stats().Played >= want })
	}
	st := s.Stats()
	if st.Errors != 0 || st.Lost != 1 || st.Concealed != 1 || st.Decoded != 49 {
		t.Fatalf("stats %+v; want 49 decoded, 1 lost and concealed, no errors", st)
	}
	// A 2 s burst: the buffer holds at most its capacity.
	for ; seq < 150; seq++ {
		if err := s.WriteRTP(rtpPacket(seq, pkts[seq])); err != nil {
			t.Fatal(err)
		}
		if st := s.Stats(); st.Buffered > st.Capacity {
			t.Fatalf("packet %d: %d samples buffered, capacity %d", seq, st.Buffered, st.Capacity)
		}
	}
	st = s.Stats()
	if st.Overflow == 0 {
		t.Fatalf("a 2 s burst into a 300 ms buffer overflowed nothing: %+v", st)
	}
	played := st.Played
	waitFor(t, 5*time.Second, "device keeps playing", func() bool { return s.Stats().Played > played+uint64(FrameSamples) })
	t.Logf("stats %+v", s.Stats())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRTP(rtpPacket(seq, pkts[0])); !errors.Is(err, ErrClosed) {
		t.Fatalf("WriteRTP after Close: %v", err)
	}
}
