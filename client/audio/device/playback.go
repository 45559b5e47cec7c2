//go:build audiodevice

package device

import (
	"fmt"
	"log/slog"
	"sync"

	"github.com/gen2brain/malgo"
	"github.com/pion/rtp"
	"gopkg.in/hraban/opus.v2"
)

// maxConceal bounds how many lost frames one gap is filled with; a longer
// gap (the sender paused, or restarted its sequence) is skipped rather than
// filled with seconds of concealment that would only overflow the buffer.
const maxConceal = 5

// maxFrameSamples is the longest Opus packet, 120 ms (RFC 6716 section
// 3.2.5), in samples.
const maxFrameSamples = SampleRate * 120 / 1000

// playback decodes RTP packets into a bounded buffer that the device
// thread plays.
type playback struct {
	log       *slog.Logger
	mctx      *malgo.AllocatedContext
	dev       *malgo.Device
	closeOnce sync.Once

	decMu   sync.Mutex // guards the fields below (one WriteRTP at a time)
	dec     *opus.Decoder
	pcm     []int16 // decoder output
	haveSeq bool
	lastSeq uint16
	lastDur int // samples in the last packet decoded

	mu      sync.Mutex // guards the fields below
	buf     []int16    // ring of decoded samples
	r, n    int        // read index and samples buffered
	prefill int        // samples to gather before playing
	playing bool       // false while (re)filling to prefill
	err     error      // why WriteRTP fails from now on; nil while open
	stats   PlaybackStats
}

// OpenPlayback opens the default output device (of opts.Backend) and
// returns a sink that decodes Opus RTP packets into a jitter buffer the
// device plays. Close releases the device.
func OpenPlayback(opts Options) (Sink, error) {
	p, o, err := newPlayback(opts)
	if err != nil {
		return nil, err
	}
	p.mctx, p.dev, err = openDevice(o, malgo.Playback, p.onData, p.onStop)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// newPlayback builds everything but the device.
func newPlayback(opts Options) (*playback, Options, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, o, err
	}
	dec, err := opus.NewDecoder(SampleRate, 1)
	if err != nil {
		return nil, o, fmt.Errorf("device: opus decoder: %w", err)
	}
	buf := make([]int16, samples(o.Buffer))
	p := &playback{
		log:     o.Logger,
		dec:     dec,
		pcm:     make([]int16, maxFrameSamples),
		lastDur: FrameSamples,
		buf:     buf,
		prefill: samples(o.Prefill),
	}
	p.stats.Capacity = len(buf)
	return p, o, nil
}

// WriteRTP decodes one Opus RTP packet (RFC 7587) into the buffer. A gap
// in the sequence numbers is filled first: the frame just before this
// packet from its in-band FEC data (RFC 6716 section 2.1.7), earlier ones
// by packet-loss concealment. Duplicate and late packets are dropped: their
// time has been filled already.
func (p *playback) WriteRTP(pkt *rtp.Packet) error {
	if pkt == nil {
		return fmt.Errorf("%w: nil packet", ErrBadPacket)
	}
	p.mu.Lock()
	err := p.err
	p.stats.Packets++
	p.mu.Unlock()
	if err != nil {
		return err
	}
	if len(pkt.Payload) == 0 {
		return nil // padding only: nothing to play
	}
	p.decMu.Lock()
	defer p.decMu.Unlock()
	var lost int
	if p.haveSeq {
		// RFC 3550 appendix A.1: sequence numbers compare modulo 2^16.
		d := int(int16(pkt.SequenceNumber - p.lastSeq))
		if d <= 0 {
			p.count(func(s *PlaybackStats) { s.Late++ })
			return nil
		}
		lost = d - 1
	}
	p.haveSeq, p.lastSeq = true, pkt.SequenceNumber
	if lost > 0 {
		p.conceal(lost, pkt.Payload)
	}
	n, err := p.dec.Decode(pkt.Payload, p.pcm)
	if err != nil {
		// Keep time running: play concealment where this frame was.
		p.count(func(s *PlaybackStats) { s.Errors++ })
		if perr := p.dec.DecodePLC(p.pcm[:p.lastDur:p.lastDur]); perr == nil {
			p.push(p.pcm[:p.lastDur])
		}
		return fmt.Errorf("device: decode packet %d: %w", pkt.SequenceNumber, err)
	}
	p.lastDur = n
	p.push(p.pcm[:n])
	p.count(func(s *PlaybackStats) { s.Decoded++ })
	return nil
}

// conceal fills up to maxConceal of lost frames before next: PLC for all
// but the last, which next's FEC data rebuilds (libopus falls back to PLC
// when next carries none). Concealed frames take the last frame's length.
func (p *playback) conceal(lost int, next []byte) {
	fill := min(lost, maxConceal)
	frame := p.pcm[:p.lastDur:p.lastDur] // the decoder wants exactly the missing length
	done := 0
	for i := range fill {
		var err error
		if i == fill-1 {
			err = p.dec.DecodeFEC(next, frame)
		} else {
			err = p.dec.DecodePLC(frame)
		}
		if err != nil {
			break
		}
		p.push(frame)
		done++
	}
	p.count(func(s *PlaybackStats) { s.Lost += uint64(lost); s.Concealed += uint64(done) })
}

// push appends decoded samples, dropping the oldest when the buffer is
// full so that latency stays bounded.
func (p *playback) push(pcm []int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(pcm) > len(p.buf) {
		p.stats.Overflow += uint64(len(pcm) - len(p.buf))
		pcm = pcm[len(pcm)-len(p.buf):]
	}
	if over := p.n + len(pcm) - len(p.buf); over > 0 {
		p.r = (p.r + over) % len(p.buf)
		p.n -= over
		p.stats.Overflow += uint64(over)
	}
	w := (p.r + p.n) % len(p.buf)
	k := copy(p.buf[w:], pcm)
	copy(p.buf, pcm[k:])
	p.n += len(pcm)
}

// pull fills out with buffered samples, or silence while the buffer
// (re)fills to the prefill depth; it never blocks.
func (p *playback) pull(out []int16) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.playing && p.n >= max(p.prefill, 1) {
		p.playing = true
	}
	took := 0
	if p.playing {
		took = min(len(out), p.n)
		k := copy(out[:took], p.buf[p.r:min(p.r+took, len(p.buf))])
		copy(out[k:took], p.buf)
		p.r = (p.r + took) % len(p.buf)
		p.n -= took
		p.stats.Played += uint64(took)
		if took < len(out) {
			p.playing = false
			p.stats.Underruns++
		}
	}
	clear(out[took:])
	p.stats.Silence += uint64(len(out) - took)
}

// onData runs on the device's thread for each period to play.
func (p *playback) onData(out, _ []byte, _ uint32) {
	var tmp [1024]int16
	for len(out) >= 2 {
		k := min(len(tmp), len(out)/2)
		p.pull(tmp[:k])
		putS16(out, tmp[:k])
		out = out[2*k:]
	}
}

// onStop runs when the device stops: by Close, or because the sound
// system stopped it; WriteRTP then returns ErrStopped.
func (p *playback) onStop() {
	if p.fail(ErrStopped) {
		p.log.Warn("device: output device stopped by the sound system")
	}
}

// fail makes WriteRTP return err from now on; it reports whether err was
// the first reason.
func (p *playback) fail(err error) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	first := p.err == nil
	if first {
		p.err = err
	}
	return first
}

func (p *playback) count(f func(*PlaybackStats)) {
	p.mu.Lock()
	f(&p.stats)
	p.mu.Unlock()
}

// Stats returns the counters.
func (p *playback) Stats() PlaybackStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Buffered = p.n
	return s
}

// Close releases the device; WriteRTP then returns ErrClosed. Closing twice
// is harmless.
func (p *playback) Close() error {
	p.closeOnce.Do(func() {
		p.fail(ErrClosed)
		if p.dev != nil {
			closeDevice(p.mctx, p.dev)
		}
		s := p.Stats()
		p.log.Info("device: output closed", "packets", s.Packets, "decoded", s.Decoded,
			"lost", s.Lost, "concealed", s.Concealed, "underruns", s.Underruns, "overflow", s.Overflow)
	})
	return nil
}
