package main

import (
	"fmt"
	"log/slog"
	"os"
)

// fileLogger logs to path (appending) at the named level: the terminal UI
// owns the screen, so its logs go to the profile.
func fileLogger(path, level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q (debug, info, warn, error)", level)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	// The file stays open for the life of the process.
	return slog.New(slog.NewTextHandler(f, &slog.HandlerOptions{Level: l})), nil
}
