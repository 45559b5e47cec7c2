package memnet

import (
	"context"
	"errors"
	"io"
	"os"
	"testing"
	"time"
)

func TestConn(t *testing.T) {
	l := Listen("test", 8)
	defer l.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
			return
		}
		go func() { l.Accept() }() // the second connection; it stays silent
		b, _ := io.ReadAll(c)
		got <- b
	}()
	c, err := l.DialContext(context.Background(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	// More than the 8-byte buffer: the writer waits for the reader.
	if _, err := c.Write([]byte("hello, in-memory world")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if b := <-got; string(b) != "hello, in-memory world" {
		t.Fatalf("read %q", b)
	}
	// A read deadline expires.
	c2, _ := l.DialContext(context.Background(), "", "")
	c2.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	if c.RemoteAddr().String() == "" || c2.LocalAddr().String() == c.LocalAddr().String() {
		t.Fatalf("addresses %s %s", c.LocalAddr(), c2.LocalAddr())
	}
	l.Close()
	if _, err := l.DialContext(context.Background(), "", ""); !errors.Is(err, ErrClosed) {
		t.Fatalf("dial after close: %v", err)
	}
}
