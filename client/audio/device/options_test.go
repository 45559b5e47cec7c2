package device

import (
	"errors"
	"testing"
	"time"
)

func TestOptions(t *testing.T) {
	ms := time.Millisecond
	cases := []struct {
		name string
		in   Options
		ok   bool
	}{
		{"zero is the defaults", Options{}, true},
		{"explicit", Options{Bitrate: 24000, Queue: 40 * ms, Buffer: 100 * ms, Prefill: 40 * ms}, true},
		{"bitrate too low", Options{Bitrate: 100}, false},
		{"bitrate too high", Options{Bitrate: 1 << 20}, false},
		{"queue below a frame", Options{Queue: 5 * ms}, false},
		{"negative queue", Options{Queue: -ms}, false},
		{"buffer below a frame", Options{Buffer: 10 * ms}, false},
		{"huge buffer", Options{Buffer: time.Minute}, false},
		{"prefill not below buffer", Options{Buffer: 100 * ms, Prefill: 100 * ms}, false},
		{"negative prefill", Options{Prefill: -ms}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o, err := tc.in.withDefaults()
			if tc.ok != (err == nil) {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if err != nil {
				if !errors.Is(err, ErrBadOptions) {
					t.Fatalf("err %v is not ErrBadOptions", err)
				}
				return
			}
			if o.Logger == nil || o.Bitrate == 0 || o.Queue == 0 || o.Buffer == 0 || o.Prefill == 0 {
				t.Fatalf("defaults not filled: %+v", o)
			}
		})
	}
	if FrameSamples != 960 || samples(FrameLength) != 960 {
		t.Fatalf("FrameSamples %d, samples(20ms) %d; want 960", FrameSamples, samples(FrameLength))
	}
}
