# Herald's build. `make` formats, lints and tests; `make test` is what CI runs.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Root installs directly; anyone else through sudo.
SUDO    := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

FUZZTIME ?= 30s
BENCHTIME ?= 1s

.PHONY: all build run test deps lint fmt fmt-check vet bench fuzz cluster clean

all: fmt lint test

build:
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/herald ./cmd/herald

# One single-node broker: RESP on 127.0.0.1:6379, HTTP on 127.0.0.1:8080,
# data in ./herald-data.
run: build
	./bin/herald

# What the tests need on a bare machine. A test never skips for a missing
# tool; it fails and names what to install, and this target installs it.
deps:
	@missing=""; \
	command -v redis-cli >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
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

test: deps lint
	$(GO) test -race -timeout 25m ./...

lint: fmt-check vet

fmt:
	gofmt -w $$(git ls-files '*.go')

fmt-check:
	@out=$$(gofmt -l $$(git ls-files '*.go')); \
	if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...

# Runs every fuzz target for FUZZTIME each.
fuzz:
	@set -e; for pkg in $$($(GO) list ./...); do \
		for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz' || true); do \
			echo "== $$pkg $$f"; \
			$(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg; \
		done; \
	done

clean:
	rm -rf bin
