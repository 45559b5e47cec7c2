//go:build !audiodevice

package device

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestUnavailableWithoutTag(t *testing.T) {
	if err := Available(); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Available: %v", err)
	}
	c, err := OpenCapture(context.Background(), Options{Backend: "null"})
	if c != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("OpenCapture: %v, %v; want nil, ErrUnavailable", c, err)
	}
	s, err := OpenPlayback(Options{Backend: "null"})
	if s != nil || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("OpenPlayback: %v, %v; want nil, ErrUnavailable", s, err)
	}
	// The message tells the user how to get a binary that works.
	if msg := err.Error(); !strings.Contains(msg, "-tags audiodevice") || !strings.Contains(msg, "libopus-dev") {
		t.Fatalf("unhelpful error %q", msg)
	}
}
