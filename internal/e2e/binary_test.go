package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// parley is the `parley` binary, built once per test run for the tests
// that run it inside the lab (a supernode to SIGKILL, `parley serve`
// exactly as deployed). TestMain removes it.
var parley struct {
	sync.Once
	dir, path string
	err       error
}

func parleyBinary(tb testing.TB) string {
	tb.Helper()
	parley.Do(func() {
		dir, err := os.MkdirTemp("", "parley-e2e-bin")
		if err != nil {
			parley.err = err
			return
		}
		parley.dir, parley.path = dir, filepath.Join(dir, "parley")
		out, err := exec.Command("go", "build", "-o", parley.path, "github.com/parley-voice/parley/cmd/parley").CombinedOutput()
		if err != nil {
			parley.err = fmt.Errorf("go build ./cmd/parley: %v\n%s", err, out)
		}
	})
	if parley.err != nil {
		tb.Fatal(parley.err)
	}
	return parley.path
}

func removeParleyBinary() {
	if parley.dir != "" {
		os.RemoveAll(parley.dir)
	}
}
