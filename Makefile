# Parley. `make test` is what CI runs (.ci/run): it installs what the tests
# need when missing, vets, runs every test with the race detector, and runs
# each fuzz target briefly.

GO ?= go
FUZZTIME ?= 3s

.PHONY: test deps vet unit fuzz bench bench-relay bench-signal soak build docs

test: deps vet unit fuzz

deps:
	@scripts/install-test-deps.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -timeout 25m ./...
	$(GO) test -count=1 -run 'Alloc' ./...   # allocation counts, which -race distorts
	$(GO) test -count=1 -run 'TestTenThousandSignIns' ./signal/
	$(GO) test -race -tags audiodevice ./client/audio/device/...

fuzz:
	@scripts/fuzz-all.sh $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

# A relay at the wire's limit: the supernode against coturn (Debian's
# coturn package; scripts/install-bench-deps.sh) and a batched forwarder,
# pinned to one core each (a few minutes; figures in supernode/README.md).
bench-relay: build
	@scripts/install-bench-deps.sh
	./parley bench relay --compare

# The signaling server under load: parley serve pinned to one core, real
# identities signing in over WebSocket up to 10,000 online, routing at 1k
# and 10k msgs/s, 100 reconnects/s (about a minute; figures in
# signal/README.md). Then 100,000 users on in-process nodes.
bench-signal: build
	./parley bench signal
	./parley bench signal --in-process --users 1000,10000,100000 --rate 10000

# Long runs, not part of make test: the message soak (1,000 messages through
# server, sender and receiver crashes and a full mailbox) nine times, one
# supernode at its budget of relayed voice with churn for 5 minutes (fails on
# growth in goroutines or memory, or loss), and the NAT-lab failover tests 10
# times each (issue 13: every audio gap under 800 ms; `make test` runs each
# once).
soak: build
	$(GO) test -race -count=9 -timeout 60m -run 'TestSoak' ./cmd/parley/
	./parley bench relay --soak 5m
	$(GO) test -race -count=1 -timeout 30m -run 'TestFailover' -v ./internal/e2e/ -args -failover.runs=10

build:
	$(GO) build -o parley ./cmd/parley

# Re-take the call page screenshots and terminal UI captures the README shows.
docs: deps
	$(GO) test -count=1 ./web/ -args -screenshots=$(CURDIR)/docs/screenshots
	$(GO) test -count=1 -run TUI ./cmd/parley/ -args -tui-screens=$(CURDIR)/docs/tui
