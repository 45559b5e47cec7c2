package audio

import (
	"fmt"
	"sync"

	"github.com/pion/rtp"
	"github.com/pion/webrtc/v4/pkg/media/oggwriter"
)

// OggSink writes received Opus RTP packets to an Ogg/Opus file.
type OggSink struct {
	mu      sync.Mutex // guards w and packets
	w       *oggwriter.OggWriter
	packets int
}

// NewOggSink creates (or truncates) path for 48 kHz Opus with channels channels.
func NewOggSink(path string, channels uint16) (*OggSink, error) {
	w, err := oggwriter.New(path, 48000, channels)
	if err != nil {
		return nil, fmt.Errorf("audio: create %s: %w", path, err)
	}
	return &OggSink{w: w}, nil
}

// WriteRTP appends one packet's payload.
func (s *OggSink) WriteRTP(p *rtp.Packet) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return nil
	}
	if len(p.Payload) == 0 {
		return nil
	}
	s.packets++
	return s.w.WriteRTP(p)
}

// Packets is the number of packets written.
func (s *OggSink) Packets() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.packets
}

// Close finishes the file.
func (s *OggSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.w == nil {
		return nil
	}
	err := s.w.Close()
	s.w = nil
	return err
}
