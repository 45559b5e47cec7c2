package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/parley-voice/parley/nat"
	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
)

func runNAT(ctx context.Context, args []string) error {
	return runNATTo(ctx, args, os.Stdout)
}

// natOutput is the --json output: the NAT report as sent to the signaling
// server (proto.NATReport's fields), plus how it was learned.
type natOutput struct {
	*proto.NATReport
	STUN            string   `json:"stun"`
	ChangeIP        bool     `json:"server_change_ip"`
	ChangePort      bool     `json:"server_change_port"`
	Notes           []string `json:"notes,omitempty"`
	PortMappingNote string   `json:"port_mapping_note,omitempty"`
	ElapsedMS       int64    `json:"elapsed_ms"`
}

func runNATTo(ctx context.Context, args []string, out io.Writer) error {
	fs := newFlagSet("nat", "--server URL [--json]", `
Finds out what NAT stands between this machine and the Internet, as RFC 4787
names it (mapping and filtering behaviour), with the RFC 5780 tests against
the STUN service of a Parley server (listed at URL/api/ice), and asks the
home router for a port mapping (UPnP IGD, PCP, NAT-PMP; released at once).
Prints the report for people, or with --json the NAT report a client sends
to the server, for scripts.`)
	server := fs.String("server", "http://127.0.0.1:8080", "Parley server URL (http(s)://HOST:PORT, ws(s)://HOST:PORT/ws or HOST:PORT)")
	stunFlag := fs.String("stun", "", "STUN server (HOST:PORT or stun: URL) to use instead of asking --server")
	asJSON := fs.Bool("json", false, "print the report as one JSON object")
	noMap := fs.Bool("no-portmap", false, "do not ask the home router for a port mapping")
	caFile := addCAFlag(fs)
	timeout := fs.Duration("timeout", time.Second, "how long one STUN test waits for an answer (a filtered answer takes this long)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *timeout <= 0 {
		return errors.New("--timeout must be positive")
	}
	stunURL := *stunFlag
	if stunURL == "" {
		tlsConf, err := clientTLS(*caFile)
		if err != nil {
			return err
		}
		if stunURL, err = fetchSTUN(ctx, *server, tlsConf); err != nil {
			return err
		}
	}
	res, err := nat.Probe(ctx, nat.DiscoverConfig{Server: stunURL, Timeout: *timeout})
	if err != nil {
		return err
	}
	o := natOutput{NATReport: res.Report, STUN: stunURL, ChangeIP: res.ServerChangeIP,
		ChangePort: res.ServerChangePort, Notes: res.Notes, ElapsedMS: res.Elapsed.Milliseconds()}
	if !*noMap && !res.Report.UDPBlocked {
		o.PortMappingNote = mapPortOnce(ctx, res.Report)
	}
	if *asJSON {
		enc := json.NewEncoder(out)
		return enc.Encode(o)
	}
	fmt.Fprintf(out, "%s\n", strings.TrimRight(nat.Describe(o.NATReport), "\n"))
	for _, n := range o.Notes {
		fmt.Fprintf(out, "  note: %s\n", n)
	}
	switch {
	case *noMap:
		fmt.Fprintf(out, "  port mapping: not tried (--no-portmap)\n")
	case o.PortMappingNote != "" && o.PortMappingNote != noMappingNote:
		fmt.Fprintf(out, "  port mapping: %s\n", o.PortMappingNote)
	}
	fmt.Fprintf(out, "  (STUN server %s, %s)\n", stunURL, res.Elapsed.Round(time.Millisecond))
	return nil
}

const noMappingNote = "none available (no UPnP IGD, PCP or NAT-PMP answered)"

// mapPortOnce asks the router to map the probe's port, records the result
// in r and releases the mapping. It returns why none was made, or "".
func mapPortOnce(ctx context.Context, r *proto.NATReport) string {
	local, err := netip.ParseAddrPort(r.LocalAddr)
	if err != nil || local.Port() == 0 {
		return "no local port to map"
	}
	m, err := nat.MapPort(ctx, nat.MapPortConfig{InternalPort: local.Port(), Lifetime: time.Minute, Description: "parley nat test"})
	if err != nil {
		if errors.Is(err, nat.ErrNoPortMapping) {
			return noMappingNote
		}
		return err.Error()
	}
	m.Fill(r)
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := m.Release(rctx); err != nil {
		return "granted, but releasing it failed: " + err.Error()
	}
	return ""
}

// iceListURL turns a server URL in any of the accepted forms into the URL
// of its /api/ice endpoint.
func iceListURL(server string) (string, error) {
	s := strings.TrimSpace(server)
	if !strings.Contains(s, "://") {
		s = "http://" + s
	}
	u, err := url.Parse(s)
	if err != nil {
		return "", fmt.Errorf("--server %q: %w", server, err)
	}
	switch u.Scheme {
	case "http", "ws":
		u.Scheme = "http"
	case "https", "wss":
		u.Scheme = "https"
	default:
		return "", fmt.Errorf("--server %q: scheme %q is not http(s) or ws(s)", server, u.Scheme)
	}
	if u.Host == "" {
		return "", fmt.Errorf("--server %q: no host", server)
	}
	u.Path, u.RawQuery, u.Fragment, u.User = "/api/ice", "", "", nil
	return u.String(), nil
}

// fetchSTUN asks a Parley server for its STUN service (GET /api/ice) and
// returns the first stun: URL.
func fetchSTUN(ctx context.Context, server string, tlsConf *tls.Config) (string, error) {
	api, err := iceListURL(server)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, api, nil)
	if err != nil {
		return "", err
	}
	// No proxy from the environment: the server is asked directly.
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tlsConf}}
	defer hc.CloseIdleConnections()
	resp, err := hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("ask %s for its STUN server: %w", api, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("ask %s for its STUN server: %s (is it a Parley server?)", api, resp.Status)
	}
	var list signal.ICEList
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&list); err != nil {
		return "", fmt.Errorf("ask %s for its STUN server: bad answer: %w", api, err)
	}
	for _, s := range list.ICEServers {
		for _, u := range s.URLs {
			if len(u) > 5 && strings.EqualFold(u[:5], "stun:") {
				return "stun:" + u[5:], nil
			}
		}
	}
	return "", fmt.Errorf("%s lists no STUN server (was it started with --no-stun?); pass --stun HOST:PORT", api)
}
