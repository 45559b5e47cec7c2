package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestServeDataDirLocked: a second `parley serve` on the data directory of
// a running one stops with a clear message instead of opening the same
// store (two embedded NATS servers wrote one JetStream directory, and two
// registries each believed they alone bound names).
func TestServeDataDirLocked(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	data := filepath.Join(t.TempDir(), "server")
	first := start(t, "serve", "--listen", "127.0.0.1:0", "--data", data)
	first.waitLine("the URL", func(s string) bool { return strings.Contains(s, "Parley is running") })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, parleyBinary(t), "serve", "--listen", "127.0.0.1:0", "--stun", "127.0.0.1:0", "--data", data).CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("a second serve on %s kept running:\n%s", data, out)
	}
	if err == nil {
		t.Fatalf("a second serve on %s ran:\n%s", data, out)
	}
	for _, w := range []string{"in use by another parley serve", "--data"} {
		if !strings.Contains(string(out), w) {
			t.Errorf("the second serve's error does not say %q:\n%s", w, out)
		}
	}
}
