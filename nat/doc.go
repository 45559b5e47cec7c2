// Package nat finds out what stands between a Parley peer and the Internet
// and asks the home router to open a door.
//
// It has three parts:
//
//   - [Server], a STUN server (RFC 5389 Binding) with the RFC 5780 NAT
//     behaviour-discovery extensions: it answers from up to four sockets
//     (two IPs x two ports), reports OTHER-ADDRESS and RESPONSE-ORIGIN, and
//     honours CHANGE-REQUEST. The signaling server embeds it.
//   - [Discover], a STUN client that runs the RFC 5780 section 4.3 mapping
//     tests, the section 4.4 filtering tests and the section 4.5 hairpin
//     test from one UDP socket and names the result with RFC 4787 terms in a
//     [proto.NATReport]. [Describe] turns that report into text for people.
//   - [MapPort], which asks the default gateway for an inbound UDP port
//     mapping with UPnP IGD, PCP (RFC 6887) or NAT-PMP (RFC 6886).
//
// All network access goes through small interfaces ([PacketListener],
// [Dialer], [MapPortConfig.Gateway], [MapPortConfig.UPnP]) so tests can run
// the same code over pion's virtual network, loopback sockets or sockets
// inside a network namespace. Nothing in this package keeps global state.
//
// See README.md in this directory for the discovery flow.
package nat
