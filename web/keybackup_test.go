package web_test

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/parley-voice/parley/client"
)

// TestKeyBackupAndRestore (issue 12 "a way not to lose a name"): the page
// backs up its key under a passphrase in the file format of `parley key
// export`; another browser restores it (a wrong passphrase is refused in
// words) and is the same person to the server; the Go client opens the
// page's backup, and the page restores a backup the Go client wrote.
func TestKeyBackupAndRestore(t *testing.T) {
	srv := startServer(t)
	const pass = "correct horse battery"
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	key := eval[string](p, `window.parley.debug().publicKey`)
	p.click("backup-open")
	p.do("type the passphrase", chromedp.SendKeys(sel("key-pass"), pass+kb.Enter))
	p.waitFor("backup made", `window.parley.lastBackup.includes("parley_key_backup")`)
	backup := eval[string](p, `window.parley.lastBackup`)
	if strings.Contains(backup, "ed25519_seed") {
		t.Fatal("the backup holds the key in the clear")
	}

	// The Go client opens what the page wrote: same name, same key.
	name, id, _, err := client.ImportKeys([]byte(backup), pass)
	if err != nil || name != "alice" || base64.StdEncoding.EncodeToString(id.Public().(ed25519.PublicKey)) != key {
		t.Fatalf("Go import of the page's backup: %v, name %q", err, name)
	}

	// Another browser restores it and signs in as alice with alice's key.
	dir := t.TempDir()
	file := filepath.Join(dir, "parley-key-alice.json")
	if err := os.WriteFile(file, []byte(backup), 0o600); err != nil {
		t.Fatal(err)
	}
	p.do("alice leaves", chromedp.Navigate("about:blank"))
	q := openPage(t, srv.HTTP+"/", "new-device")
	restore := func(q *page, file, pass string) {
		t.Helper()
		q.click("restore-open")
		q.do("choose the backup", chromedp.SetUploadFiles(`[data-testid="key-file"]`, []string{file}))
		q.do("type the passphrase", chromedp.SendKeys(sel("key-pass"), pass+kb.Enter))
	}
	restore(q, file, "not the passphrase")
	q.waitFor("wrong passphrase said", textHas("key-msg", "Wrong passphrase"))
	eval[any](q, elem("key-pass")+`.value = ""`)
	q.do("type the passphrase", chromedp.SendKeys(sel("key-pass"), pass+kb.Enter))
	q.waitAcrossReload("signed in as alice", `window.parley?.sig?.online === true && `+textHas("me-name", "alice"))
	if k := eval[string](q, `window.parley.debug().publicKey`); k != key {
		t.Errorf("restored key %s, want %s", k, key)
	}

	// A backup the terminal wrote makes a browser that terminal's person.
	_, goKey, _ := ed25519.GenerateKey(nil)
	goEnc, _ := client.LoadOrCreateEncKey(t.TempDir())
	data, err := client.ExportKeys("gopher", goKey, goEnc, pass)
	if err != nil {
		t.Fatal(err)
	}
	goFile := filepath.Join(dir, "gopher.json")
	os.WriteFile(goFile, data, 0o600)
	r := openPage(t, srv.HTTP+"/", "gopher-browser")
	restore(r, goFile, pass)
	r.waitAcrossReload("signed in as gopher", `window.parley?.sig?.online === true && `+textHas("me-name", "gopher"))
	want := base64.StdEncoding.EncodeToString(goKey.Public().(ed25519.PublicKey))
	if k := eval[string](r, `window.parley.debug().publicKey`); k != want {
		t.Errorf("page restored %s, want the Go key %s", k, want)
	}
	if e := eval[string](r, `window.parley.debug().encPublicKey`); e != base64.StdEncoding.EncodeToString(goEnc.PublicKey().Bytes()) {
		t.Errorf("page's encryption key %s is not the Go one", e)
	}
}

// waitAcrossReload polls cond while the page reloads itself (a poll
// running when the page navigates fails, so each try is short).
func (p *page) waitAcrossReload(what, cond string) {
	p.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		ctx, cancel := context.WithTimeout(p.ctx, 2*time.Second)
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](`(() => { try { return !!(`+cond+`); } catch { return false; } })()`))
		cancel()
		if err == nil && ok {
			return
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("%s: waiting for %s (last error %v)\nstate: %s", p.tag, what, err, p.state())
		}
		time.Sleep(100 * time.Millisecond)
	}
}
