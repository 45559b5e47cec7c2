package main

import (
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/parley-voice/parley/client"
	"github.com/parley-voice/parley/proto"
)

// TestEveryEventHasAPublicName: every type in package client that
// implements client.Event is in client.EventKinds, and the JSON mode
// gives each a name of its own (never "unknown") and a JSON shape.
func TestEveryEventHasAPublicName(t *testing.T) {
	fset := token.NewFileSet()
	srcs, err := filepath.Glob("../../client/*.go")
	if err != nil || len(srcs) == 0 {
		t.Fatalf("client sources: %v", err)
	}
	var declared []string
	for _, src := range srcs {
		if strings.HasSuffix(src, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, src, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fn, ok := d.(*ast.FuncDecl)
			if !ok || fn.Name.Name != "event" || fn.Recv == nil || len(fn.Recv.List) != 1 {
				continue
			}
			if id, ok := fn.Recv.List[0].Type.(*ast.Ident); ok {
				declared = append(declared, id.Name)
			}
		}
	}
	var listed []string
	names := map[string]string{}
	snake := regexp.MustCompile(`^[a-z][a-z0-9_]*$`)
	for _, ev := range client.EventKinds() {
		typ := reflect.TypeOf(ev).Name()
		listed = append(listed, typ)
		o, ok := eventJSON(ev).(map[string]any)
		if !ok {
			t.Errorf("%s maps to %T, want a JSON object", typ, eventJSON(ev))
			continue
		}
		name, _ := o["event"].(string)
		if name == "" || name == "unknown" {
			t.Errorf("%s has no public name in JSON mode: %v", typ, o)
			continue
		}
		if other, dup := names[name]; dup {
			t.Errorf("%s and %s are both %q", typ, other, name)
		}
		names[name] = typ
		if _, err := json.Marshal(o); err != nil {
			t.Errorf("%s does not encode: %v", typ, err)
		}
		for k := range o { // one naming style for every event
			if !snake.MatchString(k) {
				t.Errorf("%s has the key %q: not snake_case", typ, k)
			}
		}
	}
	sort.Strings(declared)
	sort.Strings(listed)
	if !reflect.DeepEqual(declared, listed) {
		t.Errorf("types implementing client.Event: %v\nclient.EventKinds lists: %v", declared, listed)
	}
}

// TestFileEventsJSON: the file events' public shape.
func TestFileEventsJSON(t *testing.T) {
	for _, tc := range []struct {
		ev   client.Event
		want string
	}{
		{client.FileOfferEvent{ID: "t1", From: "bob", Name: "a.jpg", Size: 1 << 60, Type: "image/jpeg", SHA256: "ab"},
			`{"event":"file-offer","from":"bob","id":"t1","name":"a.jpg","sha256":"ab","size":1152921504606846976,"type":"image/jpeg"}`},
		{client.FileProgressEvent{ID: "t1", Peer: "bob", Direction: "send", Bytes: 10, Size: 20, Rate: 5, ETA: 2, Path: "relay", Via: "sn1"},
			`{"bytes":10,"direction":"send","eta_s":2,"event":"file-progress","id":"t1","path":"relay","peer":"bob","rate":5,"size":20,"via":"sn1"}`},
		{client.FileDoneEvent{ID: "t1", Peer: "bob", Direction: "receive", Name: "a.jpg", File: "/d/a.jpg", Size: 20, SHA256: "ab"},
			`{"direction":"receive","event":"file-done","file":"/d/a.jpg","id":"t1","name":"a.jpg","peer":"bob","sha256":"ab","size":20}`},
		{client.FileFailedEvent{ID: "t1", Peer: "bob", Direction: "send", Name: "a.jpg", Code: proto.CodeDeclined, Reason: "no"},
			`{"code":"declined","direction":"send","event":"file-failed","id":"t1","name":"a.jpg","peer":"bob","reason":"no"}`},
	} {
		b, err := json.Marshal(eventJSON(tc.ev))
		if err != nil || string(b) != tc.want {
			t.Errorf("%T:\n got %s\nwant %s (%v)", tc.ev, b, tc.want, err)
		}
	}
}

// TestJSONModeDocumented: the README's JSON-lines section shows every
// command the mode takes and every event it prints — the client's events
// with every key they always carry, and the events the mode makes itself
// (sent, who, ok, ...) — so a new event, key or command fails here until
// it is written there.
func TestJSONModeDocumented(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	doc := string(readme)
	start := strings.Index(doc, "#### JSON-lines mode")
	if start < 0 {
		t.Fatal("README has no JSON-lines section")
	}
	doc = doc[start:]
	if end := strings.Index(doc[1:], "\n### "); end > 0 {
		doc = doc[:end+1]
	}
	lineOf := func(prefix string) []string {
		var out []string
		for _, l := range strings.Split(doc, "\n") {
			if strings.HasPrefix(l, prefix) {
				out = append(out, l)
			}
		}
		return out
	}
	for _, ev := range client.EventKinds() {
		o := eventJSON(ev).(map[string]any) // its zero value: the keys it always has
		name := o["event"].(string)
		lines := lineOf(`{"event":"` + name + `"`)
		if len(lines) == 0 {
			t.Errorf("README: no example of the %q event (%T)", name, ev)
			continue
		}
		for k := range o {
			found := false
			for _, l := range lines {
				found = found || strings.Contains(l, `"`+k+`":`)
			}
			if !found {
				t.Errorf("README: the %q event's example lacks its key %q", name, k)
			}
		}
	}
	src := ""
	for _, f := range []string{"chat_json.go", "chat_supernode.go"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src += string(b)
	}
	made := regexp.MustCompile(`"event": "([a-z-]+)"`).FindAllStringSubmatch(src, -1)
	if len(made) < 5 {
		t.Fatalf("found only %d events the JSON mode makes itself", len(made))
	}
	for _, m := range made {
		if len(lineOf(`{"event":"`+m[1]+`"`)) == 0 {
			t.Errorf("README: no example of the %q event", m[1])
		}
	}
	body := src[strings.Index(src, "func runJSONCommand"):]
	body = body[:strings.Index(body, "\n}\n")]
	cmds := regexp.MustCompile(`case "([a-z-]+)"`).FindAllStringSubmatch(body, -1)
	if len(cmds) < 10 {
		t.Fatalf("found only %d commands", len(cmds))
	}
	for _, m := range append(cmds, []string{"", "quit"}) {
		if len(lineOf(`{"cmd":"`+m[1]+`"`)) == 0 {
			t.Errorf("README: no example of the %q command", m[1])
		}
	}
}
