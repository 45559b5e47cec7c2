//go:build audiodevice

package device

import (
	"encoding/binary"
	"fmt"
	"log/slog"
	"strings"

	"github.com/gen2brain/malgo"
)

// Available reports whether this binary can use audio devices: it was
// built with the audiodevice tag, so it can (whether a device exists is
// known only when one is opened).
func Available() error { return nil }

// backendNull is miniaudio's ma_backend_null. malgo v0.11.24's Backend
// enumeration leaves out ma_backend_custom, which precedes it in
// miniaudio.h, so malgo.BackendNull is really the custom backend ("No
// backend" from ma_context_init); the tests on the null backend catch it
// if malgo fixes the enumeration.
const backendNull = malgo.BackendNull + 1

var backends = map[string]malgo.Backend{
	"wasapi": malgo.BackendWasapi, "dsound": malgo.BackendDsound, "winmm": malgo.BackendWinmm,
	"coreaudio": malgo.BackendCoreaudio, "sndio": malgo.BackendSndio, "audio4": malgo.BackendAudio4,
	"oss": malgo.BackendOss, "pulseaudio": malgo.BackendPulseaudio, "alsa": malgo.BackendAlsa,
	"jack": malgo.BackendJack, "aaudio": malgo.BackendAaudio, "opensl": malgo.BackendOpensl,
	"webaudio": malgo.BackendWebaudio, "null": backendNull,
}

// realBackends is miniaudio's default backend order without the null
// backend: miniaudio falls back to it when no sound system works, and a
// call would then play into nothing and record silence without a word.
var realBackends = []malgo.Backend{
	malgo.BackendWasapi, malgo.BackendDsound, malgo.BackendWinmm, malgo.BackendCoreaudio,
	malgo.BackendSndio, malgo.BackendAudio4, malgo.BackendOss, malgo.BackendPulseaudio,
	malgo.BackendAlsa, malgo.BackendJack, malgo.BackendAaudio, malgo.BackendOpensl,
	malgo.BackendWebaudio,
}

// backendList maps Options.Backend to the backends miniaudio may try.
func backendList(name string) ([]malgo.Backend, error) {
	if name == "" {
		return realBackends, nil
	}
	b, ok := backends[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownBackend, name)
	}
	return []malgo.Backend{b}, nil
}

// openDevice initializes a miniaudio context on the chosen backend and the
// default device of kind on it: 48 kHz, mono, signed 16-bit, with data
// called from the device's thread for every period. Miniaudio converts from
// the hardware's own format, rate and channel count.
func openDevice(o Options, kind malgo.DeviceType, data malgo.DataProc, stop malgo.StopProc) (*malgo.AllocatedContext, *malgo.Device, error) {
	list, err := backendList(o.Backend)
	if err != nil {
		return nil, nil, err
	}
	log := o.Logger
	quietSoundSystem()
	mctx, err := malgo.InitContext(list, malgo.ContextConfig{}, func(msg string) {
		log.Debug("device: miniaudio: " + strings.TrimSpace(msg))
	})
	if err != nil {
		if o.Backend == "" {
			return nil, nil, fmt.Errorf("device: no working sound system (PulseAudio, ALSA, JACK, CoreAudio, WASAPI, ...): %w", err)
		}
		return nil, nil, fmt.Errorf("device: sound system %q: %w", o.Backend, err)
	}
	cfg := malgo.DefaultDeviceConfig(kind)
	cfg.SampleRate = SampleRate
	cfg.PeriodSizeInMilliseconds = 10
	sub := malgo.SubConfig{Format: malgo.FormatS16, Channels: 1}
	if kind == malgo.Capture {
		cfg.Capture = sub
	} else {
		cfg.Playback = sub
	}
	dev, err := malgo.InitDevice(mctx.Context, cfg, malgo.DeviceCallbacks{Data: data, Stop: stop})
	if err != nil {
		releaseContext(mctx)
		return nil, nil, fmt.Errorf("device: open default %s device: %w", kindName(kind), err)
	}
	if err := dev.Start(); err != nil {
		dev.Uninit()
		releaseContext(mctx)
		return nil, nil, fmt.Errorf("device: start %s device: %w", kindName(kind), err)
	}
	log.Info("device: opened", "kind", kindName(kind), "backend", backendName(o.Backend),
		"rate", dev.SampleRate(), slog.Group("format", "channels", 1, "bits", 16))
	return mctx, dev, nil
}

// closeDevice stops dev (waiting for its thread to leave the data
// callback), then frees it and its context.
func closeDevice(mctx *malgo.AllocatedContext, dev *malgo.Device) {
	dev.Uninit()
	releaseContext(mctx)
}

func releaseContext(mctx *malgo.AllocatedContext) {
	_ = mctx.Uninit()
	mctx.Free()
}

func kindName(k malgo.DeviceType) string {
	if k == malgo.Capture {
		return "input"
	}
	return "output"
}

func backendName(b string) string {
	if b == "" {
		return "default"
	}
	return b
}

// s16 reads miniaudio's FormatS16 samples (native byte order) from b into
// dst and returns how many it read.
func s16(dst []int16, b []byte) int {
	n := min(len(dst), len(b)/2)
	for i := range n {
		dst[i] = int16(binary.NativeEndian.Uint16(b[2*i:]))
	}
	return n
}

// putS16 writes src into b as FormatS16 samples.
func putS16(b []byte, src []int16) {
	for i, v := range src {
		binary.NativeEndian.PutUint16(b[2*i:], uint16(v))
	}
}
