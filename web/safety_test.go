package web_test

import (
	"crypto/ed25519"
	"encoding/base64"
	"testing"

	"github.com/parley-voice/parley/internal/history"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/web"
)

// TestSafetyNumberAndChangedKey (issue 12: "safety numbers and the
// changed-key warning on the page too"): the page shows the same safety
// number as the terminal for a pair of keys, marks a compared contact
// verified, and warns loudly when a contact's key changes until the person
// accepts the new one.
func TestSafetyNumberAndChangedKey(t *testing.T) {
	srv := signaltest.StartRestartable(t, signal.Config{Web: web.Handler()})
	_, goKey, _ := ed25519.GenerateKey(nil)
	gopher := startGoClientKey(t, srv.URL, "gopher", goKey)
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	p.click("contact-gopher")
	p.click("safety")
	mine, _ := base64.StdEncoding.DecodeString(eval[string](p, `window.parley.debug().publicKey`))
	want := history.SafetyNumber("alice", mine, "gopher", goKey.Public().(ed25519.PublicKey))
	p.waitFor("the terminal's safety number", textHas("safety-number", want))
	p.screenshot("safety-number")
	p.click("safety-verify")
	p.waitFor("verified", textHas("peer-status", "verified ✔"))

	// Gopher comes back with another key (the server forgot the name, as
	// after a reset): the page warns and refuses until accepted.
	gopher.stop()
	srv.Down()
	srv.Up()
	_, newKey, _ := ed25519.GenerateKey(nil)
	startGoClientKey(t, srv.URL, "gopher", newKey)
	p.waitForD("signed in again", `window.parley?.sig?.online === true`, 30e9)
	p.click("contact-gopher")
	p.waitFor("changed key warned", visible("key-changed")+` && `+textHas("key-changed", "gopher’s key changed")+` && `+textHas("peer-status", "key changed"))
	if eval[bool](p, textHas("peer-status", "verified")) {
		t.Error("still shown verified with a changed key")
	}
	p.screenshot("key-changed")
	p.click("key-accept")
	p.waitFor("accepted", `document.querySelector('[data-testid=key-changed]').hidden`)
}
