package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os/exec"
	"strings"
	"testing"
)

// benchSignalOut is the JSON parley bench signal prints.
type benchSignalOut struct {
	Nodes  int    `json:"nodes"`
	Where  string `json:"where"`
	Levels []struct {
		Users         int     `json:"users"`
		SignInsPerSec float64 `json:"signins_per_s"`
		P50           float64 `json:"signin_p50_ms"`
		KiBPerUser    float64 `json:"server_kib_per_user"`
	} `json:"levels"`
	Routing []struct {
		Rate     int `json:"rate"`
		Sent     int `json:"sent"`
		Received int `json:"received"`
	} `json:"routing"`
	Churn *struct {
		Tried int `json:"tried"`
		GotIn int `json:"got_in"`
	} `json:"churn"`
}

// check asserts every level was reached with figures, every routed
// message arrived and every churned user got back in.
func (o *benchSignalOut) check(t *testing.T, levels []int, raw string) {
	t.Helper()
	if len(o.Levels) != len(levels) {
		t.Fatalf("levels %+v, want %v\n%s", o.Levels, levels, raw)
	}
	for i, l := range o.Levels {
		if l.Users != levels[i] || l.SignInsPerSec <= 0 || l.P50 <= 0 || l.KiBPerUser <= 0 {
			t.Errorf("level %d: %+v", i, l)
		}
	}
	for _, r := range o.Routing {
		if r.Sent < r.Rate/2 || r.Received != r.Sent {
			t.Errorf("routing %+v: not every message arrived", r)
		}
	}
	if o.Churn == nil || o.Churn.Tried == 0 || o.Churn.GotIn != o.Churn.Tried {
		t.Errorf("churn %+v: not every user got back in", o.Churn)
	}
}

// TestBenchSignalInProcess runs the load generator small against a node
// in this process.
func TestBenchSignalInProcess(t *testing.T) {
	var out bytes.Buffer
	err := benchSignal(context.Background(), []string{"--in-process", "--users", "30,60", "--routers", "20", "--rate", "400",
		"--duration", "1s", "--churn", "40", "--churn-for", "500ms", "--json"}, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	var res benchSignalOut
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output %q: %v", out.String(), err)
	}
	res.check(t, []int{30, 60}, out.String())
}

// TestBenchSignalServe runs the real binary, which starts parley serve
// (pinned with taskset) and signs users in over TCP.
func TestBenchSignalServe(t *testing.T) {
	out, err := exec.Command(parleyBinary(t), "bench", "signal", "--users", "20,50", "--routers", "20", "--rate", "200",
		"--duration", "1s", "--churn", "40", "--churn-for", "500ms", "--json").CombinedOutput()
	if err != nil {
		t.Fatalf("bench signal: %v\n%s", err, out)
	}
	var res benchSignalOut
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	res.check(t, []int{20, 50}, string(out))
	if _, err := exec.LookPath("taskset"); err == nil && !strings.Contains(res.Where, "pinned to CPU 0") {
		t.Errorf("server not pinned: %q", res.Where)
	}
}
