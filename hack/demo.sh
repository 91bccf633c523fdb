#!/usr/bin/env bash
# make demo: the local cluster, the operator installed with Helm, and the
# 3-pod sample cluster, ready. Safe to run again.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
bin=$root/bin
export KUBECONFIG=$root/.state/local/kubeconfig
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

if [[ -n "${REAL_NODES:-}" ]]; then
	say "Starting the local cluster (3 real nodes: kubelet, containerd, kube-proxy; CoreDNS)"
	"$bin/localcluster" up --real-nodes
else
	say "Starting the local cluster (3 nodes, processes in network namespace regent-local)"
	"$bin/localcluster" up
fi

# A cluster that had the operator from `kubectl apply -k config/default`:
# Helm adopts its CRD (never deleted: that would delete every ReplicaSet)
# and replaces its Deployment.
crd=replicasets.regent.dev
if "$bin/kubectl" get crd "$crd" >/dev/null 2>&1 &&
	[[ -z $("$bin/kubectl" get crd "$crd" -o jsonpath='{.metadata.annotations.meta\.helm\.sh/release-name}') ]]; then
	say "Letting Helm adopt the existing CRD $crd"
	"$bin/kubectl" label crd "$crd" app.kubernetes.io/managed-by=Helm --overwrite
	"$bin/kubectl" annotate crd "$crd" meta.helm.sh/release-name=regent meta.helm.sh/release-namespace=regent-system --overwrite
fi
"$bin/kubectl" -n regent-system delete deployment regent-manager --ignore-not-found

say "Installing the operator with Helm (image regent:dev: bin/regent, or on real nodes the image built from the Dockerfile)"
"$bin/helm" upgrade --install regent charts/regent --namespace regent-system --create-namespace \
	--set image.tag=dev --wait --timeout 5m

say "Applying the 3-pod sample (config/samples/regent_v1alpha1_replicaset.yaml)"
"$bin/kubectl" apply -f config/samples/regent_v1alpha1_replicaset.yaml
if ! "$bin/kubectl" wait dbrs/pg --for=jsonpath='{.status.phase}'=Healthy --timeout=5m; then
	"$bin/kubectl" describe dbrs/pg | tail -30
	exit 1
fi

say "kubectl get dbrs"
"$bin/kubectl" get dbrs
say "kubectl get pods -L regent.dev/role,regent.dev/epoch"
"$bin/kubectl" get pods -L regent.dev/role,regent.dev/epoch -o wide

cat <<MSG

The cluster is up. In this shell:
  export KUBECONFIG=$KUBECONFIG
  export PATH=$bin:\$PATH

Connect with psql through the service proxy (it follows the leader), over
TLS checked against the cluster's CA (sslmode=verify-full):
  localcluster proxy pg-leader --listen 127.0.0.1:15432 &
  kubectl get configmap pg-ca -o jsonpath='{.data.ca\.crt}' > pg-ca.crt
  psql "\$(kubectl get secret pg-app -o jsonpath='{.data.uri}' | base64 -d)&hostaddr=127.0.0.1&port=15432&sslrootcert=pg-ca.crt"

Watch a failover:
  kubectl get dbrs -w &
  localcluster fault kill default/pg-0 postgres    # or: kubectl delete pod pg-0
  kubectl get pods -L regent.dev/role,regent.dev/epoch

Switch over:  kubectl annotate dbrs/pg regent.dev/switchover-to=pg-1
Logs:         kubectl logs pg-0 -c postgres    # PostgreSQL's own; -c agent for the sidecar
Clean up:     make local-down
MSG
