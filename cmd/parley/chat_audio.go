package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/pion/rtp"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/client/audio/device"
	"github.com/parley-voice/parley/internal/tui"
)

// chatAudio makes the audio sources and sinks of `parley chat` calls from
// --audio-in and --audio-out: files, the tone, silence, or ("device") the
// default sound devices.
type chatAudio struct {
	in, out string
	muted   *atomic.Bool // nil: no /mute
	log     *slog.Logger
	backend string // miniaudio backend for "device"; empty: the platform's

	mu   sync.Mutex        // guards mics
	mics map[string]func() // releases the microphone opened for a call with a peer
}

// check fails early, before sign-in, on a source that cannot open or a
// device mode this binary was built without.
func (a *chatAudio) check() error {
	if a.in == "device" {
		if err := device.Available(); err != nil {
			return fmt.Errorf("--audio-in device: %w", err)
		}
	} else if _, err := audio.Open(a.in); err != nil {
		return fmt.Errorf("--audio-in: %w", err)
	}
	if a.out == "device" {
		if err := device.Available(); err != nil {
			return fmt.Errorf("--audio-out device: %w", err)
		}
	}
	return nil
}

func (a *chatAudio) deviceOptions() device.Options {
	return device.Options{Backend: a.backend, Logger: a.log}
}

// source is client.Config.AudioSource. A microphone opened for a call is
// released when the call's sink closes (see sink), when the next call with
// the same peer starts, or when ctx ends.
func (a *chatAudio) source(ctx context.Context) func(peer string) (audio.Source, error) {
	return func(peer string) (audio.Source, error) {
		var src audio.Source
		if a.in == "device" {
			a.releaseMic(peer)
			cctx, cancel := context.WithCancel(ctx)
			mic, err := device.OpenCapture(cctx, a.deviceOptions())
			if err != nil {
				cancel()
				return nil, err
			}
			a.mu.Lock()
			if a.mics == nil {
				a.mics = make(map[string]func())
			}
			a.mics[peer] = func() { cancel(); mic.Close() }
			a.mu.Unlock()
			src = mic
		} else {
			s, err := audio.Open(a.in)
			if err != nil {
				return nil, err
			}
			src = s
		}
		if a.muted != nil {
			src = tui.Muteable(src, a.muted)
		}
		return src, nil
	}
}

func (a *chatAudio) releaseMic(peer string) {
	a.mu.Lock()
	release := a.mics[peer]
	delete(a.mics, peer)
	a.mu.Unlock()
	if release != nil {
		release()
	}
}

// sink is client.Config.AudioSink, or nil when received audio is discarded
// and nothing needs releasing at hang-up.
func (a *chatAudio) sink() func(peer string) (client.AudioSink, error) {
	if a.out == "" && a.in != "device" {
		return nil
	}
	return func(peer string) (client.AudioSink, error) {
		s := &callSink{release: func() { a.releaseMic(peer) }}
		var err error
		switch a.out {
		case "":
		case "device":
			s.out, err = device.OpenPlayback(a.deviceOptions())
		default:
			s.out, err = audio.NewOggSink(strings.ReplaceAll(a.out, "{peer}", peer), 2)
		}
		if err != nil {
			return nil, err
		}
		return s, nil
	}
}

// callSink passes a call's audio to out (nil discards) and, when the
// client closes it at hang-up, releases the call's microphone too.
type callSink struct {
	out     client.AudioSink
	release func()
}

func (s *callSink) WriteRTP(p *rtp.Packet) error {
	if s.out == nil {
		return nil
	}
	return s.out.WriteRTP(p)
}

func (s *callSink) Close() error {
	s.release()
	if s.out == nil {
		return nil
	}
	return s.out.Close()
}

// audioNote says, for the TUI's status bar, what calls send and receive
// when it is not a sound device: a person who hears nothing should know
// that the terminal sends a test tone and discards the peer's voice.
func audioNote(in, out string) string {
	var bits []string
	switch in {
	case "device":
	case "tone", "":
		bits = append(bits, "sending a test tone")
	case "silence":
		bits = append(bits, "sending silence")
	default:
		bits = append(bits, "sending "+filepath.Base(in))
	}
	switch out {
	case "device":
	case "":
		bits = append(bits, "their audio discarded (no sound device)")
	default:
		bits = append(bits, "recording them")
	}
	return strings.Join(bits, ", ")
}
