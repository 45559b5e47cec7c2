package proto

import (
	"strings"
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
