package nat

import "errors"

// Sentinel errors. Functions wrap them with the operation and its subject,
// so test them with errors.Is.
var (
	// ErrBadConfig reports a Config field that cannot work.
	ErrBadConfig = errors.New("nat: bad config")
	// ErrClosed is returned by a Server that has been closed.
	ErrClosed = errors.New("nat: server closed")
	// ErrRunning is returned when Run is called twice.
	ErrRunning = errors.New("nat: server already running")
	// ErrMalformed reports bytes that do not decode as the expected message.
	ErrMalformed = errors.New("nat: malformed message")
	// ErrNotOurs reports a well-formed STUN message that does not answer
	// our transaction.
	ErrNotOurs = errors.New("nat: message answers another transaction")
	// ErrServerError reports a STUN error response where a success was
	// required (the server refused a plain Binding request).
	ErrServerError = errors.New("nat: STUN server returned an error")
	// ErrResolve reports that the STUN server's name did not resolve.
	ErrResolve = errors.New("nat: cannot resolve server")
	// ErrNoGateway reports that no default IPv4 gateway was found.
	ErrNoGateway = errors.New("nat: no default gateway")
	// ErrNoPortMapping reports that no port-mapping protocol answered.
	ErrNoPortMapping = errors.New("nat: no port mapping protocol available")
	// ErrMappingRefused reports that a gateway answered but refused the
	// mapping (a non-zero NAT-PMP/PCP result code or a UPnP fault).
	ErrMappingRefused = errors.New("nat: gateway refused port mapping")
)
