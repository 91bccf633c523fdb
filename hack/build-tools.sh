#!/usr/bin/env bash
# Builds pinned tools from Go modules into bin/, skipping any tool already built
# at the pinned version. No binary is downloaded: everything comes from the Go
# module proxy and is compiled here.
#
#   hack/build-tools.sh [tool ...]     (default: the tools envtest needs)
#
# Tools: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl
#        kubelet kube-proxy coredns (the real nodes of the local cluster)
#        controller-gen golangci-lint helm versitygw
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/versions.env
source "$root/hack/tools/versions.env"
bin="$root/bin"
stamps="$bin/.versions"
mkdir -p "$bin" "$stamps"
export GOBIN="$bin" GOFLAGS="${GOFLAGS:-} -mod=mod"
unset GOFLAGS_EXTRA

log() { printf '[build-tools] %s\n' "$*" >&2; }

# up_to_date TOOL VERSION: the binary exists and was built at VERSION.
up_to_date() {
	[[ -x "$bin/$1" && -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" ]]
}

stamp() { printf '%s\n' "$2" >"$stamps/$1"; }

# require_pin DIR MODULE VERSION: the wrapper module requires exactly VERSION.
require_pin() {
	local have
	have=$(cd "$root/hack/tools/$1" && go list -m -f '{{.Version}}' "$2")
	if [[ "$have" != "$3" ]]; then
		log "hack/tools/$1/go.mod pins $2 $have but versions.env says $3; run hack/tools/pin.sh"
		exit 1
	fi
}

build_kubernetes() {
	local tool=$1 v=$KUBERNETES_VERSION
	up_to_date "$tool" "$v" && return 0
	require_pin kubernetes k8s.io/kubernetes "$v"
	local minor=${v#v1.}; minor=${minor%%.*}
	local ldflags=""
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		ldflags+=" -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
		ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
	done
	log "building $tool $v (the first build takes about ten minutes)"
	(cd "$root/hack/tools/kubernetes" &&
		go build -ldflags "$ldflags" -o "$bin/$tool" "k8s.io/kubernetes/cmd/$tool")
	stamp "$tool" "$v"
}

build_etcd() {
	up_to_date etcd "$ETCD_VERSION" && return 0
	require_pin etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
	log "building etcd $ETCD_VERSION"
	(cd "$root/hack/tools/etcd" && go build -o "$bin/etcd" go.etcd.io/etcd/server/v3)
	stamp etcd "$ETCD_VERSION"
}

# go_install TOOL PACKAGE VERSION: tools whose modules build with plain go install.
go_install() {
	up_to_date "$1" "$3" && return 0
	log "building $1 $3"
	GOFLAGS= go install "$2@$3"
	stamp "$1" "$3"
}

build() {
	case $1 in
	etcd) build_etcd ;;
	kube-apiserver | kube-controller-manager | kube-scheduler | kubectl | kubelet | kube-proxy) build_kubernetes "$1" ;;
	controller-gen) go_install controller-gen sigs.k8s.io/controller-tools/cmd/controller-gen "$CONTROLLER_GEN_VERSION" ;;
	golangci-lint) go_install golangci-lint github.com/golangci/golangci-lint/v2/cmd/golangci-lint "$GOLANGCI_LINT_VERSION" ;;
	helm) go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
	versitygw) go_install versitygw github.com/versity/versitygw/cmd/versitygw "$VERSITYGW_VERSION" ;;
	# Static: it runs in an image with no C library.
	coredns) CGO_ENABLED=0 go_install coredns github.com/coredns/coredns "$COREDNS_VERSION" ;;
	*) log "unknown tool $1"; exit 2 ;;
	esac
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(etcd kube-apiserver)
for t in "${tools[@]}"; do build "$t"; done
