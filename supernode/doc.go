// Package supernode is Parley's opt-in relay: a well-connected peer that
// carries the calls of users whose NATs keep them from reaching each other
// directly, without being able to read them (media stays DTLS-SRTP and
// chat DTLS-SCTP end to end; the supernode moves ciphertext).
//
// A Server runs
//
//   - a pion/turn server (RFC 8656) with UDP, TCP and TLS listeners for
//     browsers, authenticated with TURN REST credentials (HMAC-SHA1 over
//     "expiry:user") under a secret the signaling server gives this
//     supernode alone when it promotes it;
//   - a QUIC listener (ALPN "parley-relay/1", a self-signed certificate
//     pinned by its SHA-256 fingerprint) for native clients: each stream
//     starts with a relay token signed by the signaling server and then
//     carries TURN over TCP framing, handed to the same TURN server
//     through a net.Listener adapter;
//   - a signaling session: it registers as a candidate, answers the
//     server's reachability/identity/bandwidth probe, learns the decision
//     and its reason, and sends heartbeats while promoted.
//
// Limits follow coturn's quotas and libp2p's circuit limits: allocations
// per user, total sessions, bandwidth per session and in total, allocation
// lifetimes with refresh, and a peer policy that never relays to loopback,
// private, link-local or the supernode's own addresses unless an explicit
// allow-list says so (the CVE-2020-26262 class).
//
// See README.md for the promotion, relay and trust flows.
package supernode
