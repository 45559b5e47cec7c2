package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"
)

// addCAFlag adds --ca: the CA a server's certificate is checked against,
// beside the system's roots (a private deployment, a self-made certificate).
func addCAFlag(fs *flag.FlagSet) *string {
	return fs.String("ca", "", "PEM file of a CA certificate to trust for an https:// server, besides the system's (a private deployment or a self-made certificate)")
}

// clientTLS is the TLS config for connections to the server: the system's
// roots plus the certificates in caFile. Nil (the defaults) when caFile is
// empty.
func clientTLS(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, errors.New("--ca: no PEM certificate in " + caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
}
