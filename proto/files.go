package proto

import (
	"encoding/json"
	"path/filepath"
	"strings"
	"unicode"
	"unicode/utf8"
)

// File transfer. A file goes from one peer to another over the peer
// connection they already share, never through the server:
//
//  1. The sender offers it as a chat message whose File names it
//     (FileInfo: name, size, type, SHA-256 of the whole file). The offer
//     travels like any chat message — the chat data channel, the server,
//     or sealed end to end for an offline recipient — so it is shown in
//     the conversation and acknowledged once.
//  2. The receiver answers with FileControl messages (op accept, decline,
//     done, failed) on the chat data channel (DCFile) or, while none is
//     open, through the server (TypeFile, routed, never stored). Accept
//     carries the offset to send from and, when it is not zero, the
//     SHA-256 of the bytes the receiver already has, which the sender
//     checks against its own file: a transfer resumes from the last
//     verified byte, not from zero.
//  3. For each accept the sender opens a data channel (reliable, ordered)
//     labelled FileChannelLabel(id), sends one FileHeader (text) with the
//     offset it starts at, then the file's bytes as binary messages of at
//     most MaxFileChunk bytes, paced by the channel's buffered amount.
//  4. The receiver writes to a temporary name, checks the SHA-256 of the
//     whole file against the offer, renames it to a safe name in its
//     download folder (SafeFileName) and answers done (or failed with
//     CodeHashMismatch).
//
// Either side re-sends its view after a lost path or a restart: the
// sender an op offer (FileControl with File), the receiver an accept from
// its current offset. Every message is idempotent per transfer id.
const (
	TypeFile Type = "file" // C→C (routed, not stored): a FileControl
)

// DCFile is a FileControl on the chat data channel (its fields inline).
const DCFile DCType = "file"

// FileChannelPrefix starts the label of a file transfer's data channel;
// the transfer id follows. FileChannelProtocol is its subprotocol.
const (
	FileChannelPrefix   = "parley-file:"
	FileChannelProtocol = "parley-file/1"
)

// Limits of file transfer messages.
const (
	MaxFileNameLen = 255     // bytes of UTF-8
	MaxFileTypeLen = 127     // a MIME type
	MaxFileSize    = 1 << 46 // 64 TiB: any real file
	MaxFileChunk   = 64 << 10
	MaxFileReason  = 256
)

// FileInfo describes an offered file.
type FileInfo struct {
	Name   string `json:"name"`           // the sender's file name; receivers save it under SafeFileName
	Size   int64  `json:"size"`           // bytes
	Type   string `json:"type,omitempty"` // MIME type, e.g. "image/jpeg"; empty if unknown
	SHA256 string `json:"sha256"`         // lowercase hex SHA-256 of the whole file
}

// Validate checks the fields' shapes. The name may hold anything printable
// (path separators and ".." included): receivers never use it as a path.
func (f *FileInfo) Validate() error {
	if f.Name == "" || len(f.Name) > MaxFileNameLen {
		return Errorf(CodeBadRequest, "file name must be 1–%d bytes", MaxFileNameLen)
	}
	if !utf8.ValidString(f.Name) {
		return Errorf(CodeBadRequest, "file name is not valid UTF-8")
	}
	for _, r := range f.Name {
		if unicode.IsControl(r) {
			return Errorf(CodeBadRequest, "file name has a control character")
		}
	}
	if f.Size < 0 || f.Size > MaxFileSize {
		return Errorf(CodeBadRequest, "file size %d out of range", f.Size)
	}
	if len(f.Type) > MaxFileTypeLen {
		return Errorf(CodeBadRequest, "file type longer than %d bytes", MaxFileTypeLen)
	}
	for i := 0; i < len(f.Type); i++ {
		if c := f.Type[i]; c <= ' ' || c >= 0x7f {
			return Errorf(CodeBadRequest, "file type has a character outside printable ASCII")
		}
	}
	return validateHash("sha256", f.SHA256, false)
}

// FileOp names a FileControl.
type FileOp string

const (
	FileOpOffer   FileOp = "offer"   // sender → receiver: (again) the offer of File, for a receiver that may have missed it
	FileOpAccept  FileOp = "accept"  // receiver → sender: send from Offset; Hash is the SHA-256 of the bytes before it
	FileOpDecline FileOp = "decline" // receiver → sender: refused (Code, Reason)
	FileOpDone    FileOp = "done"    // receiver → sender: the whole file arrived and its SHA-256 matched
	FileOpFailed  FileOp = "failed"  // either way: the transfer ended without the file (Code, Reason)
)

// FileControl is one step of a transfer's conversation.
type FileControl struct {
	Op     FileOp    `json:"op"`
	ID     string    `json:"id"`
	File   *FileInfo `json:"file,omitempty"`   // offer
	Offset int64     `json:"offset,omitempty"` // accept
	Hash   string    `json:"hash,omitempty"`   // accept with Offset > 0: hex SHA-256 of bytes [0, Offset)
	Code   Code      `json:"code,omitempty"`   // decline, failed
	Reason string    `json:"reason,omitempty"` // decline, failed
}

// Validate implements Body.
func (c *FileControl) Validate() error {
	if err := ValidateID(c.ID); err != nil {
		return err
	}
	if len(c.Reason) > MaxFileReason || !utf8.ValidString(c.Reason) {
		return Errorf(CodeBadRequest, "file reason must be valid UTF-8 of at most %d bytes", MaxFileReason)
	}
	if len(c.Code) > 32 {
		return Errorf(CodeBadRequest, "file code longer than 32 bytes")
	}
	if c.Offset < 0 || c.Offset > MaxFileSize {
		return Errorf(CodeBadRequest, "file offset %d out of range", c.Offset)
	}
	switch c.Op {
	case FileOpOffer:
		if c.File == nil {
			return Errorf(CodeBadRequest, "file offer without a file")
		}
		return c.File.Validate()
	case FileOpAccept:
		if c.File != nil {
			return Errorf(CodeBadRequest, "file accept carries no file")
		}
		if (c.Offset == 0) != (c.Hash == "") {
			return Errorf(CodeBadRequest, "file accept needs a hash exactly when its offset is not zero")
		}
		return validateHash("hash", c.Hash, true)
	case FileOpDecline, FileOpDone, FileOpFailed:
		if c.File != nil || c.Hash != "" {
			return Errorf(CodeBadRequest, "file %s carries no file or hash", c.Op)
		}
		return nil
	}
	return Errorf(CodeUnknownType, "unknown file op %q", truncate(string(c.Op), 16))
}

// FileHeader is the first message (text) on a file data channel.
type FileHeader struct {
	ID     string `json:"id"`
	Offset int64  `json:"offset"` // the first byte the binary messages after it carry
	// Reset (with Offset 0) tells the receiver that the bytes it has do
	// not hash like the sender's first bytes: it starts over.
	Reset bool `json:"reset,omitempty"`
}

// MaxFileHeader bounds the header's encoding.
const MaxFileHeader = 256

// DecodeFileHeader parses and validates a file channel's header.
func DecodeFileHeader(data []byte) (*FileHeader, error) {
	if len(data) > MaxFileHeader {
		return nil, Errorf(CodeTooLarge, "file header of %d bytes exceeds %d", len(data), MaxFileHeader)
	}
	var h FileHeader
	if err := json.Unmarshal(data, &h); err != nil {
		return nil, Errorf(CodeBadFrame, "file header: %v", err)
	}
	if err := ValidateID(h.ID); err != nil {
		return nil, err
	}
	if h.Offset < 0 || h.Offset > MaxFileSize || h.Reset && h.Offset != 0 {
		return nil, Errorf(CodeBadRequest, "file header offset %d out of range", h.Offset)
	}
	return &h, nil
}

// FileChannelLabel is the label of transfer id's data channel.
func FileChannelLabel(id string) string { return FileChannelPrefix + id }

// FileChannelID returns the transfer id a data channel label names.
func FileChannelID(label string) (string, bool) {
	id, ok := strings.CutPrefix(label, FileChannelPrefix)
	if !ok || ValidateID(id) != nil {
		return "", false
	}
	return id, true
}

// SafeFileName turns an offered name into one that is safe to create
// inside a download folder: no directory part survives ("../x" and "a/b"
// and "a\b" become plain names), no leading dot (no hidden or "." and
// ".." names), no control characters or characters Windows forbids, at
// most MaxFileNameLen bytes, never empty. The result, joined to a folder,
// names a file directly inside it.
func SafeFileName(name string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(name, "_") {
		switch {
		case r == '/' || r == '\\' || r == ':' || r == '*' || r == '?' || r == '"' || r == '<' || r == '>' || r == '|':
			b.WriteRune('_')
		case unicode.IsControl(r) || r == utf8.RuneError:
			b.WriteRune('_')
		default:
			b.WriteRune(r)
		}
	}
	s := strings.TrimLeft(strings.TrimSpace(b.String()), ".")
	s = strings.TrimRight(s, ". ") // Windows drops trailing dots and spaces
	for len(s) > MaxFileNameLen {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	if s == "" || s == "_" {
		s = "file"
	}
	if filepath.Base(s) != s { // cannot happen after the rules above; kept as the invariant
		return "file"
	}
	return s
}

// validateHash checks a lowercase hex SHA-256 (empty allowed if optional).
func validateHash(field, h string, optional bool) error {
	if h == "" && optional {
		return nil
	}
	if len(h) != 64 {
		return Errorf(CodeBadRequest, "%s must be 64 hex digits (SHA-256)", field)
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return Errorf(CodeBadRequest, "%s must be lowercase hex", field)
		}
	}
	return nil
}

func init() {
	register(TypeFile, func() Body { return new(FileControl) })
}
