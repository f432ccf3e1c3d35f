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

# The Go modules: the runtime, CLI and examples (.), the generated protocol
# code (proto) and the SDK (sdk), joined by go.work; and the code generators
# (tools) and the checks of the deployment files (deploy/validate), run
# outside the workspace so that their dependencies raise no version the
# others build with. ./... stops at a nested module, so the
# commands below name every module's packages.
PKGS := ./... ./proto/... ./sdk/...
MODULES := . proto sdk tools deploy/validate
TOOL := GOWORK=off GOFLAGS=-modfile=$(CURDIR)/tools/go.mod $(GO) tool

.PHONY: help
help: ## Describe the useful make targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "%-12s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build the twinflow binaries, the example's and the launcher into ./bin
	$(GO) build -o $(BIN)/ ./cmd/... ./examples/datacenter/cmd/... ./examples/datacenter/simulator ./deploy/run-example

$(NODE_MODULES): package-lock.json
	$(NPM) ci --no-audit --no-fund

.PHONY: ts
ts: $(NODE_MODULES) ## Install the npm packages if needed and build the TypeScript SDK (sdk-ts) and rack twin
	$(NPM) run --silent build

.PHONY: test
test: ts ## Run all tests with the race detector, the TypeScript tests, and the conformance suite against the Go and TypeScript SDKs
	$(GO) test -race -count=1 -timeout 15m $(PKGS)
	@echo "the SDK again, outside the workspace: with the versions its own go.mod asks for, as a function author builds it"
	cd sdk && GOWORK=off $(GO) test -race -count=1 ./...
	@echo "the deployment files (deploy/kubernetes, deploy/docker), by a module of their own that brings the Kubernetes and BuildKit libraries"
	cd deploy/validate && GOWORK=off $(GO) test -race -count=1 ./...
	$(NPM) test

# What make run runs, as bin/NAME:PACKAGE.
RUN_BINARIES := twinflow:./cmd/twinflow datacenter-functions:./examples/datacenter/cmd/datacenter-functions \
	simulator:./examples/datacenter/simulator run-example:./deploy/run-example

.PHONY: run
run: $(if $(filter ts,$(RACKFUN)),ts) ## Run the platform with the data-center example; Ctrl-C stops it (RACKFUN=ts: the rack twin in TypeScript; settings: see deploy/run-example)
	@echo "building what make run runs into bin/ (the first build compiles the NATS server and Pebble: a few minutes)"
	@for b in $(RUN_BINARIES); do echo "  go build -o bin/$${b%%:*} $${b#*:}"; $(GO) build -o $(BIN)/$${b%%:*} $${b#*:}; done
	@RACKFUN=$(RACKFUN) exec $(BIN)/run-example

.PHONY: bench
bench: ## Run the micro-benchmarks, the cluster benchmarks, then the end-to-end benchmark and the workloads W1-W3 (20-30 minutes; see docs/benchmarks.md)
	$(GO) test -run '^$$' -bench . -benchmem ./runtime/shard/ ./runtime/state/ ./runtime/natsbus/ ./sdk/
	$(GO) test -run '^$$' -bench . -benchtime 50x ./runtime/cluster/
	$(GO) test -run '^$$' -bench 'ClusterThroughput|MoveKeyGroup' -benchtime 1x -timeout 30m ./internal/crashtest/
	$(GO) test -run 'TestClusterCrashRecovery|TestClusterRescale' -count 1 -v -timeout 30m ./internal/crashtest/ -args -cluster.long
	$(GO) build -o $(BIN)/ ./cmd/twinflow-bench ./internal/bench/cmd/benchfn
	$(BIN)/twinflow-bench -json $(BIN)/benchmarks.json

.PHONY: generate
generate: $(NODE_MODULES) ## Regenerate the protobuf, Connect and TypeScript code from proto/ and examples/datacenter/proto/, and the example's descriptor set
	$(TOOL) buf lint
	$(TOOL) buf generate
	$(TOOL) buf generate --template sdk-ts/buf.gen.yaml
	cd examples/datacenter && $(TOOL) buf lint && $(TOOL) buf generate && $(TOOL) buf generate --template ts/buf.gen.yaml
	@echo "the example's descriptor set, which its module specs list (after buf generate, which empties gen/)"
	cd examples/datacenter && $(TOOL) buf build -o gen/datacenter.binpb

.PHONY: check
check: generate ## gofmt, go vet, tidy go.mod files, and fail when generated code is stale
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	cd deploy/validate && GOWORK=off $(GO) vet ./...
	@for m in $(MODULES); do (cd $$m && GOWORK=off $(GO) mod tidy -diff) || { echo "$$m/go.mod is not tidy: run cd $$m && go mod tidy"; exit 1; }; done
	@if [ -n "$$(git status --porcelain -- proto examples/datacenter/gen sdk-ts/src/gen examples/datacenter/ts/src/gen)" ]; then echo "generated code is stale: run make generate and commit"; git status --porcelain -- proto examples/datacenter/gen sdk-ts/src/gen examples/datacenter/ts/src/gen; exit 1; fi
