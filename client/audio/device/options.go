package device

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/parley-voice/parley/client/audio"
	"github.com/pion/rtp"
)

// Audio format on both sides: Opus at 48 kHz (RFC 7587 section 4: the RTP
// clock of Opus is always 48 kHz), mono, 20 ms frames.
const (
	SampleRate  = 48000
	FrameLength = 20 * time.Millisecond
	// FrameSamples is the number of samples in one frame.
	FrameSamples = SampleRate / 1000 * int(FrameLength/time.Millisecond)
)

// Options configure a capture or playback device. The zero value opens the
// default device of the platform's preferred sound system.
type Options struct {
	// Backend picks the miniaudio backend by name: "alsa", "pulseaudio",
	// "jack", "oss", "coreaudio", "wasapi", "dsound", "winmm", "sndio",
	// "audio4", "aaudio", "opensl", "webaudio", or "null" (virtual devices
	// with no sound card: capture yields silence, playback discards; for
	// tests). Empty tries miniaudio's platform order.
	Backend string
	// Logger receives lifecycle messages. Nil discards.
	Logger *slog.Logger

	// Bitrate is the capture encoder's target in bits/s. Zero means 32000.
	Bitrate int
	// Queue bounds the captured audio waiting for a slow reader; older
	// frames are dropped. Zero means 200 ms. At least one frame.
	Queue time.Duration

	// Buffer bounds the decoded audio waiting to be played; when packets
	// arrive faster than the device plays, the oldest samples are dropped.
	// Zero means 300 ms.
	Buffer time.Duration
	// Prefill is how much decoded audio playback waits for before it
	// starts, and again after it ran dry: the jitter buffer's depth. Zero
	// means 60 ms. Less than Buffer.
	Prefill time.Duration
}

// withDefaults fills zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Bitrate == 0 {
		o.Bitrate = 32000
	}
	if o.Queue == 0 {
		o.Queue = 200 * time.Millisecond
	}
	if o.Buffer == 0 {
		o.Buffer = 300 * time.Millisecond
	}
	if o.Prefill == 0 {
		o.Prefill = 60 * time.Millisecond
	}
	switch {
	case o.Bitrate < 6000 || o.Bitrate > 510000: // RFC 6716 section 2.1.1
		return o, fmt.Errorf("%w: Bitrate %d outside 6000..510000", ErrBadOptions, o.Bitrate)
	case o.Queue < FrameLength || o.Queue > 10*time.Second:
		return o, fmt.Errorf("%w: Queue %v outside %v..10s", ErrBadOptions, o.Queue, FrameLength)
	case o.Buffer < FrameLength || o.Buffer > 10*time.Second:
		return o, fmt.Errorf("%w: Buffer %v outside %v..10s", ErrBadOptions, o.Buffer, FrameLength)
	case o.Prefill < 0 || o.Prefill >= o.Buffer:
		return o, fmt.Errorf("%w: Prefill %v must be below Buffer %v", ErrBadOptions, o.Prefill, o.Buffer)
	}
	return o, nil
}

// samples converts a duration to a sample count at SampleRate.
func samples(d time.Duration) int { return int(d * SampleRate / time.Second) }

// Capture is an open input device: an audio.Source of 20 ms Opus packets.
// Next blocks until a frame has been recorded. Close releases the device.
type Capture interface {
	audio.Source
	Stats() CaptureStats
	Close() error
}

// CaptureStats counts what a Capture did.
type CaptureStats struct {
	Frames  uint64 // 20 ms frames recorded
	Encoded uint64 // frames encoded and returned by Next
	Dropped uint64 // frames dropped because the reader was slow
	Queued  int    // frames waiting now
}

// Sink is an open output device that plays a call's Opus RTP packets; it
// satisfies client.AudioSink. Close releases the device.
type Sink interface {
	WriteRTP(*rtp.Packet) error
	Stats() PlaybackStats
	Close() error
}

// PlaybackStats counts what a Sink did.
type PlaybackStats struct {
	Packets   uint64 // RTP packets given to WriteRTP
	Decoded   uint64 // packets decoded
	Late      uint64 // packets dropped as duplicate or older than one played
	Lost      uint64 // packets missing from the sequence
	Concealed uint64 // lost packets replaced by FEC or PLC audio
	Errors    uint64 // packets that failed to decode
	Played    uint64 // samples the device played from the buffer
	Silence   uint64 // samples of silence played while the buffer filled
	Overflow  uint64 // decoded samples dropped because the buffer was full
	Underruns uint64 // times the buffer ran dry while playing
	Buffered  int    // decoded samples waiting now
	Capacity  int    // the buffer's size in samples
}
