// Package e2e holds Parley's cross-package end-to-end tests: the real
// signaling server, its STUN service and real client.Client peers, placed
// in the kernel NAT lab (internal/natlab) so that every call crosses real
// nftables/conntrack NAT rules. The call matrix (matrix_test.go) places a
// call between every pair of home NAT kinds and checks the outcome theory
// predicts; impair_test.go calls over a delayed, lossy link.
//
// It has no code outside tests: it exists so that tests may import signal,
// client, nat and (later) supernode together without an import cycle. See
// README.md for the measured matrix.
package e2e
