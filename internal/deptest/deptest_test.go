// Package deptest holds the import rules of STYLE.md: proto is standard
// library only; signal, supernode and client never import one another; nat
// depends on proto alone among our packages; web on none.
package deptest

import (
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/parley-voice/parley/"

type pkg struct {
	ImportPath string
	Deps       []string
	Standard   bool
}

func deps(t *testing.T, pattern string) map[string]pkg {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-json", pattern).Output()
	if err != nil {
		t.Fatalf("go list %s: %v", pattern, err)
	}
	all := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for dec.More() {
		var p pkg
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		all[p.ImportPath] = p
	}
	return all
}

func TestImportRules(t *testing.T) {
	rules := []struct {
		pkg       string
		forbidden []string // our package prefixes it must not depend on
		stdOnly   bool
	}{
		{pkg: "proto", stdOnly: true},
		{pkg: "signal", forbidden: []string{"client", "supernode", "nat", "web"}},
		{pkg: "client", forbidden: []string{"signal", "supernode", "web"}},
		{pkg: "supernode", forbidden: []string{"signal", "client", "web"}},
		{pkg: "nat", forbidden: []string{"signal", "client", "supernode", "web"}},
		{pkg: "web", forbidden: []string{"proto", "signal", "client", "supernode", "nat"}},
	}
	for _, r := range rules {
		t.Run(r.pkg, func(t *testing.T) {
			all := deps(t, "../../"+r.pkg+"/...")
			for path, p := range all {
				if !strings.HasPrefix(path, module+r.pkg) || strings.HasSuffix(path, "test") {
					continue // only the package's own (non-test-helper) packages
				}
				for _, d := range p.Deps {
					if r.stdOnly && !all[d].Standard && !strings.HasPrefix(d, module+"proto") {
						t.Errorf("%s imports %s; proto must use only the standard library", path, d)
					}
					for _, f := range r.forbidden {
						if d == module+f || strings.HasPrefix(d, module+f+"/") {
							t.Errorf("%s depends on %s", path, d)
						}
					}
				}
			}
		})
	}
}
