package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/parley-voice/parley/internal/natlab"
	"github.com/parley-voice/parley/proto"
)

// TestNATCommandInLab runs the real binaries in the kernel NAT lab:
// `parley serve` on a public host (signaling on TCP 443, STUN on
// IP1:3478 with the RFC 5780 alternate on a second IP), and `parley nat
// --json` inside a home of every kind, which must report the NAT its
// router's rules implement. The UDP-blocked home reaches the server's
// /api/ice over TCP 443 and then finds UDP blocked.
func TestNATCommandInLab(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary and a NAT lab")
	}
	lab := natlab.New(t, natlab.Config{})
	bin := parleyBinary(t)
	pub := lab.AddPublicHost("sig")
	ip1, ip2 := pub.Addrs[0], pub.Addrs[1]
	homes := map[natlab.NATKind]*natlab.Home{}
	for i, k := range natlab.Kinds {
		homes[k] = lab.AddHome("n"+strconv.Itoa(i), k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel) // the parallel subtests run after this function returns
	web := netip.AddrPortFrom(ip1, 443).String()
	if _, err := pub.Run(ctx, bin, "serve", "--listen", web, "--stun-alt", ip2.String(), "--data=", "--log-level", "warn"); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		c, err := pub.DialContext(ctx, "tcp", web)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("parley serve did not listen on %s: %v", web, err)
		}
		time.Sleep(50 * time.Millisecond)
	}

	for _, kind := range natlab.Kinds {
		home := homes[kind]
		t.Run(kind.String(), func(t *testing.T) {
			t.Parallel()
			args := []string{"nat", "--server", "http://" + web, "--json", "--timeout", "300ms"}
			tryMapping := kind == natlab.PortRestricted // the others skip the router's 2+ s of silence
			if !tryMapping {
				args = append(args, "--no-portmap")
			}
			out, err := home.Client.Output(ctx, bin, args...)
			if err != nil {
				t.Fatal(err)
			}
			var got struct {
				proto.NATReport
				STUN            string `json:"stun"`
				ChangeIP        bool   `json:"server_change_ip"`
				PortMappingNote string `json:"port_mapping_note"`
			}
			line := out[bytes.LastIndexByte(bytes.TrimRight(out, "\n"), '\n')+1:]
			if err := json.Unmarshal(line, &got); err != nil {
				t.Fatalf("output is not a JSON report: %v\n%s", err, out)
			}
			t.Logf("%s: %s", kind, line)
			if got.STUN != "stun:"+netip.AddrPortFrom(ip1, 3478).String() {
				t.Errorf("STUN %q, want the server's default 3478 on %s", got.STUN, ip1)
			}
			if got.Type != kind.NATType() || got.Mapping != kind.Mapping() || got.Filtering != kind.Filtering() {
				t.Errorf("reported %s (mapping %q, filtering %q), want %s (%q, %q)",
					got.Type, got.Mapping, got.Filtering, kind.NATType(), kind.Mapping(), kind.Filtering())
			}
			if kind == natlab.UDPBlocked {
				if !got.UDPBlocked || got.PublicAddr != "" {
					t.Errorf("udp-blocked home: %+v", got.NATReport)
				}
				return
			}
			if !got.ChangeIP {
				t.Error("server did not offer change-IP with --stun-alt IP")
			}
			if pa, err := netip.ParseAddrPort(got.PublicAddr); err != nil || pa.Addr() != home.WAN {
				t.Errorf("public address %q, want on %s", got.PublicAddr, home.WAN)
			}
			if tryMapping && (got.PortMapping != "" || got.PortMappingNote != noMappingNote) {
				t.Errorf("port mapping %q (%q), want none available: the lab router runs no UPnP/PCP/NAT-PMP", got.PortMapping, got.PortMappingNote)
			}
		})
	}
}
