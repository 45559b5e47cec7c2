package nat

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// DefaultGateway returns the IPv4 default gateway of the calling thread's
// network namespace, read from /proc/thread-self/net/route (/proc/net/route
// follows the process's main thread instead, which differs for a thread
// that entered another namespace). It works on Linux only and returns
// ErrNoGateway elsewhere or when there is no default route.
func DefaultGateway() (netip.Addr, error) {
	b, err := os.ReadFile("/proc/thread-self/net/route")
	if err != nil {
		b, err = os.ReadFile("/proc/net/route") // kernels before 3.17
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %v", ErrNoGateway, err)
	}
	return parseProcNetRoute(b)
}

// parseProcNetRoute picks the default route with the lowest metric from
// the text of /proc/net/route. Addresses there are hex in host (little-
// endian on every platform Go supports for Linux but s390x, ppc64 and
// mips, where the kernel writes big-endian), so both are handled by
// reading the 32-bit value in native order.
func parseProcNetRoute(b []byte) (netip.Addr, error) {
	const (
		rtfUp      = 0x1
		rtfGateway = 0x2
	)
	var best netip.Addr
	bestMetric := -1
	sc := bufio.NewScanner(bytes.NewReader(b))
	first := true
	for sc.Scan() {
		if first { // header line
			first = false
			continue
		}
		f := strings.Fields(sc.Text())
		if len(f) < 8 {
			continue
		}
		dst, err1 := strconv.ParseUint(f[1], 16, 32)
		flags, err2 := strconv.ParseUint(f[3], 16, 32)
		metric, err3 := strconv.Atoi(f[6])
		mask, err4 := strconv.ParseUint(f[7], 16, 32)
		gwRaw, err5 := hex.DecodeString(f[2])
		if err1 != nil || err2 != nil || err3 != nil || err4 != nil || err5 != nil || len(gwRaw) != 4 {
			continue
		}
		if dst != 0 || mask != 0 || flags&(rtfUp|rtfGateway) != rtfUp|rtfGateway {
			continue
		}
		// The kernel prints the __be32 address with %08X of its in-memory
		// value: read it back in native order to get network-order bytes.
		v := binary.BigEndian.Uint32(gwRaw)
		var ip [4]byte
		binary.NativeEndian.PutUint32(ip[:], v)
		gw := netip.AddrFrom4(ip)
		if bestMetric < 0 || metric < bestMetric {
			best, bestMetric = gw, metric
		}
	}
	if !best.IsValid() {
		return netip.Addr{}, fmt.Errorf("%w: no default route in /proc/net/route", ErrNoGateway)
	}
	return best, nil
}
