package testutil

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"
)

// VerifyNoLeaks runs the package's tests and then fails the run if
// goroutines started by Parley code are still alive after a grace period.
// Use it from TestMain: os.Exit(testutil.VerifyNoLeaks(m)).
func VerifyNoLeaks(m *testing.M) int {
	code := m.Run()
	if code != 0 {
		return code
	}
	var leaked []string
	deadline := time.Now().Add(10 * time.Second)
	for {
		leaked = parleyGoroutines()
		if len(leaked) == 0 {
			return code
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "testutil: %d goroutines leaked:\n\n%s\n", len(leaked), strings.Join(leaked, "\n\n"))
	return 1
}

// parleyGoroutines returns the stacks of live goroutines that run Parley code
// (other than this checker and the test runner).
func parleyGoroutines() []string {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if !strings.Contains(g, "github.com/parley-voice/parley/") ||
			strings.Contains(g, "testutil.parleyGoroutines") ||
			strings.Contains(g, "testutil.VerifyNoLeaks") {
			continue
		}
		out = append(out, g)
	}
	return out
}
