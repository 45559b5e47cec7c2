package signal_test

import (
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/parley-voice/parley/proto"
	"github.com/parley-voice/parley/signal"
	"github.com/parley-voice/parley/signal/signaltest"
)

func TestICEEndpoint(t *testing.T) {
	mixed := func(name string) []proto.ICEServer {
		return []proto.ICEServer{
			{URLs: []string{"stun:203.0.113.2:3478", "turn:203.0.113.2:3478?transport=udp"}, Username: "u-" + name, Credential: "secret"},
			{URLs: []string{"turns:relay.example:5349"}, Username: "u", Credential: "secret"},
			{URLs: []string{"STUN:[2001:db8::1]:3478", "stuns:x.example:5349", "stun:"}},
		}
	}
	tests := []struct {
		name   string
		ice    func(string) []proto.ICEServer
		method string
		status int
		want   []proto.ICEServer
	}{
		{"no ice servers", nil, http.MethodGet, http.StatusOK, []proto.ICEServer{}},
		{"stun only, no credentials", mixed, http.MethodGet, http.StatusOK, []proto.ICEServer{
			{URLs: []string{"stun:203.0.113.2:3478"}},
			{URLs: []string{"STUN:[2001:db8::1]:3478"}},
		}},
		{"head", mixed, http.MethodHead, http.StatusOK, nil},
		{"post refused", mixed, http.MethodPost, http.StatusMethodNotAllowed, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var asked []string
			cfg := signal.Config{}
			if tc.ice != nil {
				cfg.ICEServers = func(name string) []proto.ICEServer {
					asked = append(asked, name)
					return tc.ice(name)
				}
			}
			srv := signaltest.Start(t, cfg)
			req, _ := http.NewRequest(tc.method, srv.HTTP+"/api/ice", strings.NewReader(""))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != tc.status {
				t.Fatalf("status %d, want %d", resp.StatusCode, tc.status)
			}
			if tc.want == nil {
				return
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("content type %q", ct)
			}
			var got signal.ICEList
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got.ICEServers, tc.want) {
				t.Errorf("ice servers %+v, want %+v", got.ICEServers, tc.want)
			}
			if tc.ice != nil && (len(asked) != 1 || asked[0] != "") {
				t.Errorf("ICEServers called with %q, want one anonymous call", asked)
			}
		})
	}
}
