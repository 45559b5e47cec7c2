package signal

import (
	"encoding/json"
	"net/http"
	"strings"

	"github.com/parley-voice/parley/proto"
)

// ICEList is the body of GET /api/ice: the STUN servers anyone may use to
// learn their NAT (RFC 5389 Binding, RFC 5780 behaviour discovery) before
// or without signing in. `parley nat` reads it.
type ICEList struct {
	ICEServers []proto.ICEServer `json:"ice_servers"`
}

// serveICE answers GET /api/ice. The endpoint is unauthenticated, so it
// lists only the stun: URLs (RFC 7064) of Config.ICEServers, called with
// the empty name, and never credentials: TURN servers and their
// credentials reach only signed-in users, in the welcome message.
func (s *Server) serveICE(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	list := ICEList{ICEServers: []proto.ICEServer{}}
	if s.cfg.ICEServers != nil {
		list.ICEServers = stunOnly(s.cfg.ICEServers(""))
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	json.NewEncoder(w).Encode(list)
}

// stunOnly keeps the stun: URLs of in, dropping turn:, turns:, stuns: and
// anything unknown, and every username and credential.
func stunOnly(in []proto.ICEServer) []proto.ICEServer {
	out := []proto.ICEServer{}
	for _, srv := range in {
		var urls []string
		for _, u := range srv.URLs {
			if len(u) > 5 && strings.EqualFold(u[:5], "stun:") {
				urls = append(urls, u)
			}
		}
		if len(urls) > 0 {
			out = append(out, proto.ICEServer{URLs: urls})
		}
	}
	return out
}
