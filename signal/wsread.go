package signal

import (
	"errors"
	"fmt"
	"io"
	"net"

	"github.com/gobwas/ws"
)

// Reading a client's frames. gorilla/websocket upgrades the connection
// and writes every frame; the frames a client sends are read here,
// straight from the connection (RFC 6455 §5, with gobwas/ws's header
// parser and checks), for memory: an idle session then waits in a shallow
// call with no buffer of its own, so its goroutine stack shrinks to a few
// KiB, where gorilla's reader keeps a buffer and a deep stack per
// connection (8 KiB of the ~13 KiB a connected user cost).

// errFrameTooLarge is a message over the reader's limit.
var errFrameTooLarge = errors.New("frame too large")

// closeError is the close frame a client sent (RFC 6455 §5.5.1).
type closeError struct{ code ws.StatusCode }

func (e *closeError) Error() string { return fmt.Sprintf("closed by the client (%d)", e.code) }

// frameReader reads whole messages from a client's connection.
type frameReader struct {
	conn net.Conn
	max  int // largest message, in bytes
	// onPing and onPong run for control frames between messages.
	onPing func(payload []byte)
	onPong func()
}

// next returns the next data message (text or binary, reassembled from
// its fragments), handling control frames on the way. It allocates only
// the message (and each header's 12 bytes): nothing stays with an idle
// connection.
func (r *frameReader) next() (ws.OpCode, []byte, error) {
	var (
		op    ws.OpCode
		msg   []byte
		state = ws.StateServerSide
	)
	hdr := make([]byte, 2, ws.MaxHeaderSize-2)
	for {
		h, err := ws.ReadHeaderBuffer(r.conn, hdr)
		if err != nil {
			return 0, nil, err
		}
		if err := ws.CheckHeader(h, state); err != nil {
			return 0, nil, err
		}
		if h.Length < 0 || h.Length > int64(r.max) || !h.OpCode.IsControl() && int64(len(msg))+h.Length > int64(r.max) {
			return 0, nil, errFrameTooLarge
		}
		payload := make([]byte, h.Length)
		if _, err := io.ReadFull(r.conn, payload); err != nil {
			return 0, nil, err
		}
		ws.Cipher(payload, h.Mask, 0)
		switch h.OpCode {
		case ws.OpPing:
			if r.onPing != nil {
				r.onPing(payload)
			}
			continue
		case ws.OpPong:
			if r.onPong != nil {
				r.onPong()
			}
			continue
		case ws.OpClose:
			code := ws.StatusNoStatusRcvd
			if len(payload) >= 2 {
				code, _ = ws.ParseCloseFrameData(payload)
			}
			return 0, nil, &closeError{code: code}
		case ws.OpContinuation:
		default:
			op = h.OpCode
		}
		if msg == nil && h.Fin {
			return op, payload, nil // one frame: no copy
		}
		msg = append(msg, payload...)
		if h.Fin {
			return op, msg, nil
		}
		state = state.Set(ws.StateFragmented)
	}
}
