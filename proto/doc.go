// Package proto defines Parley's wire messages: the versioned JSON envelope
// spoken over the signaling WebSocket, the bodies carried in it, the messages
// exchanged on a peer's chat data channel, NAT reports, and relay tokens.
//
// proto uses only the standard library. Every decoder validates what it
// decodes (size, required fields, name rules) before anything else looks at
// it; errors that travel on the wire are *Error values with stable codes.
//
// See README.md in this directory for the protocol flow.
package proto
