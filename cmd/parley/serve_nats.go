package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/parley-voice/parley/signal"
)

// stateFlags say where `parley serve` keeps its state (signal/nats.go): an
// embedded nats-server by default (a single node, no port opened), a
// cluster of embedded servers (--cluster, --cluster-routes), or an
// external NATS (--nats).
type stateFlags struct {
	nats, cluster, routes, clusterName, secret, node, directory string
	replicas, budgetMiB                                         int
}

func addStateFlags(fs *flag.FlagSet) *stateFlags {
	f := &stateFlags{}
	fs.StringVar(&f.nats, "nats", "", "use an external NATS server or cluster with JetStream (nats://host:4222[,nats://host2:4222]) instead of the embedded one")
	fs.StringVar(&f.cluster, "cluster", "", "host:port the embedded NATS server takes routes from other parley serve nodes on (default :6222 when --cluster-routes is set)")
	fs.StringVar(&f.routes, "cluster-routes", "", "the other nodes' cluster addresses (nats://host:6222,...): their embedded servers and this one form one cluster")
	fs.StringVar(&f.clusterName, "cluster-name", "parley", "the cluster's name; every node uses the same")
	fs.StringVar(&f.secret, "cluster-secret", "", "password every node's routes present (all nodes set the same); without it anyone who reaches the cluster port can join")
	fs.StringVar(&f.node, "node-name", "", "this node's name in the cluster (default: derived from --cluster)")
	fs.IntVar(&f.replicas, "nats-replicas", 0, "copies JetStream keeps of names, presence and mail (default 1, or min(3, nodes) in an embedded cluster)")
	fs.StringVar(&f.directory, "directory", "all", "what the people directory lists: all (every registered name), online, or off (people add each other by name)")
	fs.IntVar(&f.budgetMiB, "store-budget-mib", 1024, "the most the store may hold (names, offline mail, receipts), in MiB: past it no new names or mail")
	return f
}

// config is the part of signal.Config these flags set.
func (f *stateFlags) config(c *signal.Config) error {
	n := signal.NATSConfig{ClusterName: f.clusterName, ClusterSecret: f.secret, ServerName: f.node, Replicas: f.replicas}
	if f.nats != "" {
		if f.cluster != "" || f.routes != "" {
			return fmt.Errorf("--nats uses an external NATS: --cluster and --cluster-routes are for the embedded one")
		}
		n.URLs = splitList(f.nats)
	}
	if f.routes != "" {
		n.Routes = splitList(f.routes)
		if f.cluster == "" {
			f.cluster = ":6222"
		}
	}
	n.ClusterListen = f.cluster
	switch f.directory {
	case "all":
		c.Directory = signal.DirectoryAll
	case "online":
		c.Directory = signal.DirectoryOnline
	case "off":
		c.Directory = signal.DirectoryOff
	default:
		return fmt.Errorf("--directory %q: want all, online or off", f.directory)
	}
	if f.budgetMiB <= 0 {
		return fmt.Errorf("--store-budget-mib must be positive")
	}
	c.NATS, c.NodeName, c.StoreBudget = n, f.node, int64(f.budgetMiB)<<20
	return nil
}

// describe says, for the start-up lines, where the state lives.
func (f *stateFlags) describe(data string) string {
	switch {
	case f.nats != "":
		return "state: external NATS " + f.nats
	case f.routes != "":
		return fmt.Sprintf("state: embedded NATS, cluster %q on %s with %s", f.clusterName, f.cluster, strings.Join(splitList(f.routes), ", "))
	case data == "":
		return "state: embedded NATS, in memory"
	}
	return "state: embedded NATS in " + data
}
