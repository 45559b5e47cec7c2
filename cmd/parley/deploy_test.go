package main

import (
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestDeployCommandsParse: the serve commands the deployment guide and the
// systemd unit give operators use flags `parley serve` has, with values it
// accepts (flags are parsed in order, so a --help after them stops only
// once all of them passed).
func TestDeployCommandsParse(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	var cmds []string
	unit, err := os.ReadFile("../../deploy/parley.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(unit), "\n") {
		if rest, ok := strings.CutPrefix(l, "ExecStart="); ok {
			cmds = append(cmds, rest)
		}
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds = append(cmds, regexp.MustCompile(`(?m)^\s*(?:sudo |\$ )?(parley serve [^#\n]*)`).FindAllString(string(readme), -1)...)
	n := 0
	for _, c := range cmds {
		f := strings.Fields(c)
		for len(f) > 0 && f[0] != "serve" {
			f = f[1:]
		}
		if len(f) < 2 || strings.Contains(c, "[") { // a synopsis, not a command
			continue
		}
		n++
		out, err := exec.Command(parleyBinary(t), append(f, "--help")...).CombinedOutput()
		if err != nil || strings.Contains(string(out), "invalid") || strings.Contains(string(out), "not defined") {
			t.Errorf("%q: %v\n%s", c, err, out)
		}
	}
	if n < 2 {
		t.Fatalf("found %d serve commands in the unit and README, want the unit's and the guide's", n)
	}
}
