package tui

import "errors"

// ErrBadConfig is returned by Run for a Config missing a required field.
var ErrBadConfig = errors.New("tui: bad config")
