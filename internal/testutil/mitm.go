package testutil

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/parley-voice/parley/proto"
)

// Tamperer is a signaling server in the middle, for tests of what a
// dishonest server can do: clients (and browsers, whose page it also
// proxies) talk to it as to the server; it passes every frame on to the
// real server and back, keeps a copy of each, and rewrites the DTLS
// fingerprints of offers and answers, as a server that wanted to sit in
// the middle of "direct" calls would. Frames it cannot parse pass as they are.
type Tamperer struct {
	// URL is the WebSocket URL to give clients; HTTP the page's base URL.
	URL, HTTP string

	mu      sync.Mutex // guards frames, swapped
	frames  [][]byte
	swapped int
}

var fingerprintLine = regexp.MustCompile(`(a=fingerprint:\S+ )([0-9A-Fa-f:]+)`)

// StartTamperer runs a Tamperer on 127.0.0.1 in front of the server whose
// base URL is upstream (http://host:port), until the test ends.
func StartTamperer(t testing.TB, upstream string) *Tamperer {
	t.Helper()
	up, err := url.Parse(upstream)
	if err != nil {
		t.Fatal(err)
	}
	m := &Tamperer{}
	wsUp := "ws://" + up.Host + "/ws"
	upgrader := websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}
	proxy := httputil.NewSingleHostReverseProxy(up)
	var wg sync.WaitGroup
	mux := http.NewServeMux()
	mux.Handle("/", proxy)
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		down, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		upc, _, err := websocket.DefaultDialer.Dial(wsUp, http.Header{"User-Agent": {r.UserAgent()}})
		if err != nil {
			down.Close()
			return
		}
		wg.Add(2)
		go func() { defer wg.Done(); m.pump(down, upc) }()
		go func() { defer wg.Done(); m.pump(upc, down) }()
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close(); wg.Wait() })
	m.HTTP = "http://" + ln.Addr().String()
	m.URL = "ws://" + ln.Addr().String() + "/ws"
	return m
}

// pump copies frames from src to dst, recording and tampering.
func (m *Tamperer) pump(src, dst *websocket.Conn) {
	defer src.Close()
	defer dst.Close()
	for {
		mt, data, err := src.ReadMessage()
		if err != nil {
			return
		}
		m.mu.Lock()
		m.frames = append(m.frames, append([]byte(nil), data...))
		m.mu.Unlock()
		if out, ok := m.tamper(data); ok {
			data = out
		}
		if err := dst.WriteMessage(mt, data); err != nil {
			return
		}
	}
}

// tamper rewrites the fingerprints of an offer or answer.
func (m *Tamperer) tamper(data []byte) ([]byte, bool) {
	if !bytes.Contains(data, []byte("a=fingerprint:")) {
		return nil, false
	}
	env, err := proto.Decode(data)
	if err != nil || env.Type != proto.TypeOffer && env.Type != proto.TypeAnswer {
		return nil, false
	}
	s, err := proto.DecodeBody[*proto.SDP](env)
	if err != nil {
		return nil, false
	}
	s.SDP = fingerprintLine.ReplaceAllStringFunc(s.SDP, func(line string) string {
		sub := fingerprintLine.FindStringSubmatch(line)
		return sub[1] + strings.Repeat("66:", len(sub[2])/3) + "66" // the attacker's certificate
	})
	out, err := proto.New(env.Type, env.ID, env.To, s)
	if err != nil {
		return nil, false
	}
	out.From = env.From
	b, err := proto.Encode(out)
	if err != nil {
		return nil, false
	}
	m.mu.Lock()
	m.swapped++
	m.mu.Unlock()
	return b, true
}

// Swapped is how many offers and answers were rewritten.
func (m *Tamperer) Swapped() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.swapped
}

// Saw reports whether any frame that passed, either way, contains s.
func (m *Tamperer) Saw(s string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.frames {
		if bytes.Contains(f, []byte(s)) {
			return true
		}
	}
	return false
}

// Frames is how many frames passed.
func (m *Tamperer) Frames() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.frames)
}
