// Package client is Parley's Go client library, used by `parley chat`, by
// the supernode daemon and by the tests. It signs in to a signaling server
// (reconnecting with backoff), tracks presence, and keeps one WebRTC peer
// connection per peer with trickle ICE: a reliable data channel for chat and
// an Opus audio track for calls. Chat messages carry ids and receipts; while
// no direct path exists they go through the server, so none is lost.
//
// The state lives in one goroutine (Run's loop); the API and pion's
// callbacks hand it work through a mailbox that never blocks, so no pion
// call is ever made with a lock held. See README.md for the flows.
package client
