package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/parley-voice/parley/internal/testutil"
)

// TestFileResumesAfterReceiverIsKilled: bob's client is SIGKILLed halfway
// through receiving a file; started again on the same profile, it picks
// the transfer up from the bytes it had synced, and alice's client counts
// how many bytes it had to send again: far fewer than a restart from zero
// would need.
func TestFileResumesAfterReceiverIsKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	srv := start(t, "serve", "--listen", "127.0.0.1:0", "--data", filepath.Join(dir, "server"))
	line := srv.waitLine("the URL", func(s string) bool { return strings.Contains(s, "http://127.0.0.1:") })
	url := regexp.MustCompile(`http://127\.0\.0\.1:\d+`).FindString(line)
	chat := func(name string, extra ...string) *proc {
		args := append([]string{"chat", "--json", "--ice-loopback", "--server", url, "--name", name,
			"--profile", filepath.Join(dir, name)}, extra...)
		return start(t, args...)
	}
	const size = 32 << 20
	src := filepath.Join(dir, "holiday.mp4")
	sum := writeRandom(t, src, size)

	// 8 MB/s: four seconds for the file, time to kill bob in the middle.
	alice := chat("alice", "--file-rate", "8")
	bob := chat("bob", "--accept-files", "alice")
	alice.waitEvent(map[string]any{"event": "presence", "name": "bob", "online": true})
	// The script's own id names the transfer, as send's names a message.
	alice.send(fmt.Sprintf(`{"cmd":"send-file","to":"bob","path":%q,"id":"holiday-1"}`, src))
	id := alice.waitEvent(map[string]any{"event": "file-offered", "to": "bob"})["id"]
	if id != "holiday-1" {
		t.Fatalf("file-offered with id %v, want the command's holiday-1", id)
	}
	bob.waitEvent(map[string]any{"event": "file-offer", "id": id, "from": "alice", "name": "holiday.mp4", "auto": true})
	bob.waitLine("half the file", func(s string) bool {
		var ev struct {
			Event string
			ID    string
			Bytes int64
		}
		return json.Unmarshal([]byte(s), &ev) == nil && ev.Event == "file-progress" && ev.ID == id && ev.Bytes >= size/2
	})
	if err := bob.cmd.Process.Kill(); err != nil { // SIGKILL: no chance to save anything
		t.Fatal(err)
	}
	bob.cmd.Wait()
	alice.waitEvent(map[string]any{"event": "presence", "name": "bob", "online": false})

	bob = chat("bob", "--accept-files", "alice")
	got := bob.waitEvent(map[string]any{"event": "file-done", "id": id, "direction": "receive"})
	sent := alice.waitEvent(map[string]any{"event": "file-done", "id": id, "direction": "send"})
	if h := hashFile(t, got["file"].(string)); h != sum {
		t.Fatalf("received SHA-256 %s, sent %s", h, sum)
	}
	sentBytes, _ := sent["sent_bytes"].(float64)
	again := int64(sentBytes) - size
	t.Logf("bytes sent again after the kill: %d (%.1f%% of the file); resumed attempts: %v", again, 100*float64(again)/size, sent["resumed"])
	if sent["resumed"] == nil || again < 0 || again > size/4 {
		t.Fatalf("sender's done %v: sent %d bytes again for a %d-byte file; a resume sends only what was not synced", sent, again, size)
	}
	ents, _ := os.ReadDir(filepath.Dir(got["file"].(string)))
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".part") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

// TestBenchFilesCommand: `parley bench files` sends a file direct and
// relayed and prints both rates and the CPU they took, beside the bare
// pion data channel's.
func TestBenchFilesCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	out, err := exec.Command(parleyBinary(t), "bench", "files", "--size", "2", "--anchors=false").CombinedOutput()
	if err != nil {
		t.Fatalf("parley bench files: %v\n%s", err, out)
	}
	for _, row := range []string{"parley direct", "parley relayed"} {
		if !regexp.MustCompile(regexp.QuoteMeta(row) + `\s+\d+\.\d MB/s\s+\d+\.\d MB/s\s+\d+\.\d ms\s+SHA-256 checked; path (direct|relay)`).Match(out) {
			t.Errorf("no %q row with figures in:\n%s", row, out)
		}
	}
	if !regexp.MustCompile(`pion data channel\s+\d+\.\d MB/s\s+–\s+\d+\.\d ms\s+bare pion pair`).Match(out) {
		t.Errorf("no floor row in:\n%s", out)
	}
}

func writeRandom(t *testing.T, p string, size int64) string {
	t.Helper()
	got, sum := testutil.RandomFile(t, filepath.Dir(p), filepath.Base(p), size)
	if got != p {
		t.Fatalf("wrote %s, not %s", got, p)
	}
	return sum
}

func hashFile(t *testing.T, p string) string { return testutil.FileSHA256(t, p) }
