// Package web is the browser call page: plain HTML, CSS and JavaScript,
// embedded into the binary and served by the signaling server at "/". The
// page speaks the same signaling protocol as the Go client (package proto)
// over /ws and uses the browser's own RTCPeerConnection for calls.
package web

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed static
var static embed.FS

// Handler serves the call page and its assets.
func Handler() http.Handler {
	sub, err := fs.Sub(static, "static")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return http.FileServer(http.FS(sub))
}
