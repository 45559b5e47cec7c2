package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/parley-voice/parley/proto"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// letsEncrypt is the ACME directory --acme uses unless told otherwise.
const letsEncrypt = autocert.DefaultACMEDirectory

// tlsFlags are `parley serve`'s HTTPS flags.
type tlsFlags struct {
	certFile, keyFile string
	acme              string // comma-separated domains
	acmeEmail         string
	acmeDirectory     string
	acmeCA            string
	httpRedirect      string
}

func addTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.certFile, "tls-cert", "", "serve HTTPS/WSS (and TURN over TLS) with this PEM certificate chain (with --tls-key)")
	fs.StringVar(&f.keyFile, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.acme, "acme", "", "serve HTTPS with certificates from an ACME CA (Let's Encrypt) for these comma-separated domains, obtained by TLS-ALPN-01 on the --listen port (443) and kept in --data")
	fs.StringVar(&f.acmeEmail, "acme-email", "", "contact address for the ACME account (expiry warnings)")
	fs.StringVar(&f.acmeDirectory, "acme-directory", letsEncrypt, "ACME directory URL (a staging or private CA)")
	fs.StringVar(&f.acmeCA, "acme-ca", "", "PEM file of a CA to trust for the ACME directory's own HTTPS (a private ACME CA)")
	fs.StringVar(&f.httpRedirect, "http-redirect", "auto", "plain-HTTP address that redirects to HTTPS (and answers ACME HTTP-01): auto is :80 on the --listen IP when TLS is on and --listen is port 443; off disables")
	return f
}

// serveTLS is the certificate side of HTTPS: where certificates come from
// and which names they cover.
type serveTLS struct {
	names   []string // the DNS names (and IPs) the certificate covers; names[0] is the main one
	get     func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	leaf    *x509.Certificate // --tls-cert's leaf, for name checks
	manager *autocert.Manager // --acme
	log     *slog.Logger
}

// on reports whether HTTPS is configured.
func (f *tlsFlags) on() bool { return f.certFile != "" || f.keyFile != "" || f.acme != "" }

// setup loads the certificate or prepares the ACME manager. It returns nil
// when HTTPS is not configured.
func (f *tlsFlags) setup(dataDir string, log *slog.Logger) (*serveTLS, error) {
	switch {
	case !f.on():
		return nil, nil
	case f.acme != "" && (f.certFile != "" || f.keyFile != ""):
		return nil, errors.New("--acme and --tls-cert/--tls-key exclude each other")
	case f.acme == "" && (f.certFile == "" || f.keyFile == ""):
		return nil, errors.New("--tls-cert and --tls-key go together")
	}
	st := &serveTLS{log: log}
	if f.acme == "" {
		cert, err := tls.LoadX509KeyPair(f.certFile, f.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
		}
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, fmt.Errorf("--tls-cert: %w", err)
		}
		st.leaf = leaf
		st.names = append(st.names, leaf.DNSNames...)
		for _, ip := range leaf.IPAddresses {
			st.names = append(st.names, ip.String())
		}
		if len(st.names) == 0 {
			return nil, errors.New("--tls-cert names no host (no subject alternative names); browsers would refuse it")
		}
		st.get = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return &cert, nil }
		return st, nil
	}
	for _, d := range strings.Split(f.acme, ",") {
		d = strings.ToLower(strings.TrimSpace(d))
		if d == "" {
			continue
		}
		if net.ParseIP(d) != nil {
			return nil, fmt.Errorf("--acme %q: ACME certificates are for domain names, not IP addresses", d)
		}
		st.names = append(st.names, d)
	}
	if len(st.names) == 0 {
		return nil, errors.New("--acme needs at least one domain")
	}
	m := &autocert.Manager{
		Prompt:     autocert.AcceptTOS,
		HostPolicy: autocert.HostWhitelist(st.names...),
		Email:      f.acmeEmail,
		Client:     &acme.Client{DirectoryURL: f.acmeDirectory},
	}
	if dataDir != "" {
		m.Cache = autocert.DirCache(filepath.Join(dataDir, "acme"))
	} else {
		log.Warn("ACME without --data: certificates are kept in memory only and requested again at every start (CAs rate-limit that)")
	}
	if f.acmeCA != "" {
		tc, err := clientTLS(f.acmeCA)
		if err != nil {
			return nil, fmt.Errorf("--acme-ca: %w", err)
		}
		m.Client.HTTPClient = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	st.manager = m
	st.get = m.GetCertificate
	return st, nil
}

// covers reports whether the CA certificate is for host.
func (st *serveTLS) covers(host string) bool {
	if st.leaf != nil {
		return st.leaf.VerifyHostname(host) == nil
	}
	return slices.Contains(st.names, strings.ToLower(host))
}

// certPicker chooses the certificate of each TLS handshake on the shared
// port by its SNI. Browsers (the call page, and TURN over TLS for browsers
// behind UDP-blocking firewalls) and HTTP clients get the CA-issued
// certificate. Native clients and the signaling server's probe reach the
// built-in supernode's TURN-TLS pinning its self-signed certificate, and
// name it in their SNI (proto.SupernodeCertName, set by
// proto.PinnedTLSConfig); they get that one.
type certPicker struct {
	ca    *serveTLS        // nil: no CA-issued certificate (HTTPS off)
	relay *tls.Certificate // the built-in supernode's; nil when it is off
}

func (p *certPicker) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	switch {
	case p.ca == nil:
		if p.relay == nil {
			return nil, errors.New("no certificate")
		}
		return p.relay, nil
	case p.relay != nil && strings.EqualFold(hello.ServerName, proto.SupernodeCertName):
		return p.relay, nil
	case hello.ServerName == "" && p.ca.manager != nil:
		// An address was dialled; autocert needs a name.
		h := *hello
		h.ServerName = p.ca.names[0]
		return p.ca.get(&h)
	}
	return p.ca.get(hello)
}

// redirectAddr is where --http-redirect listens, or "" for nowhere.
func (f *tlsFlags) redirectAddr(listen net.Addr, tlsOn bool) (string, error) {
	switch f.httpRedirect {
	case "off", "":
		return "", nil
	case "auto":
		tcp, ok := listen.(*net.TCPAddr)
		if !tlsOn || !ok || tcp.Port != 443 {
			return "", nil
		}
		if tcp.IP.IsUnspecified() {
			return ":80", nil
		}
		return net.JoinHostPort(tcp.IP.String(), "80"), nil
	}
	if !tlsOn {
		return "", errors.New("--http-redirect needs HTTPS (--tls-cert or --acme)")
	}
	if _, _, err := net.SplitHostPort(f.httpRedirect); err != nil {
		return "", fmt.Errorf("--http-redirect %q: %w", f.httpRedirect, err)
	}
	return f.httpRedirect, nil
}

// httpsRedirect sends plain-HTTP requests to the same host and path over
// HTTPS on tlsPort (301 for GET and HEAD, 308 otherwise).
func httpsRedirect(tlsPort int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		if strings.Contains(host, ":") {
			host = "[" + host + "]"
		}
		if tlsPort != 443 {
			host += ":" + strconv.Itoa(tlsPort)
		}
		code := http.StatusMovedPermanently
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			code = http.StatusPermanentRedirect
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), code)
	})
}

// httpHandler is what plain HTTP gets when HTTPS is on: ACME HTTP-01
// answers (with --acme) and a redirect.
func (st *serveTLS) httpHandler(tlsPort int) http.Handler {
	if st.manager != nil {
		return st.manager.HTTPHandler(httpsRedirect(tlsPort))
	}
	return httpsRedirect(tlsPort)
}
