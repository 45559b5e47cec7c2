package web_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/internal/testutil"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
	"github.com/parley-voice/parley/supernode"
	"github.com/parley-voice/parley/supernode/supernodetest"
	"github.com/parley-voice/parley/web"
	"github.com/pion/webrtc/v4"
)

// File transfer on the call page: browser <-> Go and browser <-> browser,
// on a direct path and relayed through a supernode, each received file
// hashing like the sent one; an image shows as a thumbnail; a refused
// offer and an unsafe name.

// pageFile is a transfer as the page's debug() shows it.
type pageFile struct {
	Peer   string `json:"peer"`
	Out    bool   `json:"out"`
	State  string `json:"state"`
	Bytes  int64  `json:"bytes"`
	Size   int64  `json:"size"`
	Name   string `json:"name"`
	Code   string `json:"code"`
	Reason string `json:"reason"`
	Path   string `json:"path"`
}

// transferNamed waits for the page's transfer of name (direction out or
// in) and returns its id.
func (p *page) transferNamed(name string, out bool) string {
	p.t.Helper()
	js := `Object.entries(window.parley.debug().files).find(([id, t]) => t.name === ` + jsq(name) + ` && t.out === ` + fmt.Sprint(out) + `)?.[0] ?? ""`
	p.waitFor("transfer of "+name, js+` !== ""`)
	return eval[string](p, js)
}

// fileState waits until the page's transfer id is in state (done, failed…).
func (p *page) fileState(id, state string) pageFile {
	p.t.Helper()
	p.waitForD("transfer "+id+" "+state, `["done","failed","declined"].includes(window.parley.debug().files[`+jsq(id)+`]?.state) || window.parley.debug().files[`+jsq(id)+`]?.state === `+jsq(state), 60*time.Second)
	f := eval[pageFile](p, `window.parley.debug().files[`+jsq(id)+`]`)
	if f.State != state {
		p.t.Fatalf("%s: transfer %s is %s (%s %s), want %s", p.tag, id, f.State, f.Code, f.Reason, state)
	}
	return f
}

// receivedHash is the SHA-256 of what the page received for id (WebCrypto
// over the Blob it offers for download).
func (p *page) receivedHash(id string) string {
	p.t.Helper()
	return eval[string](p, `(async () => { const t = window.parley.files.get(`+jsq(id)+`);
		const d = new Uint8Array(await crypto.subtle.digest("SHA-256", await t.blob.arrayBuffer()));
		return [...d].map((x) => x.toString(16).padStart(2, "0")).join(""); })()`)
}

// upload picks path in the file button's chooser.
func (p *page) upload(path string) {
	p.t.Helper()
	p.do("choose "+path, chromedp.SetUploadFiles(`[data-testid="file-input"]`, []string{path}))
}

// drop drops a file made of data onto the open conversation, as a drag
// from the desktop would.
func (p *page) drop(name, typ string, data []byte) {
	p.t.Helper()
	eval[bool](p, `(() => { const b = Uint8Array.from(atob(`+jsq(base64.StdEncoding.EncodeToString(data))+`), (c) => c.charCodeAt(0));
		const dt = new DataTransfer(); dt.items.add(new File([b], `+jsq(name)+`, { type: `+jsq(typ)+` }));
		const pane = document.getElementById("peer-pane");
		pane.dispatchEvent(new DragEvent("dragover", { dataTransfer: dt, bubbles: true, cancelable: true }));
		return pane.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true })); })()`)
}

// clickFile clicks a button (file-accept, file-decline) on transfer id's card.
func (p *page) clickFile(id, testid string) {
	p.t.Helper()
	sel := `[data-testid="file-card"][data-id="` + id + `"] [data-testid="` + testid + `"]`
	p.waitFor(testid+" on "+id, `!!document.querySelector(`+jsq(sel)+`)`)
	p.do("click "+testid, chromedp.Click(chromedp.CSS(sel)))
}

func smallPNG(t *testing.T) []byte {
	img := image.NewRGBA(image.Rect(0, 0, 64, 48))
	for x := 0; x < 64; x++ {
		for y := 0; y < 48; y++ {
			img.Set(x, y, color.RGBA{uint8(4 * x), uint8(5 * y), 200, 255})
		}
	}
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// fileClient is a Go client that takes files into a temporary folder.
func fileClient(t testing.TB, url, name string, relayOnly bool) (*goPeer, string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	dir := t.TempDir()
	c, err := client.New(client.Config{Server: url, Name: name, Key: key, SettingEngine: client.LoopbackOnly,
		ReconnectMin: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond,
		ICETransportPolicy: map[bool]webrtc.ICETransportPolicy{true: webrtc.ICETransportPolicyRelay}[relayOnly],
		Files:              client.FileConfig{Dir: filepath.Join(dir, "in"), StateDir: filepath.Join(dir, "state")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	g := &goPeer{Client: c, ev: testutil.Record(c.Events()), stop: func() { cancel(); <-done }}
	go func() {
		defer close(done)
		c.Run(ctx)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return g, filepath.Join(dir, "in")
}

func goFileEnd(id string) func(client.Event) bool {
	return func(e client.Event) bool {
		switch x := e.(type) {
		case client.FileDoneEvent:
			return x.ID == id
		case client.FileFailedEvent:
			return x.ID == id
		}
		return false
	}
}

// TestBrowserFiles: files between the page and the Go client and between
// two pages, direct and relayed.
func TestBrowserFiles(t *testing.T) {
	srv := signaltest.Start(t, signal.Config{Web: web.Handler(), Supernodes: signal.SupernodeConfig{
		AllowAddrs:   []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")},
		ProbeBytes:   256 << 10,
		MinMbps:      1,
		ProbeTimeout: 2 * time.Second,
	}})
	sn := supernodetest.Start(t, srv.URL, supernode.Config{Name: "relay1", Label: "lisbon", AllowPeers: supernodetest.Loopback,
		MaxSessionKbps: 400_000, MaxRelayMbps: 1000})
	sn.WaitState(t, proto.SupernodePromoted, 10*time.Second)
	files := t.TempDir()
	ctx := context.Background()

	for _, relayed := range []bool{false, true} {
		path := map[bool]string{false: "direct", true: "relay"}[relayed]
		t.Run(path, func(t *testing.T) {
			suffix := map[bool]string{false: "", true: "-r"}[relayed]
			gopher, inbox := fileClient(t, srv.URL, "gopher"+suffix, relayed)
			alice := openPage(t, srv.HTTP+"/", "alice"+suffix)
			bob := openPage(t, srv.HTTP+"/", "bob"+suffix)
			alice.join("alice" + suffix)
			bob.join("bob" + suffix)
			if relayed {
				for _, p := range []*page{alice, bob} {
					p.waitFor("the supernode's TURN server", `window.parley.iceServers.some((s) => s.urls.some((u) => u.startsWith("turn:127.0.0.1")))`)
					p.click("relay-only")
					p.waitFor("relay setting on", `window.parley.relayOnly`)
				}
			}
			gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"+suffix))

			// Browser -> Go, with the file button.
			src, sum := testutil.RandomFile(t, files, "from-browser"+suffix+".bin", 3<<20+17)
			alice.click("contact-gopher" + suffix)
			alice.upload(src)
			offer := gopher.ev.Wait(t, wait, "gopher gets the page's offer", func(e client.Event) bool {
				o, ok := e.(client.FileOfferEvent)
				return ok && o.Name == filepath.Base(src)
			}).(client.FileOfferEvent)
			if offer.Size != 3<<20+17 || offer.SHA256 != sum {
				t.Fatalf("offer from the page %+v; want size %d sha256 %s", offer, 3<<20+17, sum)
			}
			if err := gopher.AcceptFile(ctx, offer.ID); err != nil {
				t.Fatal(err)
			}
			got, ok := gopher.ev.Wait(t, 60*time.Second, "the file reaches Go", goFileEnd(offer.ID)).(client.FileDoneEvent)
			if !ok {
				t.Fatalf("browser -> Go: %+v", gopher.ev.Wait(t, time.Second, "end", goFileEnd(offer.ID)))
			}
			if h := testutil.FileSHA256(t, got.File); h != sum || filepath.Dir(got.File) != inbox {
				t.Fatalf("Go saved %s with SHA-256 %s; sent %s", got.File, h, sum)
			}
			pf := alice.fileState(offer.ID, "done")
			if pf.Path != path {
				t.Errorf("page's transfer went %q, want %s", pf.Path, path)
			}
			alice.waitFor("the sender's card says it arrived", `document.querySelector('[data-testid="file-card"][data-id="`+offer.ID+`"]').dataset.state === "done"`)

			// Go -> browser: the page accepts by click and gets a download link.
			src2, sum2 := testutil.RandomFile(t, files, "from-go"+suffix+".bin", 2<<20+5)
			id2, err := gopher.SendFile(ctx, "alice"+suffix, src2)
			if err != nil {
				t.Fatal(err)
			}
			alice.clickFile(id2, "file-accept")
			alice.fileState(id2, "done")
			if h := alice.receivedHash(id2); h != sum2 {
				t.Fatalf("page received SHA-256 %s, Go sent %s", h, sum2)
			}
			if d, ok := gopher.ev.Wait(t, wait, "Go hears it arrived", goFileEnd(id2)).(client.FileDoneEvent); !ok || d.Direction != "send" {
				t.Fatalf("Go -> browser ended %+v", d)
			}
			alice.waitFor("download link", `document.querySelector('[data-testid="file-card"][data-id="`+id2+`"] [data-testid="file-download"]')?.getAttribute("download") === `+jsq(filepath.Base(src2)))

			// Browser -> browser by drag and drop: an image, shown as a thumbnail on both sides.
			pic := smallPNG(t)
			ps := sha256.Sum256(pic)
			alice.click("contact-bob" + suffix)
			alice.drop("holiday.png", "image/png", pic)
			id3 := alice.transferNamed("holiday.png", true)
			bob.click("contact-alice" + suffix)
			bob.clickFile(id3, "file-accept")
			bf := bob.fileState(id3, "done")
			alice.fileState(id3, "done")
			if h := bob.receivedHash(id3); h != hex.EncodeToString(ps[:]) {
				t.Fatalf("bob received SHA-256 %s, alice sent %s", h, hex.EncodeToString(ps[:]))
			}
			if bf.Path != path {
				t.Errorf("browser -> browser went %q, want %s", bf.Path, path)
			}
			for _, p := range []*page{alice, bob} {
				p.waitFor("image thumbnail", `(() => { const i = document.querySelector('[data-testid="file-card"][data-id="`+id3+`"] [data-testid="file-thumb"]'); return !!i && i.complete && i.naturalWidth === 64; })()`)
			}
			if !relayed {
				bob.screenshot("file-received")
			}

			// A bigger one browser -> browser, to see bytes move in pieces.
			src4, sum4 := testutil.RandomFile(t, files, "video"+suffix+".mp4", 4<<20)
			alice.upload(src4)
			id4 := alice.transferNamed(filepath.Base(src4), true)
			bob.clickFile(id4, "file-accept")
			bob.fileState(id4, "done")
			if h := bob.receivedHash(id4); h != sum4 {
				t.Fatalf("bob received SHA-256 %s, alice sent %s", h, sum4)
			}
			if relayed {
				if st := sn.Stats(); st.BytesRelayed < 4<<20 {
					t.Errorf("the supernode relayed %d bytes", st.BytesRelayed)
				}
			}
		})
	}
}

// TestBrowserFileRefusals: the page declines an offer; the page refuses
// one over its size limit by itself; a name with a path is offered for
// download under a safe name.
func TestBrowserFileRefusals(t *testing.T) {
	srv := startServer(t)
	gopher, _ := fileClient(t, srv.URL, "gopher", false)
	p := openPage(t, srv.HTTP+"/", "alice")
	p.join("alice")
	gopher.ev.Wait(t, wait, "gopher sees alice", isOnline("alice"))
	ctx := context.Background()
	dir := t.TempDir()

	src, _ := testutil.RandomFile(t, dir, "unwanted.bin", 1000)
	id, err := gopher.SendFile(ctx, "alice", src)
	if err != nil {
		t.Fatal(err)
	}
	p.click("contact-gopher")
	p.clickFile(id, "file-decline")
	f, ok := gopher.ev.Wait(t, wait, "Go hears the refusal", goFileEnd(id)).(client.FileFailedEvent)
	if !ok || f.Code != proto.CodeDeclined {
		t.Fatalf("refused offer ended %+v", f)
	}
	p.fileState(id, "declined")

	// Over the page's limit (lowered for the test): refused without a click.
	eval[bool](p, `(() => { window.parley.files.maxSize = 2000; return true; })()`)
	big, _ := testutil.RandomFile(t, dir, "big.bin", 3000)
	id2, err := gopher.SendFile(ctx, "alice", big)
	if err != nil {
		t.Fatal(err)
	}
	f2, ok := gopher.ev.Wait(t, wait, "too large", goFileEnd(id2)).(client.FileFailedEvent)
	if !ok || f2.Code != proto.CodeTooLarge {
		t.Fatalf("oversized offer ended %+v", f2)
	}
	p.waitFor("the card says why", `document.querySelector('[data-testid="file-card"][data-id="`+id2+`"] [data-testid="file-error"]')?.textContent.includes("limit")`)
	eval[bool](p, `(() => { window.parley.files.maxSize = 2 ** 31; return true; })()`)

	// An unsafe name is offered for download under a safe one.
	evil, sum := testutil.RandomFile(t, dir, "evil", 500)
	id3, err := gopher.SendFileNamed(ctx, "alice", evil, "../../.bashrc")
	if err != nil {
		t.Fatal(err)
	}
	p.clickFile(id3, "file-accept")
	p.fileState(id3, "done")
	if h := p.receivedHash(id3); h != sum {
		t.Fatalf("received %s, sent %s", h, sum)
	}
	if got := eval[string](p, `document.querySelector('[data-testid="file-card"][data-id="`+id3+`"] [data-testid="file-download"]').getAttribute("download")`); got != "_.._.bashrc" {
		t.Errorf("download name %q, want _.._.bashrc", got)
	}
}

// TestFileLogicMatchesGo: the page's SHA-256 (fed in pieces), safe names
// and file message checks agree with the Go side's.
func TestFileLogicMatchesGo(t *testing.T) {
	srv := startServer(t)
	p := openPage(t, srv.HTTP+"/", "logic")
	for _, n := range []int{0, 1, 55, 56, 63, 64, 65, 1000, 100_000} {
		b := make([]byte, n)
		rand.Read(b)
		want := sha256.Sum256(b)
		got := eval[[]string](p, `(async () => { const { Sha256 } = await import("/js/sha256.js");
			const b = Uint8Array.from(atob(`+jsq(base64.StdEncoding.EncodeToString(b))+`), (c) => c.charCodeAt(0));
			const whole = new Sha256().update(b).hex();
			const h = new Sha256(); let i = 0, step = 1; const mid = [];
			while (i < b.length) { h.update(b.subarray(i, i + step)); i += step; step = step * 3 % 97 + 1; if (mid.length === 0 && i >= b.length / 2) mid.push(h.hex()); }
			return [whole, h.hex()]; })()`)
		for _, g := range got {
			if g != hex.EncodeToString(want[:]) {
				t.Errorf("%d bytes: page SHA-256 %s, Go %x", n, g, want)
			}
		}
	}
	names := []string{"photo.jpg", "../../etc/passwd", `..\x\y`, "..", ".", "", ".hidden", "a/b:c*d?e\"f<g>h|i", "  x  ", "trail.. ", "tab\there", "é" + string(make([]byte, 0)), "日本語の写真.png", string([]rune{0x7f, 'a', 0x85})}
	long := ""
	for i := 0; i < 200; i++ {
		long += "é"
	}
	names = append(names, long)
	js := make([]string, 0, len(names))
	for _, n := range names {
		js = append(js, jsq(n))
	}
	got := eval[[]string](p, `(async () => { const proto = await import("/js/proto.js"); return [`+joinComma(js)+`].map(proto.safeFileName); })()`)
	for i, n := range names {
		if want := proto.SafeFileName(n); got[i] != want {
			t.Errorf("safe name of %q: page %q, Go %q", n, got[i], want)
		}
	}
	h := hex.EncodeToString(make([]byte, 32))
	ctls := []proto.FileControl{
		{Op: proto.FileOpOffer, ID: "t1", File: &proto.FileInfo{Name: "a", Size: 1, SHA256: h}},
		{Op: proto.FileOpOffer, ID: "t1", File: &proto.FileInfo{Name: "a\x01", Size: 1, SHA256: h}},
		{Op: proto.FileOpOffer, ID: "t1"},
		{Op: proto.FileOpAccept, ID: "t1"},
		{Op: proto.FileOpAccept, ID: "t1", Offset: 5, Hash: h},
		{Op: proto.FileOpAccept, ID: "t1", Offset: 5},
		{Op: proto.FileOpAccept, ID: "t1", Hash: h},
		{Op: proto.FileOpDone, ID: "t1"},
		{Op: proto.FileOpDone, ID: "bad id"},
		{Op: proto.FileOpFailed, ID: "t1", Code: proto.CodeHashMismatch, Reason: "x"},
		{Op: "explode", ID: "t1"},
	}
	for _, c := range ctls {
		b, _ := json.Marshal(c)
		page := eval[bool](p, `(async () => { const proto = await import("/js/proto.js"); return proto.checkFileControl(`+string(b)+`) === null; })()`)
		if goOK := c.Validate() == nil; page != goOK {
			t.Errorf("%s: page says valid=%v, Go %v", b, page, goOK)
		}
	}
}

func joinComma(s []string) string {
	out := ""
	for i, x := range s {
		if i > 0 {
			out += ","
		}
		out += x
	}
	return out
}
