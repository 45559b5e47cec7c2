package signal

import (
	"bytes"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
)

// frames encodes client frames (masked, as RFC 6455 §5.3 requires).
func frames(t testing.TB, fs ...ws.Frame) []byte {
	t.Helper()
	var b bytes.Buffer
	for _, f := range fs {
		if err := ws.WriteFrame(&b, ws.MaskFrameWith(f, [4]byte{1, 2, 3, 4})); err != nil {
			t.Fatal(err)
		}
	}
	return b.Bytes()
}

// bytesConn is a net.Conn that reads from a byte slice.
type bytesConn struct {
	net.Conn
	r io.Reader
}

func (c *bytesConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func readAll(data []byte, max int) (msgs []string, pings, pongs int, err error) {
	r := &frameReader{conn: &bytesConn{r: bytes.NewReader(data)}, max: max,
		onPing: func([]byte) { pings++ }, onPong: func() { pongs++ }}
	for {
		op, m, err := r.next()
		if err != nil {
			return msgs, pings, pongs, err
		}
		if op != ws.OpText && op != ws.OpBinary {
			return msgs, pings, pongs, errors.New("not a data message")
		}
		if len(m) > max {
			return msgs, pings, pongs, errors.New("over the limit")
		}
		msgs = append(msgs, string(m))
	}
}

// TestFrameReader: whole and fragmented messages (control frames between
// fragments), the size limit, and what a server must refuse.
func TestFrameReader(t *testing.T) {
	big := strings.Repeat("x", 1000)
	cases := []struct {
		name        string
		in          []byte
		msgs        string
		pings, pong int
		err         error
	}{
		{"whole", frames(t, ws.NewTextFrame([]byte("hello")), ws.NewTextFrame([]byte("world"))), "[hello world]", 0, 0, io.EOF},
		{"fragmented with control frames between", frames(t,
			ws.NewFrame(ws.OpText, false, []byte("hel")), ws.NewPingFrame([]byte("p")),
			ws.NewFrame(ws.OpContinuation, false, []byte("lo ")), ws.NewPongFrame(nil),
			ws.NewFrame(ws.OpContinuation, true, []byte("there"))), "[hello there]", 1, 1, io.EOF},
		{"close", frames(t, ws.NewTextFrame([]byte("a")), ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusNormalClosure, ""))), "[a]", 0, 0, &closeError{}},
		{"one frame too large", frames(t, ws.NewTextFrame([]byte(big))), "[]", 0, 0, errFrameTooLarge},
		{"fragments too large together", frames(t, ws.NewFrame(ws.OpText, false, []byte(big[:600])), ws.NewFrame(ws.OpContinuation, true, []byte(big[:600]))), "[]", 0, 0, errFrameTooLarge},
		{"unmasked", func() []byte {
			var b bytes.Buffer
			ws.WriteFrame(&b, ws.NewTextFrame([]byte("x")))
			return b.Bytes()
		}(), "[]", 0, 0, ws.ErrProtocolMaskRequired},
		{"continuation first", frames(t, ws.NewFrame(ws.OpContinuation, true, []byte("x"))), "[]", 0, 0, ws.ErrProtocolContinuationUnexpected},
		{"new message inside a fragmented one", frames(t, ws.NewFrame(ws.OpText, false, []byte("x")), ws.NewTextFrame([]byte("y"))), "[]", 0, 0, ws.ErrProtocolContinuationExpected},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, pings, pongs, err := readAll(tc.in, 800)
			if got := strings.Join(msgs, " "); "["+got+"]" != tc.msgs {
				t.Errorf("messages [%s], want %s", got, tc.msgs)
			}
			if pings != tc.pings || pongs != tc.pong {
				t.Errorf("pings %d pongs %d", pings, pongs)
			}
			var ce *closeError
			if _, isClose := tc.err.(*closeError); isClose && !errors.As(err, &ce) || !isClose && !errors.Is(err, tc.err) {
				t.Errorf("error %v, want %v", err, tc.err)
			}
		})
	}
}

// FuzzFrameReader: whatever a client sends, the reader returns messages
// within the limit or an error, and never panics; a message it returns,
// sent again as one frame, reads back the same.
func FuzzFrameReader(f *testing.F) {
	f.Add(frames(f, ws.NewTextFrame([]byte(`{"v":1,"type":"ping"}`))))
	f.Add(frames(f, ws.NewFrame(ws.OpText, false, []byte("ab")), ws.NewPingFrame([]byte("p")), ws.NewFrame(ws.OpContinuation, true, []byte("cd"))))
	f.Add(frames(f, ws.NewCloseFrame(ws.NewCloseFrameBody(ws.StatusGoingAway, "bye"))))
	f.Add(frames(f, ws.NewTextFrame(bytes.Repeat([]byte("z"), 300))))
	f.Fuzz(func(t *testing.T, data []byte) {
		msgs, _, _, _ := readAll(data, 1024)
		for _, m := range msgs {
			again, _, _, err := readAll(frames(t, ws.NewTextFrame([]byte(m))), 1024)
			if len(again) != 1 || again[0] != m || !errors.Is(err, io.EOF) {
				t.Fatalf("%q read back as %q (%v)", m, again, err)
			}
		}
	})
}

// TestFrameReaderDeadline: the connection's read deadline ends a wait.
func TestFrameReaderDeadline(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	r := &frameReader{conn: a, max: 100}
	if _, _, err := r.next(); !isTimeout(err) {
		t.Fatalf("read past the deadline: %v", err)
	}
}
