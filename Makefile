# credbroker — build, quickstart, tests.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/credbroker

.PHONY: build quickstart test bench bench-http bench-db bench-fleet clean

build:
	CGO_ENABLED=0 $(GO) build -trimpath -buildvcs=auto -ldflags "-s -w -X main.version=$(VERSION)" -o $(BIN) ./cmd/credbroker

# The container image (Dockerfile), tagged credbroker:$(VERSION), with docker
# or podman when either reaches an engine; else it says how, and fails.
.PHONY: image
image:
	@VERSION=$(VERSION) scripts/image.sh

# Static binaries for linux/amd64 and linux/arm64, the version stamped in,
# and their SHA256SUMS, in $(DIST).
DIST ?= dist
.PHONY: release
release:
	@VERSION=$(VERSION) GO=$(GO) scripts/release.sh $(DIST)

# Start a demo upstream and the broker on examples/quickstart with an http
# injection listener in front of it, fetch the demo credential, call the
# upstream through the listener (which adds it), show both audit rows, stop
# both. State is kept in a directory of the user's own:
# $XDG_RUNTIME_DIR/credbroker-quickstart or /tmp/credbroker-quickstart-UID.
quickstart: build
	@GO=$(GO) scripts/quickstart.sh $(BIN)

# The whole suite: installs what it needs, then vet, gofmt, race tests, fuzzing.
test:
	@scripts/test.sh

# Regenerate docs/config-reference.md from the configuration's Go types and
# their doc comments (internal/configref); a test fails while it is stale.
.PHONY: docs
docs:
	$(GO) run ./internal/configref

# The load generator against the quickstart broker and a bare server.
bench: build
	@scripts/bench.sh $(BIN)

# An HTTP injection listener against a direct connection and HAProxy
# setting the same header (wrk, 50 connections and 1).
bench-http: build
	@scripts/bench-http.sh $(BIN)

# The PostgreSQL and Redis injection listeners against a direct connection
# and HAProxy mode tcp (pgbench, redis-benchmark).
bench-db: build
	@scripts/bench-db.sh $(BIN)

# The fleet audit store on a throwaway PostgreSQL: audit query --fleet over
# 10,000,000 rows from 100 installs, forwarding rows/s and lag under load
# (ROWS=1000000 for a quicker run).
bench-fleet: build
	@scripts/bench-fleet.sh $(BIN)

clean:
	rm -rf bin
