#!/usr/bin/env bash
# Rewrites the wrapper modules in hack/tools/{kubernetes,etcd} to the versions
# in versions.env, then tidies them. k8s.io/kubernetes replaces its staging
# modules (k8s.io/api, k8s.io/client-go, ...) with ./staging paths that a
# dependent module cannot follow, so the wrapper pins each of them to the
# matching v0.x.y: the list comes from k8s.io/kubernetes's own go.mod.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"

k8s=$KUBERNETES_VERSION
staging="v0.${k8s#v1.}"
gomod=$(go mod download -json "k8s.io/kubernetes@$k8s" | sed -n 's/.*"GoMod": "\(.*\)",/\1/p')
mapfile -t modules < <(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$gomod")

{
	echo "// Wrapper module that builds pinned Kubernetes binaries from k8s.io/kubernetes."
	echo "// k8s.io/kubernetes replaces its staging modules with ./staging paths, which a"
	echo "// dependent module cannot use, so every staging module is pinned here instead."
	echo "// Regenerate with hack/tools/pin.sh; never edit the versions by hand."
	echo "module github.com/regent-dev/regent/hack/tools/kubernetes"
	echo
	echo "go 1.26"
	echo
	echo "require k8s.io/kubernetes $k8s"
	echo
	echo "replace ("
	for m in "${modules[@]}"; do printf '\t%s => %s %s\n' "$m" "$m" "$staging"; done
	echo ")"
} >"$here/kubernetes/go.mod"
(cd "$here/kubernetes" && go mod tidy)

cat >"$here/etcd/go.mod" <<EOM
// Wrapper module that builds a pinned etcd for the local control plane and envtest.
module github.com/regent-dev/regent/hack/tools/etcd

go 1.26

require go.etcd.io/etcd/server/v3 $ETCD_VERSION
EOM
(cd "$here/etcd" && go mod tidy)
echo "pinned k8s.io/kubernetes $k8s (staging $staging, ${#modules[@]} modules) and etcd $ETCD_VERSION"
