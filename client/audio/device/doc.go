// Package device plays and records call audio through the machine's default
// sound devices, for the terminal client (`parley chat --audio-in device
// --audio-out device`).
//
// Capture reads 48 kHz mono PCM from the default input device (miniaudio,
// through github.com/gen2brain/malgo), cuts it into 20 ms frames, keeps at
// most Options.Queue of them for a slow reader (the oldest are dropped) and
// encodes each with the Opus VoIP encoder (libopus, through
// gopkg.in/hraban/opus.v2) as the reader asks: an audio.Source.
//
// Playback takes the call's Opus RTP packets, conceals lost ones (Opus
// in-band FEC from the next packet, else packet-loss concealment), decodes
// them into a bounded jitter buffer and plays it on the default output
// device.
//
// Both need cgo, libopus and libopusfile, so the real implementation is
// built only with the build tag `audiodevice`; without it every Open
// returns ErrUnavailable and parley keeps its file, tone and silence modes.
package device
