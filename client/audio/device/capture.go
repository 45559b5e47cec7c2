//go:build audiodevice

package device

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/gen2brain/malgo"
	"gopkg.in/hraban/opus.v2"
)

// maxOpusPacket is the largest Opus packet of one frame (RFC 6716 section
// 3.2.1: a frame is at most 1275 bytes) plus its TOC byte and lengths.
const maxOpusPacket = 1500

// capture records frames into a bounded queue from the device thread and
// encodes them as Next asks.
type capture struct {
	log       *slog.Logger
	stopAfter func() bool // unregisters the context's AfterFunc
	mctx      *malgo.AllocatedContext
	dev       *malgo.Device
	closeOnce sync.Once

	nextMu sync.Mutex // guards the fields below (one Next at a time)
	enc    *opus.Encoder
	pcm    []int16 // the frame being encoded
	out    []byte  // encoder output

	ready chan struct{} // a token after each queued frame and on close

	mu      sync.Mutex // guards the fields below
	frames  [][]int16  // ring of queued frames, preallocated
	head    int        // oldest queued frame
	count   int        // frames queued
	partial []int16    // the frame being recorded
	fill    int        // samples in partial
	err     error      // why Next fails from now on; nil while open
	stats   CaptureStats
}

// OpenCapture opens the default input device (of opts.Backend) and returns
// a source of 20 ms mono Opus packets encoded with the VoIP application
// (RFC 6716 section 2.1.1), in-band FEC on. The device is released by Close
// or when ctx is done; Next then returns ErrClosed.
func OpenCapture(ctx context.Context, opts Options) (Capture, error) {
	c, o, err := newCapture(opts)
	if err != nil {
		return nil, err
	}
	c.mctx, c.dev, err = openDevice(o, malgo.Capture, c.onData, c.onStop)
	if err != nil {
		return nil, err
	}
	c.stopAfter = context.AfterFunc(ctx, func() { c.Close() })
	return c, nil
}

// newCapture builds everything but the device.
func newCapture(opts Options) (*capture, Options, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, o, err
	}
	enc, err := opus.NewEncoder(SampleRate, 1, opus.AppVoIP)
	if err != nil {
		return nil, o, fmt.Errorf("device: opus encoder: %w", err)
	}
	// In-band FEC (RFC 6716 section 2.1.7) lets the receiver rebuild a lost
	// frame from the next packet; the encoder adds it only when told to
	// expect loss.
	for _, set := range []func() error{
		func() error { return enc.SetBitrate(o.Bitrate) },
		func() error { return enc.SetInBandFEC(true) },
		func() error { return enc.SetPacketLossPerc(10) },
	} {
		if err := set(); err != nil {
			return nil, o, fmt.Errorf("device: configure opus encoder: %w", err)
		}
	}
	n := max(1, int(o.Queue/FrameLength))
	c := &capture{
		log:     o.Logger,
		enc:     enc,
		pcm:     make([]int16, FrameSamples),
		out:     make([]byte, maxOpusPacket),
		ready:   make(chan struct{}, 1),
		frames:  make([][]int16, n),
		partial: make([]int16, FrameSamples),
	}
	for i := range c.frames {
		c.frames[i] = make([]int16, FrameSamples)
	}
	return c, o, nil
}

// onData runs on the device's thread with each period of recorded
// samples. It must not block: it copies into preallocated frames and drops
// the oldest frame when the queue is full.
func (c *capture) onData(_, in []byte, _ uint32) {
	c.mu.Lock()
	queued := false
	for len(in) >= 2 && c.err == nil {
		k := s16(c.partial[c.fill:], in)
		c.fill += k
		in = in[2*k:]
		if c.fill < FrameSamples {
			break
		}
		c.fill = 0
		c.stats.Frames++
		if c.count == len(c.frames) {
			c.head = (c.head + 1) % len(c.frames)
			c.count--
			c.stats.Dropped++
		}
		copy(c.frames[(c.head+c.count)%len(c.frames)], c.partial)
		c.count++
		queued = true
	}
	c.mu.Unlock()
	if queued {
		c.wake()
	}
}

// onStop runs when the device stops: by Close, or because the sound
// system stopped it.
func (c *capture) onStop() {
	if c.fail(ErrStopped) {
		c.log.Warn("device: input device stopped by the sound system")
	}
}

// fail makes Next return err from now on; it reports whether err was the
// first reason.
func (c *capture) fail(err error) bool {
	c.mu.Lock()
	first := c.err == nil
	if first {
		c.err = err
	}
	c.mu.Unlock()
	c.wake()
	return first
}

func (c *capture) wake() {
	select {
	case c.ready <- struct{}{}:
	default:
	}
}

// Next returns the oldest recorded frame, Opus-encoded, waiting for one if
// none is queued. After Close (or the device stopping) it returns the
// reason.
func (c *capture) Next() ([]byte, time.Duration, error) {
	c.nextMu.Lock()
	defer c.nextMu.Unlock()
	for {
		c.mu.Lock()
		if c.err != nil {
			err := c.err
			c.mu.Unlock()
			return nil, 0, err
		}
		if c.count > 0 {
			copy(c.pcm, c.frames[c.head])
			c.head = (c.head + 1) % len(c.frames)
			c.count--
			c.mu.Unlock()
			break
		}
		c.mu.Unlock()
		<-c.ready
	}
	n, err := c.enc.Encode(c.pcm, c.out)
	if err != nil {
		return nil, 0, fmt.Errorf("device: opus encode: %w", err)
	}
	c.mu.Lock()
	c.stats.Encoded++
	c.mu.Unlock()
	return append([]byte(nil), c.out[:n]...), FrameLength, nil
}

// Stats returns the counters.
func (c *capture) Stats() CaptureStats {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.stats
	s.Queued = c.count
	return s
}

// Close releases the device; a Next waiting returns ErrClosed. Closing
// twice is harmless.
func (c *capture) Close() error {
	c.closeOnce.Do(func() {
		c.fail(ErrClosed)
		if c.stopAfter != nil {
			c.stopAfter()
		}
		if c.dev != nil {
			closeDevice(c.mctx, c.dev)
		}
		s := c.Stats()
		c.log.Info("device: input closed", "frames", s.Frames, "encoded", s.Encoded, "dropped", s.Dropped)
	})
	return nil
}
