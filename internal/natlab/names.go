package natlab

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// netnsEtc is where `ip netns exec` finds per-namespace files it binds
// over /etc (ip-netns(8)): hosts and resolv.conf here are what programs
// run with Host.Command or Host.Run see.
const netnsEtc = "/etc/netns"

// SetHosts gives programs run in h (Host.Command, Host.Run: a browser, a
// parley binary) a resolver that knows names: an /etc/hosts with these
// entries, and a resolv.conf whose nameserver (127.0.0.1 inside the
// namespace, where nothing listens) refuses every other name at once.
// The lab has no DNS server; without this a program that resolves a name
// waits out the host's real nameservers first (Chromium: ~13 s for a
// turns: host). In-process sockets (Host.Dial, Host.Net) do not use it.
// The files go when the lab closes.
func (h *Host) SetHosts(entries map[string]netip.Addr) error {
	dir := filepath.Join(netnsEtc, h.NS)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("natlab: %s: %w", h.Name, err)
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("127.0.0.1 localhost\n::1 localhost\n")
	for _, n := range names {
		fmt.Fprintf(&b, "%s %s\n", entries[n], n)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), []byte(b.String()), 0o644); err != nil {
		return fmt.Errorf("natlab: %s hosts: %w", h.Name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"), 0o644); err != nil {
		return fmt.Errorf("natlab: %s resolv.conf: %w", h.Name, err)
	}
	return nil
}

// removeEtc deletes the per-namespace /etc files of ns, if any.
func removeEtc(ns string) error {
	if ns == "" || strings.ContainsAny(ns, "/.") {
		return nil
	}
	return os.RemoveAll(filepath.Join(netnsEtc, ns))
}
