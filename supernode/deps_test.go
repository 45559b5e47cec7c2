package supernode_test

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering holds the layout's line: supernode, signal and client never
// import each other; what they share lives in proto (and small internal
// helpers).
func TestLayering(t *testing.T) {
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("go tool not on PATH")
	}
	const mod = "github.com/parley-voice/parley/"
	for pkg, banned := range map[string][]string{
		"supernode": {"signal", "client"},
		"client":    {"signal", "supernode"},
		"signal":    {"client", "supernode"},
	} {
		out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list %s: %v", pkg, err)
		}
		for _, dep := range strings.Fields(string(out)) {
			for _, b := range banned {
				if dep == mod+b || strings.HasPrefix(dep, mod+b+"/") {
					t.Errorf("%s depends on %s", pkg, dep)
				}
			}
		}
	}
}
