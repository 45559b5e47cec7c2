// Package natlab builds a real NAT lab out of Linux network namespaces for
// end-to-end tests, in the spirit of tailscale's tstest/natlab but with the
// kernel's own NAT (nftables + conntrack) instead of a simulated one.
//
// A Lab is one private "internet": a bridge in its own namespace with
// addresses from the documentation ranges 203.0.113.0/24 (TEST-NET-3) and
// 198.51.100.0/24 (TEST-NET-2, RFC 5737). Those addresses exist only inside
// the lab's namespaces; nothing in them is routed to or from the host.
//
//	lab := natlab.New(t, natlab.Config{})
//	stun := lab.AddPublicHost("stun")             // 203.0.113.x and 198.51.100.x
//	home := lab.AddHome("alice", natlab.Symmetric) // router + client namespace
//	pc, err := home.Client.ListenPacket("udp4", ":0")
//
// Each Home is a router namespace (WAN on the internet bridge, LAN veth to
// its client) configured to behave as one of the RFC 4787 NAT kinds, and one
// client namespace behind it. Host.Do runs Go code with the calling thread
// switched into a namespace, so a test can open sockets "inside" a home and
// then use them from any goroutine; Host.Net returns a pion transport.Net
// backed by such sockets, so pion ICE/WebRTC agents run behind the NAT from
// the test process. Lab.Impair adds delay, jitter and loss on a home's
// router through an NFQUEUE program (tc netem is not available here).
//
// Everything is torn down with t.Cleanup; leftovers of crashed runs (names
// carry the creating process id) are swept by the next New.
package natlab
