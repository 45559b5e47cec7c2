package supernode

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"

	"github.com/parley-voice/parley/proto"
)

// SelfSignedCert makes the certificate a supernode presents on QUIC and
// TURN-TLS when Config.Certificate is nil: ECDSA P-256, valid for a year.
// Nobody checks its name or issuer; clients pin its fingerprint.
func SelfSignedCert(name string) (*tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("supernode: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return nil, fmt.Errorf("supernode: certificate serial: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "parley supernode " + name},
		DNSNames:     []string{proto.SupernodeCertName},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("supernode: create certificate: %w", err)
	}
	return &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// Fingerprint is the pin of cert's leaf.
func Fingerprint(cert *tls.Certificate) string {
	if cert == nil || len(cert.Certificate) == 0 {
		return ""
	}
	return proto.CertFingerprint(cert.Certificate[0])
}

// LoadOrCreateCert returns the certificate kept in dir/relay-cert.pem and
// dir/relay-key.pem, creating both (mode 0600) on first use, so a
// supernode keeps its fingerprint across restarts: clients and the
// signaling server pin it.
func LoadOrCreateCert(dir, name string) (*tls.Certificate, error) {
	certFile, keyFile := filepath.Join(dir, "relay-cert.pem"), filepath.Join(dir, "relay-key.pem")
	if c, err := tls.LoadX509KeyPair(certFile, keyFile); err == nil {
		if leaf, err := x509.ParseCertificate(c.Certificate[0]); err == nil && time.Until(leaf.NotAfter) > 30*24*time.Hour {
			return &c, nil
		}
		// Expiring within a month (or unreadable): make a new one.
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("supernode: certificate in %s: %w", dir, err)
	}
	c, err := SelfSignedCert(name)
	if err != nil {
		return nil, err
	}
	kder, err := x509.MarshalPKCS8PrivateKey(c.PrivateKey)
	if err != nil {
		return nil, fmt.Errorf("supernode: certificate key: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("supernode: certificate dir: %w", err)
	}
	for _, f := range []struct {
		path string
		blk  *pem.Block
	}{{keyFile, &pem.Block{Type: "PRIVATE KEY", Bytes: kder}}, {certFile, &pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(f.blk), 0o600); err != nil {
			return nil, fmt.Errorf("supernode: save certificate: %w", err)
		}
	}
	return c, nil
}
