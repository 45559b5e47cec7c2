package web_test

import (
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/parley-voice/parley/web"
)

func get(t *testing.T, h http.Handler, method, path string, hdr map[string]string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, path, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func TestHandlerServesPage(t *testing.T) {
	h := web.Handler()
	cases := []struct {
		name, method, path string
		hdr                map[string]string
		status             int
		ctype              string
	}{
		{"index", "GET", "/", nil, 200, "text/html"},
		{"index by name redirects", "GET", "/index.html", nil, 301, ""},
		{"module", "GET", "/js/app.js", nil, 200, "text/javascript"},
		{"stylesheet", "GET", "/style.css", nil, 200, "text/css"},
		{"icon", "GET", "/favicon.svg", nil, 200, "image/svg+xml"},
		{"head", "HEAD", "/js/proto.js", nil, 200, "text/javascript"},
		{"missing", "GET", "/nope.js", nil, 404, ""},
		{"escape attempt", "GET", "/../web.go", nil, 404, ""},
		{"post refused", "POST", "/", nil, 405, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp := get(t, h, c.method, c.path, c.hdr)
			if resp.StatusCode != c.status {
				t.Fatalf("%s %s: status %d, want %d", c.method, c.path, resp.StatusCode, c.status)
			}
			if c.ctype != "" && !strings.HasPrefix(resp.Header.Get("Content-Type"), c.ctype) {
				t.Errorf("Content-Type %q, want %s", resp.Header.Get("Content-Type"), c.ctype)
			}
			if csp := resp.Header.Get("Content-Security-Policy"); c.status != 405 && !strings.Contains(csp, "script-src 'self'") {
				t.Errorf("CSP %q", csp)
			}
		})
	}
}

func TestHandlerETag(t *testing.T) {
	h := web.Handler()
	resp := get(t, h, "GET", "/js/calls.js", nil)
	tag := resp.Header.Get("ETag")
	if resp.StatusCode != 200 || len(tag) < 10 || resp.Header.Get("Cache-Control") != "no-cache" {
		t.Fatalf("status %d etag %q cache %q", resp.StatusCode, tag, resp.Header.Get("Cache-Control"))
	}
	if again := get(t, h, "GET", "/js/calls.js", map[string]string{"If-None-Match": tag}); again.StatusCode != http.StatusNotModified {
		t.Errorf("revalidation: status %d, want 304", again.StatusCode)
	}
	if other := get(t, h, "GET", "/js/chat.js", nil).Header.Get("ETag"); other == tag {
		t.Errorf("two files share the ETag %s", tag)
	}
}

// TestPageContract checks the page's static contract: the data-testid
// attributes tests and people rely on, labelled inputs, assets that resolve,
// and no reference to anything outside this server (no CDN).
func TestPageContract(t *testing.T) {
	h := web.Handler()
	index := body(t, h, "/")
	for _, id := range []string{"name-input", "join", "message-input", "send", "messages", "call", "answer", "decline", "hangup", "mute", "call-state", "mic-select", "attach", "file-input"} {
		if !strings.Contains(index, `data-testid="`+id+`"`) {
			t.Errorf("index.html lacks data-testid=%q", id)
		}
	}
	// Every input and select has a <label for=...>.
	for _, m := range regexp.MustCompile(`<(?:input|select)[^>]*\bid="([^"]+)"`).FindAllStringSubmatch(index, -1) {
		if !strings.Contains(index, `<label for="`+m[1]+`"`) {
			t.Errorf("control #%s has no label", m[1])
		}
	}
	// Local references resolve; nothing is loaded from elsewhere.
	external := regexp.MustCompile(`(?:src|href)="(?:https?:)?//|from\s+"(?:https?:)?//|import\(\s*"(?:https?:)?//|url\(\s*["']?(?:https?:)?//`)
	ref := regexp.MustCompile(`(?:src|href)="([^"#]+)"|from\s+"(\./[^"]+)"|url\("([^"]+)"\)`)
	err := fs.WalkDir(os.DirFS("static"), ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		text := body(t, h, strings.TrimSuffix("/"+p, "index.html"))
		if loc := external.FindStringIndex(text); loc != nil {
			t.Errorf("%s loads something from another origin: %q", p, text[loc[0]:loc[1]])
		}
		for _, m := range ref.FindAllStringSubmatch(text, -1) {
			target := m[1] + m[2] + m[3]
			if strings.HasPrefix(target, "data:") {
				continue
			}
			full := "/" + filepath.ToSlash(filepath.Join(filepath.Dir(p), target))
			if resp := get(t, h, "GET", full, nil); resp.StatusCode != 200 {
				t.Errorf("%s refers to %s: status %d", p, full, resp.StatusCode)
			}
		}
		if strings.HasSuffix(p, ".js") && strings.Contains(text, "innerHTML") {
			t.Errorf("%s uses innerHTML; build DOM nodes so chat text can never become markup", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func body(t *testing.T, h http.Handler, path string) string {
	t.Helper()
	resp := get(t, h, "GET", path, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
