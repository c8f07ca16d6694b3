# Herald's build. `make` formats, lints and tests; `make test` is what CI runs.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Root installs directly; anyone else through sudo.
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

FUZZTIME ?= 30s
# CI fuzzes each target for a number of inputs, not a time: with a time,
# Go 1.26's fuzzing coordinator can report "context deadline exceeded" as a
# failure when the time runs out while a worker is busy (golang/go#75804,
# fixed in Go 1.27), with no failing input found. 500 inputs take the
# slowest targets (those that go through a real server) about 5 s.
CI_FUZZTIME ?= 500x
BENCHTIME ?= 1s

.PHONY: all build run test deps lint fmt fmt-check vet bench fuzz cluster chaos clean

# make cluster: three local nodes (RESP 6381-6383, HTTP 8081-8083, Raft
# 7001-7003, data in ./cluster-data), in the foreground; Ctrl-C stops them.
PEERS := n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003

all: fmt lint test

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/herald ./cmd/herald

# One single-node broker: RESP on 127.0.0.1:6379, HTTP on 127.0.0.1:8080,
# data in ./herald-data.
run: build
	./bin/herald

# What the tests need on a bare machine (Redis tools and server for the
# compatibility tests, client libraries, headless Chromium for the browser
# test). A test never skips for a missing
# tool; it fails and names what to install, and this target installs it.
deps:
	@missing=""; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	/usr/bin/python3 -c 'import redis' >/dev/null 2>&1 || missing="$$missing python3 python3-redis"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	command -v npm >/dev/null 2>&1 || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@# Client libraries for the compatibility tests (node-redis, ioredis),
	@# pinned by the lock file; reinstalled when the lock file changes.
	@if [ ! resp/testdata/clients/node_modules/.package-lock.json -nt resp/testdata/clients/package-lock.json ]; then \
		cd resp/testdata/clients && npm ci --no-audit --no-fund; \
	fi

# Every test with the race detector, then a short run of every fuzz
# target (crashers it finds land in testdata/fuzz and stay as regression
# cases). CI runs exactly this.
test: deps lint
	$(GO) test -race -timeout 25m ./...
	$(MAKE) fuzz FUZZTIME=$(CI_FUZZTIME)

lint: fmt-check vet

fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

# The standard comparison (Herald on one and three nodes beside
# redis-server, a few minutes) and every Go micro-benchmark; writes the
# results into docs/benchmarks.md. BENCH_FLAGS passes flags to the suite,
# e.g. BENCH_FLAGS="--only publish --duration 5s".
BENCH_FLAGS ?=
bench: deps build
	$(GO) build -o bin/herald-bench ./cmd/herald-bench
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./... | tee bin/gobench.txt
	./bin/herald-bench suite --herald bin/herald --out docs/benchmarks.md --gobench bin/gobench.txt $(BENCH_FLAGS)

# Runs every fuzz target for FUZZTIME each (a duration, or a number of
# inputs such as 500x).
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

cluster: build
	@mkdir -p cluster-data
	@echo "three nodes: redis-cli -p 6381 | 6382 | 6383; Ctrl-C stops them"
	@trap 'kill 0' INT TERM; \
	for i in 1 2 3; do \
		./bin/herald --node-id n$$i --raft-addr 127.0.0.1:700$$i --resp-addr 127.0.0.1:638$$i \
			--http-addr 127.0.0.1:808$$i --data-dir cluster-data/n$$i --peers $(PEERS) 2>&1 | sed -u "s/^/n$$i | /" & \
	done; \
	wait

# The fault test of a three-node cluster (docs/reliability.md): kills,
# pauses, restarts and partitions under load, then checks that nothing
# acknowledged was lost. DURATION (default 2m); SEED replays a run (default:
# from the clock, printed). The summary is written to bin/chaos-summary.json.
DURATION ?= 2m
SEED ?= 0
chaos: build
	$(GO) build -o bin/herald-chaos ./cmd/herald-chaos
	./bin/herald-chaos --herald bin/herald --duration $(DURATION) --seed $(SEED) --json bin/chaos-summary.json

clean:
	rm -rf bin
