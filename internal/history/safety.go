package history

import (
	"crypto/sha512"
	"encoding/binary"
	"strings"
)

// SafetyNumber is the number two people compare (read aloud, or side by
// side) to check that each holds the other's real key: 60 digits in 12
// groups of five, the same on both sides. It follows Signal's numeric
// fingerprint: each party's half is 5200 rounds of SHA-512 over its key
// and name, cut to 30 digits; the halves are ordered so both sides agree.
func SafetyNumber(nameA string, keyA []byte, nameB string, keyB []byte) string {
	a, b := fingerprint(nameA, keyA), fingerprint(nameB, keyB)
	if b < a {
		a, b = b, a
	}
	all := a + b
	groups := make([]string, 0, 12)
	for i := 0; i < len(all); i += 5 {
		groups = append(groups, all[i:i+5])
	}
	return strings.Join(groups, " ")
}

func fingerprint(name string, key []byte) string {
	h := append([]byte{0, 0}, key...)
	h = append(h, name...)
	var d [64]byte
	for i := 0; i < 5200; i++ {
		s := sha512.New()
		s.Write(h)
		s.Write(key)
		s.Sum(d[:0])
		h = d[:]
	}
	var sb strings.Builder
	for i := 0; i < 30; i += 5 {
		var b [8]byte
		copy(b[3:], h[i:i+5])
		n := binary.BigEndian.Uint64(b[:]) % 100000
		sb.WriteString(pad5(n))
	}
	return sb.String()
}

func pad5(n uint64) string {
	s := []byte("00000")
	for i := 4; i >= 0 && n > 0; i-- {
		s[i] = byte('0' + n%10)
		n /= 10
	}
	return string(s)
}
