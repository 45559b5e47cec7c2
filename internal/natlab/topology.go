package natlab

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
)

// Home is a router namespace on the internet and one client namespace on
// its LAN, behaving as one NAT kind.
//
//	internet br0 --- [wan] Router [lan] --- [eth0] Client
type Home struct {
	Name string
	Kind NATKind
	// Router is the home router's namespace: WAN interface "wan" on the
	// internet bridge, LAN interface "lan". For None it is a transparent
	// bridge without addresses.
	Router *Host
	// Client is the machine in the home: interface "eth0", default route
	// via the router.
	Client *Host
	// WAN is the public address the home's traffic leaves from: the
	// router's WAN address, or the client's own address for None.
	WAN netip.Addr
	// LAN is the home's private prefix (10.0.N.0/24); invalid for None.
	LAN netip.Prefix
}

func (h *Home) String() string { return h.Name + "[" + h.Kind.String() + "]" }

// AddPublicHost adds a server on the internet with two addresses, one in
// PublicNet (Addrs[0]) and one in SecondNet (Addrs[1]), both on "eth0".
// name is [a-z][a-z0-9]*, at most 10 characters, unique in the lab.
func (l *Lab) AddPublicHost(name string) *Host {
	l.t.Helper()
	h, err := l.addPublicHost(name)
	if err != nil {
		l.t.Fatalf("natlab: add public host %q: %v", name, err)
	}
	return h
}

// AddHome adds a home of the given kind. name follows AddPublicHost's rules.
func (l *Lab) AddHome(name string, kind NATKind) *Home {
	l.t.Helper()
	h, err := l.addHome(name, kind)
	if err != nil {
		l.t.Fatalf("natlab: add home %q (%v): %v", name, kind, err)
	}
	return h
}

// allocPublic reserves the next internet host number and bridge port.
func (l *Lab) allocPublic() (n int, port string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.nextPub > 254 {
		return 0, "", fmt.Errorf("%w: more than 253 internet attachments", ErrExhausted)
	}
	n = l.nextPub
	l.nextPub++
	l.nextPort++
	return n, "p" + strconv.Itoa(l.nextPort), nil
}

func nth(p netip.Prefix, n int) netip.Addr {
	a := p.Addr().As4()
	a[3] = byte(n)
	return netip.AddrFrom4(a)
}

func (l *Lab) addPublicHost(name string) (*Host, error) {
	if err := l.claimName(name); err != nil {
		return nil, err
	}
	n, port, err := l.allocPublic()
	if err != nil {
		return nil, err
	}
	ns := l.prefix + "-" + name
	if err := l.addNetns(ns); err != nil {
		return nil, err
	}
	a1, a2 := nth(PublicNet, n), nth(SecondNet, n)
	h, err := newHost(l, name, ns, a1, a2)
	if err != nil {
		return nil, err
	}
	if err := h.Do(hostSysctls(false)); err != nil {
		return nil, err
	}
	if err := l.ip("", "link", "add", "name", "eth0", "netns", ns, "type", "veth", "peer", "name", port, "netns", l.inet); err != nil {
		return nil, err
	}
	if err := l.attach(port); err != nil {
		return nil, err
	}
	if err := l.ipBatch(ns,
		"link set lo up",
		"link set eth0 up",
		"addr add "+a1.String()+"/24 dev eth0",
		"addr add "+a2.String()+"/24 dev eth0",
	); err != nil {
		return nil, err
	}
	l.log.Info("natlab: public host", "name", name, "ns", ns, "addrs", h.Addrs)
	return h, nil
}

// attach puts an internet-side veth end on the bridge.
func (l *Lab) attach(port string) error {
	return l.ipBatch(l.inet, "link set "+port+" master "+bridge, "link set "+port+" up")
}

func (l *Lab) addHome(name string, kind NATKind) (*Home, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadKind, int(kind))
	}
	if err := l.claimName(name); err != nil {
		return nil, err
	}
	rules, err := ruleset(kind, l.cfg.MappingTimeout)
	if err != nil {
		return nil, err
	}
	n, port, err := l.allocPublic()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	lanN := l.nextLAN
	l.nextLAN++
	l.mu.Unlock()
	if lanN > 254 {
		return nil, fmt.Errorf("%w: more than 254 homes", ErrExhausted)
	}
	rns, cns := l.prefix+"-"+name+"-r", l.prefix+"-"+name+"-c"
	if err := l.addNetns(rns); err != nil {
		return nil, err
	}
	if err := l.addNetns(cns); err != nil {
		return nil, err
	}
	home := &Home{Name: name, Kind: kind}
	wan := nth(PublicNet, n)
	var raddrs, caddrs []netip.Addr
	if kind == None {
		home.WAN = wan
		caddrs = []netip.Addr{wan}
	} else {
		home.LAN = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(lanN), 0}), 24)
		home.WAN = wan
		raddrs = []netip.Addr{wan, nth(home.LAN, 1)}
		caddrs = []netip.Addr{nth(home.LAN, 2)}
	}
	if home.Router, err = newHost(l, name+"-r", rns, raddrs...); err != nil {
		return nil, err
	}
	if home.Client, err = newHost(l, name+"-c", cns, caddrs...); err != nil {
		return nil, err
	}
	if err := home.Router.Do(hostSysctls(kind != None)); err != nil {
		return nil, err
	}
	if err := home.Client.Do(hostSysctls(false)); err != nil {
		return nil, err
	}
	if err := l.ipBatch("",
		"link add name "+wanIf+" netns "+rns+" type veth peer name "+port+" netns "+l.inet,
		"link add name eth0 netns "+cns+" type veth peer name "+lanIf+" netns "+rns,
	); err != nil {
		return nil, err
	}
	if err := l.attach(port); err != nil {
		return nil, err
	}
	if kind == None {
		// A cable modem: bridge WAN and LAN. br_netfilter still passes the
		// bridged IPv4 packets through the FORWARD hook, so Impair works.
		err = l.ipBatch(rns,
			"link set lo up",
			"link add "+bridge+" type bridge",
			"link set "+wanIf+" master "+bridge,
			"link set "+lanIf+" master "+bridge,
			"link set "+wanIf+" up",
			"link set "+lanIf+" up",
			"link set "+bridge+" up",
		)
		if err == nil {
			err = l.ipBatch(cns,
				"link set lo up",
				"link set eth0 up",
				"addr add "+wan.String()+"/24 dev eth0",
				"route add "+SecondNet.String()+" dev eth0",
			)
		}
	} else {
		err = l.ipBatch(rns,
			"link set lo up",
			"link set "+wanIf+" up",
			"link set "+lanIf+" up",
			"addr add "+wan.String()+"/24 dev "+wanIf,
			"route add "+SecondNet.String()+" dev "+wanIf,
			"addr add "+raddrs[1].String()+"/24 dev "+lanIf,
		)
		if err == nil {
			err = l.ipBatch(cns,
				"link set lo up",
				"link set eth0 up",
				"addr add "+caddrs[0].String()+"/24 dev eth0",
				"route add default via "+raddrs[1].String(),
			)
		}
		if err == nil {
			err = l.nft(home.Router, rules)
		}
	}
	if err != nil {
		return nil, err
	}
	l.log.Info("natlab: home", "name", name, "kind", kind, "wan", home.WAN, "lan", home.LAN)
	return home, nil
}

// nft loads a ruleset into a host's namespace.
func (l *Lab) nft(h *Host, rules string) error {
	l.log.Debug("natlab: nft", "host", h.Name, "rules", rules)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := h.Command(ctx, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(rules)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("natlab: %s: nft -f: %w: %s", h.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// hostSysctls returns a Do function that makes a namespace IPv4-only (no
// link-local IPv6 chatter or candidates), answers ARP only for addresses
// on the asking interface, and, for routers, forwards IPv4.
func hostSysctls(forward bool) func() error {
	return func() error {
		set := map[string]string{
			"net/ipv4/conf/all/arp_ignore":     "1",
			"net/ipv4/conf/default/arp_ignore": "1",
		}
		if _, err := os.Stat("/proc/sys/net/ipv6"); err == nil {
			set["net/ipv6/conf/all/disable_ipv6"] = "1"
			set["net/ipv6/conf/default/disable_ipv6"] = "1"
		}
		if forward {
			set["net/ipv4/ip_forward"] = "1"
		}
		for k, v := range set {
			// /proc/sys/net resolves to the namespace of the opening thread.
			if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
				return fmt.Errorf("natlab: sysctl %s: %w", k, err)
			}
		}
		return nil
	}
}
