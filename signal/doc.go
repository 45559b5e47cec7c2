// Package signal is Parley's signaling server. It introduces clients to each
// other over WebSocket: it authenticates identities (Ed25519 keys bound to
// display names on first use), tracks presence, and routes offers, answers,
// ICE candidates, call signals and fallback chat between online users.
// It never carries media: calls go directly between peers, or through
// supernodes.
//
// The protocol flow is in README.md; wire messages are in package proto.
package signal
