package web_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"testing"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// Sealed offline messages between the page and the Go client, both ways
// (proto/offline.go): X25519 encryption keys bound to the identities,
// HKDF-SHA256, AES-256-GCM — WebCrypto on one side, the Go standard
// library on the other.

// startDurableServer serves the page with the registry and the offline
// mailbox in dir (JetStream files), so tests can read what the server stored.
func startDurableServer(t *testing.T, dir string) *signaltest.Server {
	t.Helper()
	return signaltest.Start(t, signal.Config{Web: web.Handler(), DataDir: dir})
}

// noPlaintext fails when the server's database holds text.
func noPlaintext(t *testing.T, dir, text string) {
	t.Helper()
	raw := testutil.ReadTree(t, dir)
	if bytes.Contains(raw, []byte(text)) {
		t.Fatalf("the server's store holds the plaintext %q", text)
	}
	if !bytes.Contains(raw, []byte(`"ciphertext"`)) {
		t.Fatal("the server's store holds no sealed message at all")
	}
}

func gotMessage(from, text string) func(client.Event) bool {
	return func(e client.Event) bool {
		m, ok := e.(client.MessageEvent)
		return ok && m.From == from && m.Text == text
	}
}

// tick is a condition on the last outgoing message with text: its status
// and the tick the page shows.
func tick(text, status, sym string) string {
	return message("out", text, status) + ` && [...document.querySelectorAll('[data-testid=messages] li.msg.out')].some(li =>
		li.querySelector('.text').textContent === ` + jsq(text) + ` && li.querySelector('[data-testid=tick]').textContent === ` + jsq(sym) + `)`
}

// TestSealedBrowserToOfflineGo: the page seals a message to a Go client
// that is offline (its encryption key came with presence), the server
// stores only ciphertext (✓ on the page), and when the Go client signs in
// it opens the message, exactly once; the page then shows ✓✓.
func TestSealedBrowserToOfflineGo(t *testing.T) {
	dir := t.TempDir()
	srv := startDurableServer(t, dir)
	_, gkey, _ := ed25519.GenerateKey(nil)
	gopher := startGoClientKey(t, srv.URL, "gopher", gkey)
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contact-gopher")
	gopher.stop()
	p.waitFor("gopher offline, sealing offered", textHas("peer-status", "offline")+` && `+textHas("messages", "sealed end to end"))

	const text = "sealed in the browser ✉ — ünïcødé"
	p.do("display name", chromedp.SendKeys(sel("display-input"), "Alice Ünïcødé"+kb.Enter)) // sealed with the message
	p.send(text)
	p.waitFor("stored on the server (✓)", tick(text, "stored", "✓"))
	if n, err := srv.OfflineWaiting("gopher"); err != nil || n != 1 {
		t.Fatalf("%d waiting for gopher (%v), want 1", n, err)
	}
	noPlaintext(t, dir, "sealed in the browser")
	noPlaintext(t, dir, "Alice Ünïcødé")

	gopher = startGoClientKey(t, srv.URL, "gopher", gkey)
	m := gopher.ev.Wait(t, wait, "gopher opens the browser's sealed message", gotMessage("alice", text)).(client.MessageEvent)
	if m.Path != "server" || m.Display != "Alice Ünïcødé" {
		t.Errorf("path %q, display name %q; want server (sealed) and \"Alice Ünïcødé\"", m.Path, m.Display)
	}
	p.waitFor("delivered (✓✓)", tick(text, "delivered", "✓✓"))
	waitGo(t, "mailbox empty", func() bool { n, _ := srv.OfflineWaiting("gopher"); return n == 0 })

	// Exactly once: a new session gets nothing again. Sealed messages come
	// right after the welcome, so once a live chat from this session has
	// its receipt, any redelivery would already be here.
	gopher.stop()
	gopher = startGoClientKey(t, srv.URL, "gopher", gkey)
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))
	id, err := gopher.Send(context.Background(), "alice", "back again")
	if err != nil {
		t.Fatal(err)
	}
	gopher.ev.Wait(t, wait, "receipt for the live message", func(e client.Event) bool {
		d, ok := e.(client.DeliveredEvent)
		return ok && d.ID == id
	})
	if n := gopher.ev.Count(gotMessage("alice", text)); n != 0 {
		t.Fatalf("the sealed message came again (%d times) in a new session", n)
	}
	if n := p.countMessages(text); n != 1 {
		t.Errorf("the page shows its message %d times", n)
	}
}

// TestSealedGoToOfflineBrowser: a Go client seals a message to a browser
// user who is offline; when the page signs in again it opens it, shows it
// once, and its receipt reaches the Go client as delivered. A reload later
// shows nothing again (the server deleted it on the receipt).
func TestSealedGoToOfflineBrowser(t *testing.T) {
	dir := t.TempDir()
	srv := startDurableServer(t, dir)
	dora := startGoClient(t, srv.URL, "dora")
	p := openPage(t, srv.HTTP+"/", "erin")
	p.join("erin")
	dora.ev.Wait(t, wait, "dora sees erin", isOnline("erin"))
	mark := dora.ev.Len()
	p.do("leave the page", chromedp.Navigate("about:blank"))
	dora.ev.WaitSince(t, mark, wait, "erin offline", func(e client.Event) bool {
		x, ok := e.(client.PresenceEvent)
		return ok && x.Name == "erin" && x.Status == "offline"
	})
	const text = "sealed by Go for the browser — see you later"
	id, err := dora.Send(context.Background(), "erin", text)
	if err != nil {
		t.Fatal(err)
	}
	dora.ev.WaitSince(t, mark, wait, "sealed and stored", func(e client.Event) bool {
		x, ok := e.(client.StoredEvent)
		return ok && x.ID == id
	})
	noPlaintext(t, dir, "sealed by Go for the browser")

	p.do("come back", chromedp.Navigate(srv.HTTP+"/"))
	p.waitFor("signed in again", `window.parley?.sig?.online === true`)
	p.waitFor("unread notice", `document.querySelector('[data-testid=contact-dora]')?.getAttribute('aria-label').includes('1 unread')`)
	p.click("contact-dora")
	p.waitFor("the page opened it", message("in", text, ""))
	if path := eval[string](p, `document.querySelector('[data-testid=messages] li.msg.in:last-child').dataset.path`); path != "server" {
		t.Errorf("path %q, want server (sealed)", path)
	}
	d := dora.ev.WaitSince(t, mark, wait, "dora gets the receipt", func(e client.Event) bool {
		x, ok := e.(client.DeliveredEvent)
		return ok && x.ID == id
	}).(client.DeliveredEvent)
	if d.Path != "server" {
		t.Errorf("receipt path %q, want server", d.Path)
	}
	if n := p.countMessages(text); n != 1 {
		t.Errorf("shown %d times, want once", n)
	}
	waitGo(t, "mailbox empty", func() bool { n, _ := srv.OfflineWaiting("erin"); return n == 0 })
	if n := eval[int](p, `document.querySelectorAll('[data-testid=messages] li.msg.note').length`); n != 0 {
		t.Errorf("%d notes next to the message", n)
	}

	// After a reload the page shows it once, from its own history
	// (IndexedDB), and the server has nothing left to deliver.
	p.do("reload", chromedp.Reload())
	p.waitFor("signed in again", `window.parley?.sig?.online === true`)
	if _, err := dora.Send(context.Background(), "erin", "live after the reload"); err != nil {
		t.Fatal(err)
	}
	p.click("contact-dora")
	p.waitFor("live message", message("in", "live after the reload", ""))
	if n := p.countMessages(text); n != 1 {
		t.Errorf("after a reload the sealed message is shown %d times, want once (from the history)", n)
	}
}

// BenchmarkSealedInPage measures WebCrypto sealing and opening of one
// 200-byte message in the page (binding checks, X25519, HKDF, AES-GCM
// both ways), 100 at a time, to compare with client.BenchmarkSealOpen.
func BenchmarkSealedInPage(b *testing.B) {
	srv := startServer(b)
	p := openPage(b, srv.HTTP+"/", "bench")
	eval[chromedp.Void](p, `(async () => {
		const { Identity } = await import("/js/identity.js");
		const proto = await import("/js/proto.js");
		window.sealedMod = await import("/js/sealed.js");
		const mk = async () => {
			const kp = await crypto.subtle.generateKey({ name: "Ed25519" }, false, ["sign", "verify"]);
			const ekp = await crypto.subtle.generateKey({ name: "X25519" }, false, ["deriveBits"]);
			const raw = async (k) => proto.b64(new Uint8Array(await crypto.subtle.exportKey("raw", k)));
			return new Identity(kp, await raw(kp.publicKey), ekp, await raw(ekp.publicKey));
		};
		window.benchA = await mk();
		window.benchB = await mk();
		window.benchPeer = { name: "bob", key: benchB.publicKey, encKey: benchB.encPublicKey, encSig: await benchB.signEncKey("bob") };
	})()`)
	const rounds = 100
	var us []float64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ms := eval[float64](p, `(async () => {
			const t0 = performance.now();
			for (let i = 0; i < 100; i++) {
				const body = await sealedMod.seal(benchA, "alice", benchPeer, { id: "m" + i, text: "x".repeat(200), ts: 1 });
				await sealedMod.open(benchB, "bob", "alice", body);
			}
			return performance.now() - t0;
		})()`)
		us = append(us, ms*1000/rounds)
	}
	b.StopTimer()
	b.ReportMetric(median(us), "us/seal+open")
}
