package web_test

import (
	"context"
	"testing"
	"time"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
)

// BenchmarkBrowserFiles sends a 32 MiB file per op between the call page
// (Chromium) and the Go client on loopback, each way, and reports the
// rate from the acceptance to the file checked at the receiver (MB/s);
// and how fast the page's SHA-256 (sha256.js, the pure-JS hash both
// directions run on every byte) goes by itself.
//
//	go test -run XXX -bench BrowserFiles -benchtime 2x ./web/
func BenchmarkBrowserFiles(b *testing.B) {
	const size = 32 << 20
	srv := startServer(b)
	gopher, _ := fileClient(b, srv.URL, "gopher", false)
	p := openPage(b, srv.HTTP+"/", "alice")
	p.join("alice")
	gopher.ev.Wait(b, wait, "gopher sees alice", isOnline("alice"))
	p.click("contact-gopher")
	dir := b.TempDir()
	src, sum := testutil.RandomFile(b, dir, "bench.bin", size)
	ctx := context.Background()

	b.Run("sha256-js", func(b *testing.B) {
		var ms float64
		for i := 0; i < b.N; i++ {
			ms += eval[float64](p, `(async () => { const { Sha256 } = await import("/js/sha256.js");
				const b = new Uint8Array(64 << 10); const h = new Sha256(); const t0 = performance.now();
				for (let i = 0; i < 512; i++) h.update(b); h.hex(); return performance.now() - t0; })()`)
		}
		b.ReportMetric(float64(b.N)*32/1.048576/ms*1000, "MB/s")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("page-to-go", func(b *testing.B) {
		var took time.Duration
		for i := 0; i < b.N; i++ {
			mark := gopher.ev.Len()
			p.upload(src)
			offer := gopher.ev.WaitSince(b, mark, time.Minute, "the page's offer", func(e client.Event) bool {
				_, ok := e.(client.FileOfferEvent)
				return ok
			}).(client.FileOfferEvent)
			start := time.Now()
			if err := gopher.AcceptFile(ctx, offer.ID); err != nil {
				b.Fatal(err)
			}
			got, ok := gopher.ev.Wait(b, 5*time.Minute, "the file reaches Go", goFileEnd(offer.ID)).(client.FileDoneEvent)
			took += time.Since(start)
			if !ok || testutil.FileSHA256(b, got.File) != sum {
				b.Fatalf("page -> Go: %+v", got)
			}
		}
		b.ReportMetric(float64(b.N)*size/took.Seconds()/1e6, "MB/s")
		b.ReportMetric(0, "ns/op")
	})
	b.Run("go-to-page", func(b *testing.B) {
		var took time.Duration
		for i := 0; i < b.N; i++ {
			id, err := gopher.SendFile(ctx, "alice", src)
			if err != nil {
				b.Fatal(err)
			}
			p.waitFor("the offer", `window.parley.files.get(`+jsq(id)+`)?.state === "offered"`)
			start := time.Now()
			eval[bool](p, `window.parley.files.accept(`+jsq(id)+`)`)
			p.waitForD("the file", `["done", "failed"].includes(window.parley.files.get(`+jsq(id)+`)?.state)`, 5*time.Minute)
			took += time.Since(start)
			if st := eval[string](p, `window.parley.files.get(`+jsq(id)+`).state`); st != "done" {
				b.Fatalf("Go -> page ended %s", st)
			}
			eval[bool](p, `(() => { const t = window.parley.files.get(`+jsq(id)+`); URL.revokeObjectURL(t.url); t.blob = null; return true; })()`)
		}
		b.ReportMetric(float64(b.N)*size/took.Seconds()/1e6, "MB/s")
		b.ReportMetric(0, "ns/op")
	})
}
