package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// ReadTree returns the bytes of every file under dir, concatenated: what a
// store keeps on disk, for tests that look for plaintext in it.
func ReadTree(t testing.TB, dir string) []byte {
	t.Helper()
	var raw []byte
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		raw = append(raw, b...)
		return err
	})
	if err != nil {
		t.Fatalf("read %s: %v", dir, err)
	}
	return raw
}
