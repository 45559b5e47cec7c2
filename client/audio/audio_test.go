package audio

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/rtp"
)

func TestToneDemux(t *testing.T) {
	l, err := NewLoop(toneOgg)
	if err != nil {
		t.Fatal(err)
	}
	// tone.ogg is 2 s of 20 ms packets (opusenc default), packed by
	// opusenc many packets to a page.
	var total time.Duration
	for i := 0; i < l.Len(); i++ {
		_, d, _ := l.Next()
		total += d
	}
	if l.Len() < 99 || total < 1990*time.Millisecond || total > 2100*time.Millisecond {
		t.Fatalf("tone: %d packets, %v; want ~100 packets, ~2 s", l.Len(), total)
	}
}

func TestPacketDuration(t *testing.T) {
	cases := []struct {
		name string
		pkt  []byte
		want time.Duration
		err  bool
	}{
		{"celt 20ms silence", silenceFrame, 20 * time.Millisecond, false},
		{"silk 60ms", []byte{0x18}, 60 * time.Millisecond, false},
		{"hybrid 10ms x2", []byte{0x61}, 20 * time.Millisecond, false},
		{"code 3, 6 frames of 20ms", []byte{0xfb, 0x06}, 120 * time.Millisecond, false},
		{"code 3, too long", []byte{0xfb, 0x07}, 0, true},
		{"code 3, no count", []byte{0xfb}, 0, true},
		{"empty", nil, 0, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d, err := PacketDuration(tc.pkt)
			if (err != nil) != tc.err || d != tc.want {
				t.Fatalf("got %v, %v; want %v, err=%v", d, err, tc.want, tc.err)
			}
		})
	}
}

func TestBadOgg(t *testing.T) {
	for name, data := range map[string][]byte{
		"not ogg":   []byte("RIFF....WAVEfmt "),
		"truncated": toneOgg[:40],
		"empty":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := NewLoop(data); err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestSinkRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.ogg")
	s, err := NewOggSink(path, 2)
	if err != nil {
		t.Fatal(err)
	}
	l, _ := NewLoop(toneOgg)
	var ts uint32
	for i := 0; i < 50; i++ {
		p, d, _ := l.Next()
		if err := s.WriteRTP(&rtp.Packet{Header: rtp.Header{Timestamp: ts, SequenceNumber: uint16(i)}, Payload: p}); err != nil {
			t.Fatal(err)
		}
		ts += uint32(d / time.Millisecond * 48)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	src, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := src.(*Loop).Len(); got != 50 {
		t.Fatalf("read back %d packets, want 50", got)
	}
}

func FuzzOggReader(f *testing.F) {
	f.Add(toneOgg)
	f.Add(toneOgg[:200])
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewOggReader(bytes.NewReader(data))
		for i := 0; i < 10000; i++ {
			p, err := r.NextPacket()
			if err != nil {
				if err != io.EOF && !errors.Is(err, ErrNotOgg) && !errors.Is(err, ErrNotOpus) {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if len(p) == 0 || len(p) > maxPacket {
				t.Fatalf("packet of %d bytes", len(p))
			}
			PacketDuration(p)
		}
	})
}
