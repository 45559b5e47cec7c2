package proto

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Codes never change meaning;
// clients switch on them, people read Message.
type Code string

// Error codes carried in TypeError bodies.
const (
	CodeBadFrame        Code = "bad_frame"       // not a JSON envelope
	CodeTooLarge        Code = "too_large"       // frame exceeds MaxFrameSize
	CodeUnknownType     Code = "unknown_type"    // envelope type not known to the receiver
	CodeBadVersion      Code = "bad_version"     // unsupported protocol version
	CodeBadRequest      Code = "bad_request"     // body missing required fields or malformed
	CodeBadName         Code = "bad_name"        // display name breaks the name rules
	CodeUnauthenticated Code = "unauthenticated" // message needs a completed auth
	CodeAuthFailed      Code = "auth_failed"     // signature did not verify
	CodeNameTaken       Code = "name_taken"      // name bound to another key
	CodeSpoofed         Code = "spoofed_sender"  // from field names someone else
	CodeRateLimited     Code = "rate_limited"    // too many messages
	CodeOffline         Code = "offline"         // recipient not online
	CodeNotFound        Code = "not_found"       // unknown recipient or object
	CodeForbidden       Code = "forbidden"       // not allowed for this identity
	CodeReplaced        Code = "replaced"        // session replaced by a newer login of the same identity
	CodeOverBudget      Code = "over_budget"     // a relay or store quota is exhausted
	CodeTokenExpired    Code = "token_expired"   // relay token past its expiry
	CodeTokenInvalid    Code = "token_invalid"   // relay token forged or for someone else
	CodeUnavailable     Code = "unavailable"     // service (e.g. relay) unavailable
	CodeShuttingDown    Code = "shutting_down"   // server is stopping
	CodeCannotOpen      Code = "cannot_open"     // a sealed message the recipient cannot open (not sealed to its key)
	CodeNotAccepted     Code = "not_accepted"    // the recipient takes messages and calls from contacts only
	CodeInsecure        Code = "insecure"        // a link offer or answer not signed by the sender's key
	CodeInternal        Code = "internal"        // bug on the other side

	// A file transfer ends with one of these (or too_large: over the
	// receiver's limit); files.go.
	CodeDeclined     Code = "declined"      // the receiver refused the offer
	CodeHashMismatch Code = "hash_mismatch" // the received bytes do not hash to the offer's SHA-256
	CodeCancelled    Code = "cancelled"     // either side gave up on the transfer
)

// Error is an error that travels on the wire with a stable code.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	// Ref is the id of the envelope that caused the error, if any.
	Ref string `json:"ref,omitempty"`
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "parley: " + string(e.Code)
	}
	return fmt.Sprintf("parley: %s: %s", e.Code, e.Message)
}

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, proto.ErrOffline) works across the wire.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code && (t.Message == "" || t.Message == e.Message)
}

// Errorf returns an *Error with the given code and formatted message.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// CodeOf returns the code of err if it is (or wraps) an *Error, else CodeInternal.
func CodeOf(err error) Code {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Code
	}
	return CodeInternal
}

// Sentinels for errors.Is; they match any *Error with the same code.
var (
	ErrBadFrame        = &Error{Code: CodeBadFrame}
	ErrTooLarge        = &Error{Code: CodeTooLarge}
	ErrUnknownType     = &Error{Code: CodeUnknownType}
	ErrBadVersion      = &Error{Code: CodeBadVersion}
	ErrBadRequest      = &Error{Code: CodeBadRequest}
	ErrBadName         = &Error{Code: CodeBadName}
	ErrUnauthenticated = &Error{Code: CodeUnauthenticated}
	ErrAuthFailed      = &Error{Code: CodeAuthFailed}
	ErrNameTaken       = &Error{Code: CodeNameTaken}
	ErrSpoofed         = &Error{Code: CodeSpoofed}
	ErrRateLimited     = &Error{Code: CodeRateLimited}
	ErrOffline         = &Error{Code: CodeOffline}
	ErrNotFound        = &Error{Code: CodeNotFound}
	ErrForbidden       = &Error{Code: CodeForbidden}
	ErrOverBudget      = &Error{Code: CodeOverBudget}
	ErrTokenExpired    = &Error{Code: CodeTokenExpired}
	ErrTokenInvalid    = &Error{Code: CodeTokenInvalid}
)

// Validate implements Body.
func (e *Error) Validate() error {
	if e.Code == "" {
		return Errorf(CodeBadRequest, "error without code")
	}
	if len(e.Message) > 1024 {
		return Errorf(CodeBadRequest, "error message longer than 1024 bytes")
	}
	return nil
}
