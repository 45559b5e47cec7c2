package supernode

import "errors"

// Sentinel errors. Wire refusals (token, budget) are *proto.Error values
// with stable codes; these are for the Go API.
var (
	// ErrBadConfig reports a Config field that cannot work.
	ErrBadConfig = errors.New("supernode: bad config")
	// ErrClosed is returned after Close.
	ErrClosed = errors.New("supernode: closed")
	// ErrRunning is returned when Run is called twice.
	ErrRunning = errors.New("supernode: already running")
	// ErrNotPromoted is the cause of refusals before the signaling server
	// has promoted this supernode (no token key or TURN secret yet).
	ErrNotPromoted = errors.New("supernode: not promoted")
	// ErrPeerDenied reports a relay destination the peer policy forbids.
	ErrPeerDenied = errors.New("supernode: peer address denied by policy")
)
