package main

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/parley-voice/parley/client/audio"
	"github.com/parley-voice/parley/client/audio/device"
	"github.com/pion/rtp"
)

func TestChatAudioCheck(t *testing.T) {
	devErr := device.Available() // nil only in a binary built with -tags audiodevice
	cases := []struct {
		name    string
		in, out string
		want    error // nil: no error; errAny: some error
	}{
		{"tone", "tone", "", nil},
		{"silence to a file", "silence", "x.ogg", nil},
		{"missing file", "/nonexistent.ogg", "", errAny},
		{"device in", "device", "", devErr},
		{"device out", "tone", "device", devErr},
		{"both devices", "device", "device", devErr},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := (&chatAudio{in: tc.in, out: tc.out}).check()
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("check: %v", err)
			case tc.want == errAny && err == nil:
				t.Fatal("check passed")
			case tc.want != nil && tc.want != errAny && !errors.Is(err, tc.want):
				t.Fatalf("check: %v, want %v", err, tc.want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestChatAudioSink(t *testing.T) {
	if s := (&chatAudio{in: "tone"}).sink(); s != nil {
		t.Fatal("a sink with nothing to write or release")
	}
	// A file sink: the peer's name fills {peer}.
	dir := t.TempDir()
	a := &chatAudio{in: "tone", out: filepath.Join(dir, "{peer}.ogg")}
	s, err := a.sink()("bob")
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRTP(&rtp.Packet{Payload: []byte{0xf8, 0xff, 0xfe}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if l, err := audio.Open(filepath.Join(dir, "bob.ogg")); err != nil || l.(*audio.Loop).Len() != 1 {
		t.Fatalf("bob.ogg: %v", err)
	}
}

// TestChatAudioDeviceMic: the microphone opened for a call is released
// when the call's sink closes. Needs -tags audiodevice (null backend);
// without it, opening fails with device.ErrUnavailable.
func TestChatAudioDeviceMic(t *testing.T) {
	a := &chatAudio{in: "device", backend: "null"}
	src, err := a.source(context.Background())("bob")
	if device.Available() != nil {
		if !errors.Is(err, device.ErrUnavailable) {
			t.Fatalf("source without the tag: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := src.Next(); err != nil {
		t.Fatalf("mic: %v", err)
	}
	s, err := a.sink()("bob") // --audio-out empty: discards, but releases the mic
	if err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRTP(&rtp.Packet{Payload: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, _, err := src.Next(); !errors.Is(err, device.ErrClosed) {
		t.Fatalf("mic after hang-up: %v, want ErrClosed", err)
	}
}
