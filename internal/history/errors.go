package history

import "errors"

// Errors returned by the DB.
var (
	ErrLocked       = errors.New("history: the profile is in use by another parley process")
	ErrNoContact    = errors.New("history: no such contact")
	ErrNoPendingKey = errors.New("history: no changed key waits for acceptance")
)
