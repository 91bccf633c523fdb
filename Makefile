# Regent. `make help` lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

BIN := $(CURDIR)/bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/regent-dev/regent/internal/version.Version=$(VERSION)
# Tools envtest needs (a real etcd, kube-apiserver and, for garbage collection
# and the StatefulSet controller, kube-controller-manager).
ENVTEST_TOOLS := etcd kube-apiserver kube-controller-manager
GO_TEST_FLAGS ?= -count=1

##@ General

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: tools-codegen ## Generate the CRD and RBAC manifests from the Go markers.
	$(BIN)/controller-gen crd rbac:roleName=manager-role paths=./api/... paths=./controllers/... \
		output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	@# The Helm chart carries the same CRD and operator rules.
	cp config/crd/bases/regent.dev_replicasets.yaml charts/regent/files/crd.yaml
	cp config/crd/bases/regent.dev_backups.yaml charts/regent/files/crd-backups.yaml
	cp config/rbac/role.yaml charts/regent/files/manager-role.yaml
	cp config/policy/agent-lease-rights.yaml charts/regent/files/agent-lease-rights.yaml

.PHONY: generate
generate: tools-codegen ## Generate the API's deepcopy functions.
	$(BIN)/controller-gen object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: verify
verify: tools-codegen ## Fail if generated files, go.mod or formatting differ from what the sources produce.
	hack/verify.sh

.PHONY: fmt
fmt: ## Format the Go sources.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: tools-lint ## Run golangci-lint with the repository's configuration.
	$(BIN)/golangci-lint run ./...

##@ Build

.PHONY: build
build: ## Build the regent binary and the kubectl plugin (kubectl-regent) into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/regent .
	CGO_ENABLED=0 go build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/kubectl-regent ./cmd/kubectl-regent

##@ Local cluster (Kubernetes made of local processes; no Docker)

LOCAL_TOOLS := etcd kube-apiserver kube-controller-manager kube-scheduler kubectl helm versitygw

# REAL_NODES=1 (make demo, make local-up): real kubelets over containerd,
# kube-proxy and CoreDNS, with the images of make images.
LOCAL_UP_DEPS := build tools-local $(if $(REAL_NODES),images)

.PHONY: demo
demo: $(LOCAL_UP_DEPS) ## The README's main command: local cluster, operator (Helm), a ready 3-pod cluster; REAL_NODES=1 for real kubelets.
	REAL_NODES=$(REAL_NODES) hack/demo.sh

.PHONY: e2e
e2e: $(LOCAL_UP_DEPS) ## The end-to-end suite on a local cluster of its own (root): helm, kubectl, faults; REAL_NODES=1 on real kubelets.
	REGENT_REAL_NODES=$(if $(REAL_NODES),1,) KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 60m ./test/e2e

# The end-to-end tests `make test` runs on real nodes too, after the whole
# suite on the process kubelet (all of them: `make e2e REAL_NODES=1`).
REAL_NODE_TESTS := TestUserStory|TestRealNodes|TestRecreated|TestKubectlApply|TestALeaderCutOff|TestALeaderOnANodeThatStopsReporting|TestThePluginOperatesALiveCluster|TestPrometheusSees

.PHONY: realnodes
realnodes: build tools-local images ## The end-to-end tests of `make test` on real nodes (kubelet, containerd, kube-proxy, CoreDNS), a local cluster of their own (root).
	REGENT_REAL_NODES=1 KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 45m -run '$(REAL_NODE_TESTS)' ./test/e2e

.PHONY: soak screenshots
soak: build tools-local ## Random faults for 10 min per mode (Async, Sync), every history checked; REGENT_FAULT_SOAK=<duration>, REGENT_SEED=<n> (root).
	REGENT_FAULT_SOAK=$${REGENT_FAULT_SOAK:-10m} KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 60m \
		-run TestRandomFaults ./test/e2e

screenshots: build tools-local ## Prometheus's graphs of a failover on the local cluster, by headless Chromium, into docs/images/ (root).
	hack/deps.sh screenshots
	mkdir -p docs/images
	REGENT_SCREENSHOTS=$(CURDIR)/docs/images KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 20m \
		-run TestPrometheusSees ./test/e2e

# The real nodes' tools and images (docs/local-cluster.md, "Real nodes").
NODE_TOOLS := kubelet kube-proxy coredns

.PHONY: images
images: ## Build the images of the real nodes here (regent from the Dockerfile, postgres:15, pause, CoreDNS) into bin/images/ (root).
	hack/deps.sh nodes
	hack/build-tools.sh $(NODE_TOOLS)
	VERSION=$(VERSION) hack/images.sh

.PHONY: local-up
local-up: $(LOCAL_UP_DEPS) ## Start the local cluster (3 nodes) and wait until it is ready; REAL_NODES=1 for real kubelets.
	$(BIN)/localcluster up $(if $(REAL_NODES),--real-nodes)

.PHONY: local-down
local-down: ## Stop every process of the local cluster.
	@if [ -x $(BIN)/localcluster ]; then $(BIN)/localcluster down; fi

.PHONY: local-status
local-status: ## Show which processes of the local cluster run.
	$(BIN)/localcluster status

##@ Test

.PHONY: model
model: ## Check the protocol model with spin (model/leadership.pml: the protocol as built, then each weakened variant).
	hack/modelcheck.sh

.PHONY: bench
bench: build tools-envtest tools-local ## Run the benchmarks and print their numbers (the commit gate's cost, the relay, restart outages on the local cluster; needs root).
	KUBEBUILDER_ASSETS=$(BIN) go test -run '^$$' -bench . -benchtime 1x -timeout 45m -v \
		$$(grep -rl --include='*_test.go' '^func Benchmark' . | xargs -n1 dirname | sort -u)

# The packages whose tests run real processes (PostgreSQL, a control
# plane, a local cluster); `make unit` leaves them out.
PROCESS_TESTS := -e /test/ -e /replica/instance

.PHONY: unit
unit: ## Run the short tests alone: no control plane, PostgreSQL or local cluster (seconds).
	go test $(GO_TEST_FLAGS) -short $$(go list ./... | grep -v $(PROCESS_TESTS))

.PHONY: test
test: model build tools-envtest tools-local images ## Run every test: protocol model, unit, envtest, data plane, local cluster, chart, end to end, then real nodes (needs root).
	KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) $$(go list ./... | grep -v -e /test/e2e -e /test/dataplane -e /replica/)
	@# Verbose, so that the data plane's measurements (promotion, failover and
	@# fencing times) are printed on success too.
	KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v ./replica/... ./test/dataplane
	@# Alone, so that its timings are not those of a machine busy with other suites.
	KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 45m ./test/e2e
	REGENT_REAL_NODES=1 KUBEBUILDER_ASSETS=$(BIN) go test $(GO_TEST_FLAGS) -v -timeout 45m -run '$(REAL_NODE_TESTS)' ./test/e2e

##@ Tools (pinned in hack/tools/versions.env, built from Go modules into bin/)

.PHONY: tools
tools: ## Build every tool.
	hack/build-tools.sh $(ENVTEST_TOOLS) controller-gen golangci-lint

.PHONY: tools-envtest
tools-envtest:
	hack/build-tools.sh $(ENVTEST_TOOLS)

# The local cluster's binaries; localcluster itself is rebuilt every time, as
# its running kubelets execute it.
.PHONY: tools-local
tools-local:
	hack/deps.sh
	hack/build-tools.sh $(LOCAL_TOOLS)
	go build -o $(BIN)/localcluster ./hack/localcluster

.PHONY: tools-codegen
tools-codegen:
	hack/build-tools.sh controller-gen

.PHONY: tools-lint
tools-lint:
	hack/build-tools.sh golangci-lint
