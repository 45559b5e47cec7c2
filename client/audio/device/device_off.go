//go:build !audiodevice

package device

import "context"

// Available reports whether this binary can use audio devices: here it
// cannot, and the error says how to build one that can.
func Available() error { return ErrUnavailable }

// OpenCapture returns ErrUnavailable: this binary was built without the
// audiodevice tag.
func OpenCapture(ctx context.Context, opts Options) (Capture, error) {
	return nil, ErrUnavailable
}

// OpenPlayback returns ErrUnavailable: this binary was built without the
// audiodevice tag.
func OpenPlayback(opts Options) (Sink, error) {
	return nil, ErrUnavailable
}
