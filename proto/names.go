package proto

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// Name rules: 1–32 bytes of lowercase ASCII letters, digits, '-', '_' and '.',
// starting with a letter or digit. Names are case-sensitive on the wire;
// clients lower-case what people type before sending it.
const MaxNameLen = 32

// reserved names may not be registered by anyone.
var reserved = map[string]bool{"server": true, "parley": true, "system": true, "admin": true}

// ValidateName reports whether name obeys the name rules.
func ValidateName(name string) error {
	if name == "" {
		return Errorf(CodeBadName, "name is empty")
	}
	if len(name) > MaxNameLen {
		return Errorf(CodeBadName, "name is longer than %d characters", MaxNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case (c == '-' || c == '_' || c == '.') && i > 0:
		default:
			return Errorf(CodeBadName, "name %q: use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit", truncate(name, 40))
		}
	}
	return nil
}

// ValidateRegisterName is ValidateName plus the reserved-name check, for
// names someone tries to claim.
func ValidateRegisterName(name string) error {
	if err := ValidateName(name); err != nil {
		return err
	}
	if reserved[name] {
		return Errorf(CodeBadName, "name %q is reserved", name)
	}
	return nil
}

// MaxIDLen bounds message and session ids.
const MaxIDLen = 64

// ValidateID reports whether id is a usable message, call or session id:
// 1–64 bytes of ASCII letters, digits, '-', '_', '.' or ':'.
func ValidateID(id string) error {
	if id == "" || len(id) > MaxIDLen {
		return Errorf(CodeBadRequest, "id must be 1–%d characters", MaxIDLen)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return Errorf(CodeBadRequest, "id %q has a character outside [A-Za-z0-9._:-]", truncate(id, 70))
		}
	}
	return nil
}

// MaxTextLen bounds one chat message, in bytes.
const MaxTextLen = 4000

// ValidateText checks a chat text: non-empty valid UTF-8 of at most MaxTextLen bytes.
func ValidateText(s string) error {
	if s == "" {
		return Errorf(CodeBadRequest, "empty message")
	}
	if len(s) > MaxTextLen {
		return Errorf(CodeTooLarge, "message of %d bytes exceeds %d", len(s), MaxTextLen)
	}
	if !utf8.ValidString(s) {
		return Errorf(CodeBadRequest, "message is not valid UTF-8")
	}
	return nil
}

// MaxDisplayLen bounds a display name: characters, and bytes.
const (
	MaxDisplayLen      = 40
	MaxDisplayBytesLen = 160
)

// ValidateDisplayName checks a display name: what a person calls
// themselves ("Alice Martin", "Zoë 🎻"), separate from the handle the
// server knows them by (the name rules above). It is chosen by its owner
// and travels end to end with their chat messages (Chat.Display), so the
// server never sees it; clients always show it beside the handle, never
// instead of it, so nobody can pass for someone else by choosing their
// display name. Rules: 1–40 characters of valid UTF-8 (160 bytes at
// most), no control or formatting characters (line breaks, bidi
// overrides, zero-width spaces; the zero-width joiner of emoji sequences
// is allowed), no space at either end and no two spaces in a row.
func ValidateDisplayName(s string) error {
	if s == "" {
		return Errorf(CodeBadName, "display name is empty")
	}
	if len(s) > MaxDisplayBytesLen || utf8.RuneCountInString(s) > MaxDisplayLen {
		return Errorf(CodeBadName, "display name is longer than %d characters", MaxDisplayLen)
	}
	if !utf8.ValidString(s) {
		return Errorf(CodeBadName, "display name is not valid UTF-8")
	}
	prevSpace := true // no space first
	for _, r := range s {
		space := unicode.IsSpace(r)
		switch {
		case space && (prevSpace || r != ' '):
			return Errorf(CodeBadName, "display name %q: one plain space between words, none at the ends", truncate(s, 48))
		case r != '\u200d' && (unicode.IsControl(r) || unicode.Is(unicode.Cf, r)):
			return Errorf(CodeBadName, "display name %q holds a control or formatting character (U+%04X)", truncate(s, 48), r)
		}
		prevSpace = space
	}
	if prevSpace {
		return Errorf(CodeBadName, "display name %q: one plain space between words, none at the ends", truncate(s, 48))
	}
	return nil
}

// ValidDisplayName returns s if it is a valid display name, else "": what
// a receiver keeps of a display name a peer sent (the message itself is
// kept either way).
func ValidDisplayName(s string) string {
	if s == "" || ValidateDisplayName(s) != nil {
		return ""
	}
	return s
}

// ValidateHostName checks a DNS host name (RFC 1123 section 2.1): dot-separated
// labels of 1–63 letters, digits and hyphens, not starting or ending with a
// hyphen, 253 bytes at most, and not an IP address.
func ValidateHostName(h string) error {
	bad := func() error { return Errorf(CodeBadRequest, "%q is not a DNS host name", truncate(h, 64)) }
	if h == "" || len(h) > 253 || strings.HasSuffix(h, ".") {
		return bad()
	}
	allDigits := true
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return bad()
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
				allDigits = false
			case c >= '0' && c <= '9':
			default:
				return bad()
			}
		}
	}
	if allDigits { // 203.0.113.2 is an address, not a name
		return bad()
	}
	return nil
}
