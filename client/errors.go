package client

import "errors"

// Errors returned by the API. Errors from the server are *proto.Error.
var (
	ErrClosed      = errors.New("client: closed")
	ErrNotRunning  = errors.New("client: not running")
	ErrNoCall      = errors.New("client: no such call")
	ErrCallExists  = errors.New("client: already in a call with this user")
	ErrSelf        = errors.New("client: cannot call or message yourself")
	ErrBadConfig   = errors.New("client: bad config")
	ErrNotOnline   = errors.New("client: user is not online")
	ErrNotSignedIn = errors.New("client: not signed in to the server")
	ErrBadKey      = errors.New("client: bad key or sealed message")
	ErrNoSTUN      = errors.New("client: no STUN server for NAT discovery")
	ErrUnknownPeer = errors.New("client: nobody of that name is known")
	ErrNoAnswer    = errors.New("client: the server did not answer")
	// ErrCannotSignIn wraps the server's *proto.Error (name_taken,
	// bad_name) when Run stops because retrying cannot help.
	ErrCannotSignIn = errors.New("cannot sign in")
)
