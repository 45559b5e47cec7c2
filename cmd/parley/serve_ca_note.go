package main

import (
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
)

// caNote tells the operator, when --tls-cert does not chain to a CA this
// machine trusts (a self-made certificate, a private CA), that clients
// must be given it with --ca; empty for plain HTTP, ACME and certificates
// a public CA signed.
func (st *serveTLS) caNote(certFile string) string {
	if st == nil || st.leaf == nil {
		return ""
	}
	inter := x509.NewCertPool()
	if b, err := os.ReadFile(certFile); err == nil {
		for first := true; ; first = false {
			var blk *pem.Block
			if blk, b = pem.Decode(b); blk == nil {
				break
			}
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil && !first {
				inter.AddCert(c)
			}
		}
	}
	if _, err := st.leaf.Verify(x509.VerifyOptions{Intermediates: inter}); err == nil {
		return ""
	}
	return fmt.Sprintf("  note: no CA this machine trusts signed %s: start clients with --ca %s (parley chat, nat, supernode); browsers warn until they trust it\n", certFile, certFile)
}
