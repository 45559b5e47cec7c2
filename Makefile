# Parley. `make test` is what CI runs (.ci/run): it installs what the tests
# need when missing, vets, runs every test with the race detector, and runs
# each fuzz target briefly.

GO ?= go
FUZZTIME ?= 3s

.PHONY: test deps vet unit fuzz bench soak build docs

test: deps vet unit fuzz

deps:
	@scripts/install-test-deps.sh

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -timeout 25m ./...
	$(GO) test -race -tags audiodevice ./client/audio/device/...

fuzz:
	@scripts/fuzz-all.sh $(FUZZTIME)

bench:
	$(GO) test -run '^$$' -bench . -benchtime 2s ./...

# Long runs: the message soak (1,000 messages through server, sender and
# receiver crashes and a full mailbox) nine times.
soak:
	$(GO) test -race -count=9 -timeout 60m -run 'TestSoak' ./cmd/parley/

build:
	$(GO) build -o parley ./cmd/parley

# Re-take the call page screenshots and terminal UI captures the README shows.
docs: deps
	$(GO) test -count=1 ./web/ -args -screenshots=$(CURDIR)/docs/screenshots
	$(GO) test -count=1 -run TUI ./cmd/parley/ -args -tui-screens=$(CURDIR)/docs/tui
