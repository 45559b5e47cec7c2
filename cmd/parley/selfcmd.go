package main

import (
	"os"
	"path/filepath"
	"strings"
)

// selfCommand is how the operator runs this binary again, for the commands
// serve prints: "go run ./cmd/parley" under go run (its binary lives in
// the go build cache), else the name it was started by ("parley" from
// PATH, "./parley", "/usr/local/bin/parley").
func selfCommand(arg0 string) string {
	if arg0 == "" || strings.Contains(filepath.ToSlash(arg0), "/go-build") {
		return "go run ./cmd/parley"
	}
	return arg0
}

// self is selfCommand of this process.
func self() string { return selfCommand(os.Args[0]) }
