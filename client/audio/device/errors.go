package device

import "errors"

// Errors.
var (
	// ErrUnavailable: this binary was built without the audiodevice tag.
	ErrUnavailable = errors.New("parley was built without audio device support: build with -tags audiodevice (needs cgo, libopus-dev and libopusfile-dev)")
	// ErrClosed: the device was closed, by Close or by its context.
	ErrClosed = errors.New("device: closed")
	// ErrStopped: the sound system stopped the device (unplugged, server gone).
	ErrStopped = errors.New("device: stopped by the sound system")
	// ErrUnknownBackend: Options.Backend names no miniaudio backend.
	ErrUnknownBackend = errors.New("device: unknown audio backend")
	// ErrBadPacket: WriteRTP was given no packet.
	ErrBadPacket = errors.New("device: bad RTP packet")
	// ErrBadOptions: an Options field is out of range.
	ErrBadOptions = errors.New("device: bad options")
)
