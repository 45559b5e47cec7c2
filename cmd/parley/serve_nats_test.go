package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/parley-voice/parley/signal"
)

// TestStateFlags: the flags of where serve keeps its state map onto
// signal.Config, and conflicting ones are refused in words.
func TestStateFlags(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		check   func(c *signal.Config) bool
		wantErr string
	}{
		{"embedded single node", nil, func(c *signal.Config) bool {
			return len(c.NATS.URLs) == 0 && c.NATS.ClusterListen == "" && c.Directory == signal.DirectoryAll && c.StoreBudget == 1<<30
		}, ""},
		{"three-node cluster", []string{"--cluster-routes", "nats://a:6222,nats://b:6222", "--node-name", "n1"}, func(c *signal.Config) bool {
			return c.NATS.ClusterListen == ":6222" && len(c.NATS.Routes) == 2 && c.NATS.ServerName == "n1" && c.NodeName == "n1"
		}, ""},
		{"external NATS", []string{"--nats", "nats://x:4222,nats://y:4222", "--nats-replicas", "3"}, func(c *signal.Config) bool {
			return len(c.NATS.URLs) == 2 && c.NATS.Replicas == 3
		}, ""},
		{"directory off, small store", []string{"--directory", "off", "--store-budget-mib", "10"}, func(c *signal.Config) bool {
			return c.Directory == signal.DirectoryOff && c.StoreBudget == 10<<20
		}, ""},
		{"external and embedded cluster", []string{"--nats", "nats://x:4222", "--cluster-routes", "nats://a:6222"}, nil, "--nats uses an external NATS"},
		{"bad directory", []string{"--directory", "some"}, nil, "want all, online or off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := flag.NewFlagSet("serve", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f := addStateFlags(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			var c signal.Config
			err := f.config(&c)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !tc.check(&c) {
				t.Fatalf("config %+v, %v", c, err)
			}
		})
	}
}
