# Twinflow: a stateful-functions platform for digital twins.
# Run `make help` to list the targets.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

GO ?= go
BIN := $(CURDIR)/bin

.PHONY: help
help: ## Describe the useful make targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "%-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the twinflow binaries into ./bin
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/datacenter/cmd/... ./examples/datacenter/simulator

.PHONY: test
test: ## Run all tests with the race detector
	$(GO) test -race -count=1 -timeout 15m ./...

.PHONY: run
run: build ## Run the platform with the data-center example
	./deploy/run-example.sh

.PHONY: bench
bench: ## Run the micro-benchmarks, then the end-to-end benchmark (under 10 minutes; see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/shard/ ./runtime/state/ ./runtime/natsbus/ ./sdk/
	$(GO) build -o $(BIN)/ ./cmd/twinflow-bench ./internal/bench/cmd/benchfn
	$(BIN)/twinflow-bench -json $(BIN)/benchmarks.json

.PHONY: generate
generate: ## Regenerate the protobuf and Connect code from proto/ and examples/datacenter/proto/
	$(GO) tool buf lint
	$(GO) tool buf generate
	cd examples/datacenter && $(GO) tool buf lint && $(GO) tool buf generate

.PHONY: check
check: generate ## gofmt, go vet, and fail when generated code is stale
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	@if [ -n "$$(git status --porcelain -- proto examples/datacenter/gen)" ]; then echo "generated code is stale: run make generate and commit"; git status --porcelain -- proto examples/datacenter/gen; exit 1; fi
