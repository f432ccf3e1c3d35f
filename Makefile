# Twinflow: a stateful-functions platform for digital twins.
# Run `make help` to list the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
NPM ?= npm
BIN := $(CURDIR)/bin
# The npm packages of the TypeScript SDK and example, installed by npm ci
# from package-lock.json; again whenever the lock file changes.
NODE_MODULES := node_modules/.package-lock.json
# Which rack twin `make run` uses: go, or ts for the TypeScript one.
RACKFUN ?= go

.PHONY: help
help: ## Describe the useful make targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "%-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the twinflow binaries into ./bin
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/datacenter/cmd/... ./examples/datacenter/simulator

$(NODE_MODULES): package-lock.json
	$(NPM) ci --no-audit --no-fund

.PHONY: ts
ts: $(NODE_MODULES) ## Install the npm packages if needed and build the TypeScript SDK (sdk-ts) and rack twin
	$(NPM) run --silent build

.PHONY: test
test: ts ## Run all tests with the race detector, the TypeScript tests, and the conformance suite against the Go and TypeScript SDKs
	$(GO) test -race -count=1 -timeout 15m ./...
	$(NPM) test

.PHONY: run
run: build $(if $(filter ts,$(RACKFUN)),ts) ## Run the platform with the data-center example (RACKFUN=ts: the rack twin in TypeScript)
	RACKFUN=$(RACKFUN) ./deploy/run-example.sh

.PHONY: bench
bench: ## Run the micro-benchmarks, then the end-to-end benchmark (under 10 minutes; see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/shard/ ./runtime/state/ ./runtime/natsbus/ ./sdk/
	$(GO) test -run '^$$' -bench . -benchtime 50x ./runtime/cluster/
	$(GO) build -o $(BIN)/ ./cmd/twinflow-bench ./internal/bench/cmd/benchfn
	$(BIN)/twinflow-bench -json $(BIN)/benchmarks.json

.PHONY: generate
generate: $(NODE_MODULES) ## Regenerate the protobuf, Connect and TypeScript code from proto/ and examples/datacenter/proto/
	$(GO) tool buf lint
	$(GO) tool buf generate
	$(GO) tool buf generate --template sdk-ts/buf.gen.yaml
	cd examples/datacenter && $(GO) tool buf lint && $(GO) tool buf generate && $(GO) tool buf generate --template ts/buf.gen.yaml

.PHONY: check
check: generate ## gofmt, go vet, and fail when generated code is stale
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$$(git status --porcelain -- proto examples/datacenter/gen sdk-ts/src/gen examples/datacenter/ts/src/gen)" ]; then echo "generated code is stale: run make generate and commit"; git status --porcelain -- proto examples/datacenter/gen sdk-ts/src/gen examples/datacenter/ts/src/gen; exit 1; fi
