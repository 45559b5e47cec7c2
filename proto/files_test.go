package proto

import (
	"errors"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

const testHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

func TestFileInfoValidate(t *testing.T) {
	ok := FileInfo{Name: "photo.jpg", Size: 2 << 20, Type: "image/jpeg", SHA256: testHash}
	for _, tc := range []struct {
		name string
		mod  func(*FileInfo)
		code Code // "" = valid
	}{
		{"valid", func(*FileInfo) {}, ""},
		{"empty file", func(f *FileInfo) { f.Size = 0 }, ""},
		{"no type", func(f *FileInfo) { f.Type = "" }, ""},
		{"path in name is allowed on the wire", func(f *FileInfo) { f.Name = "../../etc/passwd" }, ""},
		{"unicode name", func(f *FileInfo) { f.Name = "Ferien 2026 — Strand.jpg" }, ""},
		{"empty name", func(f *FileInfo) { f.Name = "" }, CodeBadRequest},
		{"long name", func(f *FileInfo) { f.Name = strings.Repeat("a", 256) }, CodeBadRequest},
		{"control char", func(f *FileInfo) { f.Name = "a\nb" }, CodeBadRequest},
		{"bad utf8", func(f *FileInfo) { f.Name = "a\xffb" }, CodeBadRequest},
		{"negative size", func(f *FileInfo) { f.Size = -1 }, CodeBadRequest},
		{"huge size", func(f *FileInfo) { f.Size = MaxFileSize + 1 }, CodeBadRequest},
		{"type with space", func(f *FileInfo) { f.Type = "image/ jpeg" }, CodeBadRequest},
		{"no hash", func(f *FileInfo) { f.SHA256 = "" }, CodeBadRequest},
		{"upper-case hash", func(f *FileInfo) { f.SHA256 = strings.ToUpper(testHash) }, CodeBadRequest},
		{"short hash", func(f *FileInfo) { f.SHA256 = testHash[:10] }, CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := ok
			tc.mod(&f)
			err := f.Validate()
			if tc.code == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.code != "" && CodeOf(err) != tc.code {
				t.Fatalf("error %v, want code %s", err, tc.code)
			}
		})
	}
}

func TestFileControlValidate(t *testing.T) {
	file := &FileInfo{Name: "a.txt", Size: 3, SHA256: testHash}
	for _, tc := range []struct {
		name string
		c    FileControl
		code Code
	}{
		{"offer", FileControl{Op: FileOpOffer, ID: "t1", File: file}, ""},
		{"accept from zero", FileControl{Op: FileOpAccept, ID: "t1"}, ""},
		{"resume", FileControl{Op: FileOpAccept, ID: "t1", Offset: 1 << 20, Hash: testHash}, ""},
		{"decline", FileControl{Op: FileOpDecline, ID: "t1", Code: CodeTooLarge, Reason: "over 1 GiB"}, ""},
		{"done", FileControl{Op: FileOpDone, ID: "t1"}, ""},
		{"failed", FileControl{Op: FileOpFailed, ID: "t1", Code: CodeHashMismatch}, ""},
		{"offer without file", FileControl{Op: FileOpOffer, ID: "t1"}, CodeBadRequest},
		{"resume without hash", FileControl{Op: FileOpAccept, ID: "t1", Offset: 5}, CodeBadRequest},
		{"hash without offset", FileControl{Op: FileOpAccept, ID: "t1", Hash: testHash}, CodeBadRequest},
		{"negative offset", FileControl{Op: FileOpAccept, ID: "t1", Offset: -1, Hash: testHash}, CodeBadRequest},
		{"bad id", FileControl{Op: FileOpDone, ID: "a b"}, CodeBadRequest},
		{"unknown op", FileControl{Op: "explode", ID: "t1"}, CodeUnknownType},
		{"long reason", FileControl{Op: FileOpFailed, ID: "t1", Reason: strings.Repeat("x", 300)}, CodeBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.c.Validate()
			if tc.code == "" && err != nil {
				t.Fatalf("unexpected error %v", err)
			}
			if tc.code != "" && CodeOf(err) != tc.code {
				t.Fatalf("error %v, want code %s", err, tc.code)
			}
		})
	}
}

// TestFileMessagesTravel: a file offer as chat (routed and on the data
// channel) and every FileControl op survive encode and decode.
func TestFileMessagesTravel(t *testing.T) {
	file := &FileInfo{Name: "a.txt", Size: 3, Type: "text/plain", SHA256: testHash}
	raw := mustEncode(t, TypeChat, "t1", "bob", &Chat{ID: "t1", Text: "📎 a.txt (3 B)", File: file})
	env, err := Decode(raw)
	if err != nil {
		t.Fatal(err)
	}
	c, err := DecodeBody[*Chat](env)
	if err != nil || !reflect.DeepEqual(c.File, file) {
		t.Fatalf("chat offer: %+v, %v", c, err)
	}
	for _, op := range []*FileControl{
		{Op: FileOpOffer, ID: "t1", File: file},
		{Op: FileOpAccept, ID: "t1", Offset: 7, Hash: testHash},
		{Op: FileOpDecline, ID: "t1", Code: CodeDeclined, Reason: "no thanks"},
		{Op: FileOpDone, ID: "t1"},
	} {
		env, err := Decode(mustEncode(t, TypeFile, "", "bob", op))
		if err != nil {
			t.Fatalf("%s via server: %v", op.Op, err)
		}
		if !env.Type.Routed() {
			t.Fatal("file is not routed")
		}
		got, err := DecodeBody[*FileControl](env)
		if err != nil || !reflect.DeepEqual(got, op) {
			t.Fatalf("%s via server: %+v, %v", op.Op, got, err)
		}
		b, err := EncodeDC(DCFileMessage(op))
		if err != nil {
			t.Fatal(err)
		}
		m, err := DecodeDC(b)
		if err != nil || !reflect.DeepEqual(m.FileControl(), op) {
			t.Fatalf("%s on the data channel: %+v, %v", op.Op, m, err)
		}
	}
	if _, err := DecodeDC([]byte(`{"type":"chat","id":"t1","text":"x","file":{"name":"","size":1,"sha256":"` + testHash + `"}}`)); CodeOf(err) != CodeBadRequest {
		t.Errorf("chat with a bad file: %v", err)
	}
}

func TestSafeFileName(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"photo.jpg", "photo.jpg"},
		{"Ferien 2026 — Strand.jpg", "Ferien 2026 — Strand.jpg"},
		{"../../etc/passwd", "_.._etc_passwd"},
		{"../evil.sh", "_evil.sh"},
		{"/etc/passwd", "_etc_passwd"},
		{`..\..\windows\system32`, `_.._windows_system32`},
		{"a/b/c.txt", "a_b_c.txt"},
		{"..", "file"},
		{".", "file"},
		{"", "file"},
		{"/", "file"},
		{".bashrc", "bashrc"},
		{"   spaced.txt  ", "spaced.txt"},
		{"trailing.", "trailing"},
		{"c:evil", "c_evil"},
		{"bad\x00nul", "bad_nul"},
		{"bad\xffutf8", "bad_utf8"},
		{strings.Repeat("é", 200), strings.Repeat("é", 127)},
	} {
		if got := SafeFileName(tc.in); got != tc.want {
			t.Errorf("SafeFileName(%q) = %q, want %q", tc.in, got, tc.want)
		}
		checkSafeName(t, tc.in)
	}
}

// checkSafeName asserts what every safe name must be.
func checkSafeName(t *testing.T, in string) {
	t.Helper()
	s := SafeFileName(in)
	dir := filepath.Join("downloads", "x")
	p := filepath.Join(dir, s)
	if s == "" || len(s) > MaxFileNameLen || !utf8.ValidString(s) || strings.HasPrefix(s, ".") ||
		strings.ContainsAny(s, `/\`) || filepath.Dir(p) != dir || filepath.Base(p) != s {
		t.Fatalf("SafeFileName(%q) = %q is not a plain name inside the folder", in, s)
	}
}

func TestFileChannelLabel(t *testing.T) {
	if id, ok := FileChannelID(FileChannelLabel("abc_1")); !ok || id != "abc_1" {
		t.Errorf("round trip: %q %v", id, ok)
	}
	for _, l := range []string{"parley-chat", "parley-file:", "parley-file:a b", "x:abc"} {
		if _, ok := FileChannelID(l); ok {
			t.Errorf("%q accepted", l)
		}
	}
}

func TestDecodeFileHeader(t *testing.T) {
	h, err := DecodeFileHeader([]byte(`{"id":"t1","offset":65536}`))
	if err != nil || h.ID != "t1" || h.Offset != 65536 {
		t.Fatalf("%+v %v", h, err)
	}
	for _, raw := range []string{`{"id":"t1","offset":-1}`, `{"offset":1}`, `nope`, `{"id":"` + strings.Repeat("a", 300) + `"}`} {
		if _, err := DecodeFileHeader([]byte(raw)); err == nil {
			t.Errorf("%s: no error", raw)
		}
	}
}

// FuzzDecodeFileHeader: any bytes fail with a *Error or decode to a header
// that validates again.
func FuzzDecodeFileHeader(f *testing.F) {
	f.Add([]byte(`{"id":"t1","offset":0}`))
	f.Add([]byte(`{"id":"t1","offset":1048576}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := DecodeFileHeader(data)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("non-protocol error %T", err)
			}
			return
		}
		if ValidateID(h.ID) != nil || h.Offset < 0 {
			t.Fatalf("decoded an invalid header %+v", h)
		}
	})
}

// FuzzSafeFileName: whatever a peer names a file, the safe name is a
// plain name inside the download folder.
func FuzzSafeFileName(f *testing.F) {
	for _, s := range []string{"photo.jpg", "../../etc/passwd", `..\x`, "..", ".hidden", "a/b", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		checkSafeName(t, name)
	})
}
