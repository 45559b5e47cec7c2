package natlab

import "errors"

// Sentinel errors. Functions wrap them with the operation and its subject,
// so test with errors.Is.
var (
	// ErrUnsupported means this machine cannot host a lab: not root, or a
	// tool (ip, nft, iptables) or /run/netns is missing. Require skips on it.
	ErrUnsupported = errors.New("natlab: unsupported on this machine")
	// ErrBadName means a host or home name is empty, too long or not
	// [a-z0-9], or already used in this lab.
	ErrBadName = errors.New("natlab: bad name")
	// ErrExhausted means the lab ran out of internet addresses or LANs.
	ErrExhausted = errors.New("natlab: address space exhausted")
	// ErrClosed means the lab was already torn down.
	ErrClosed = errors.New("natlab: lab closed")
	// ErrNotLiteral means an address given to a namespace-bound Net was a
	// host name: resolving it would send DNS queries from the host, so
	// only IP literals are accepted.
	ErrNotLiteral = errors.New("natlab: address is not an IP literal")
	// ErrBadKind means a NATKind value is not one of the defined kinds.
	ErrBadKind = errors.New("natlab: unknown NAT kind")
	// ErrBadImpairment means an Impairment has a negative duration or a
	// loss outside [0, 1].
	ErrBadImpairment = errors.New("natlab: bad impairment")
	// ErrNetlink means the kernel rejected or garbled a netlink exchange
	// with nfnetlink_queue.
	ErrNetlink = errors.New("natlab: netlink")
)
