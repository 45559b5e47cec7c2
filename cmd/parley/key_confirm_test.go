package main

import (
	"os"
	"path/filepath"
	"testing"
)

// TestKeyExportAsksTwice: `parley key export` on a terminal reads the
// passphrase unseen, so it asks for it twice and writes no backup when the
// two differ (a typo would lock the backup for good); scripts still give
// it once on stdin (TestTUIKeyBackupAndRestore imports that way).
func TestKeyExportAsksTwice(t *testing.T) {
	needTmux(t)
	dir := t.TempDir()
	profile := filepath.Join(dir, "alice")
	if err := os.MkdirAll(profile, 0o700); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, second string
		want         string
		written      bool
	}{
		{"differ", "correct horse batery", "differ", false},
		{"same", "correct horse battery", "is in", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(dir, tc.name+".key")
			tm := startTUI(t, "key", "export", "--name", "alice", "--profile", profile, "--out", out)
			tm.waitScreen("first prompt", "Passphrase for the backup:")
			tm.typeLine("correct horse battery")
			tm.waitScreen("second prompt", "again")
			tm.typeLine(tc.second)
			tm.waitScreen("the outcome", tc.want, "EXITED")
			if _, err := os.Stat(out); (err == nil) != tc.written {
				t.Fatalf("backup written: %v, want %v", err == nil, tc.written)
			}
		})
	}
}
