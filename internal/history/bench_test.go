package history

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/parley-voice/parley/client"
)

// BenchmarkSaveIncoming measures the durable (fsynced) write that stands
// between receiving a message and acknowledging it.
func BenchmarkSaveIncoming(b *testing.B) {
	d, err := Open(filepath.Join(b.TempDir(), "h.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer d.Close()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		if _, err := d.SaveIncoming(client.MessageEvent{From: "bob", ID: fmt.Sprint("m", i), Text: "hello there"}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Microseconds())/float64(b.N), "us/fsynced-msg")
}
