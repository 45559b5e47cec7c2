// Package audio supplies and stores Opus audio for calls on machines without
// sound devices: it reads Opus packets from Ogg files (RFC 7845), loops an
// embedded 440 Hz tone, produces Opus silence, and writes received RTP to
// Ogg/Opus files with pion's oggwriter.
package audio

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// Source yields Opus packets in playback order. Next returns each packet
// with its duration; a looping source never returns io.EOF.
type Source interface {
	Next() (packet []byte, dur time.Duration, err error)
}

//go:embed tone.ogg
var toneOgg []byte

// Errors.
var (
	ErrNotOgg  = errors.New("audio: not an Ogg stream")
	ErrNotOpus = errors.New("audio: Ogg stream is not Opus")
	ErrBadOpus = errors.New("audio: malformed Opus packet")
	ErrEmpty   = errors.New("audio: no audio packets")
)

// Open returns the source named by spec: "tone" (a looping 440 Hz tone),
// "silence", or the path of an Ogg/Opus file (looped).
func Open(spec string) (Source, error) {
	switch spec {
	case "", "silence":
		return Silence{}, nil
	case "tone":
		return NewLoop(toneOgg)
	}
	data, err := os.ReadFile(spec)
	if err != nil {
		return nil, fmt.Errorf("audio: %w", err)
	}
	return NewLoop(data)
}

// Silence yields 20 ms Opus frames of silence (a CELT-only, zero-energy
// frame: TOC 0xf8, RFC 6716 section 3.1).
type Silence struct{}

var silenceFrame = []byte{0xf8, 0xff, 0xfe}

func (Silence) Next() ([]byte, time.Duration, error) {
	return silenceFrame, 20 * time.Millisecond, nil
}

// Loop replays the Opus packets of one Ogg file forever.
type Loop struct {
	packets [][]byte
	durs    []time.Duration
	i       int
}

// NewLoop demuxes all Opus packets of an Ogg/Opus file held in memory.
func NewLoop(ogg []byte) (*Loop, error) {
	r := NewOggReader(bytes.NewReader(ogg))
	l := &Loop{}
	for {
		pkt, err := r.NextPacket()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		d, err := PacketDuration(pkt)
		if err != nil {
			return nil, err
		}
		l.packets = append(l.packets, pkt)
		l.durs = append(l.durs, d)
	}
	if len(l.packets) == 0 {
		return nil, ErrEmpty
	}
	return l, nil
}

// Next implements Source.
func (l *Loop) Next() ([]byte, time.Duration, error) {
	p, d := l.packets[l.i], l.durs[l.i]
	l.i = (l.i + 1) % len(l.packets)
	return p, d, nil
}

// Len is the number of packets in one pass.
func (l *Loop) Len() int { return len(l.packets) }

// PacketDuration returns the duration of an Opus packet from its TOC byte
// and frame count (RFC 6716 section 3.1 and 3.2).
func PacketDuration(pkt []byte) (time.Duration, error) {
	if len(pkt) < 1 {
		return 0, ErrBadOpus
	}
	toc := pkt[0]
	config := toc >> 3
	var frame time.Duration
	switch {
	case config < 12: // SILK: 10, 20, 40, 60 ms
		frame = [4]time.Duration{10, 20, 40, 60}[config&3] * time.Millisecond
	case config < 16: // Hybrid: 10, 20 ms
		frame = [2]time.Duration{10, 20}[config&1] * time.Millisecond
	default: // CELT: 2.5, 5, 10, 20 ms
		frame = [4]time.Duration{2500, 5000, 10000, 20000}[config&3] * time.Microsecond
	}
	var frames int
	switch toc & 3 {
	case 0:
		frames = 1
	case 1, 2:
		frames = 2
	case 3:
		if len(pkt) < 2 {
			return 0, ErrBadOpus
		}
		frames = int(pkt[1] & 0x3f)
		if frames == 0 {
			return 0, ErrBadOpus
		}
	}
	d := frame * time.Duration(frames)
	if d > 120*time.Millisecond { // RFC 6716 section 3.2.5
		return 0, ErrBadOpus
	}
	return d, nil
}
