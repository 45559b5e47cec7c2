package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"
)

// TestBenchSignalSmall runs the signaling load generator small, in
// process: every user signs in, every routed message arrives, and the
// figures are there.
func TestBenchSignalSmall(t *testing.T) {
	var out bytes.Buffer
	err := benchSignal(context.Background(), []string{"--users", "60", "--routers", "20", "--rate", "400", "--duration", "1s", "--json"}, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	var res struct {
		Users         int     `json:"users"`
		SignInsPerSec float64 `json:"signins_per_s"`
		ServerKiB     float64 `json:"server_kib_per_user"`
		Sent          int     `json:"routed_sent"`
		Received      int     `json:"routed_received"`
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	if res.Users != 60 || res.SignInsPerSec <= 0 || res.ServerKiB <= 0 || res.Sent < 300 || res.Received != res.Sent {
		t.Fatalf("figures %s", out.String())
	}
}
