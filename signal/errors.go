package signal

import "errors"

// Sentinel errors returned by the server's API (wire errors are *proto.Error).
var (
	ErrClosed     = errors.New("signal: server closed")
	ErrNameTaken  = errors.New("signal: name bound to another key")
	ErrBadConfig  = errors.New("signal: bad config")
	ErrNotStarted = errors.New("signal: server not started")
)
