// Command parley is Parley's one binary: the signaling server with the call
// page (serve), the desktop chat client (chat), the opt-in supernode daemon
// (supernode), NAT discovery (nat) and benchmarks (bench).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
)

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{
	"serve":     {"run the signaling server, STUN service and browser call page", runServe},
	"chat":      {"the desktop chat client (terminal, or JSON lines with --json)", runChat},
	"bench":     {"measure sign-in, call set-up and chat latency on loopback; 'bench relay': a relay's cost per packet", runBench},
	"supernode": {"offer this machine as a relay for people whose NATs block direct calls", runSupernode},
	"nat":       {"find out what NAT is between you and the Internet (--json for scripts)", runNAT},
	"key":       {"back up or restore the key that owns your name (export, import)", runKey},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "parley: peer-assisted voice and chat.\n\nUsage: parley <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(w, "\nRun 'parley <command> --help' for the flags of a command.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage(os.Stdout)
		return
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "parley: unknown command %q\n\n", name)
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := cmd.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		fmt.Fprintf(os.Stderr, "parley %s: %v\n", name, err)
		os.Exit(1)
	}
}

// newFlagSet makes a subcommand's flag set with a usage that explains it.
func newFlagSet(name, synopsis, about string) *flag.FlagSet {
	fs := flag.NewFlagSet("parley "+name, flag.ContinueOnError)
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: parley %s %s\n\n%s\n\nFlags:\n", name, synopsis, strings.TrimSpace(about))
		fs.PrintDefaults()
	}
	return fs
}

// newLogger logs to stderr at the named level.
func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("bad --log-level %q (debug, info, warn, error)", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
