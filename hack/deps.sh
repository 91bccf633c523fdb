#!/usr/bin/env bash
# Installs the Debian packages the local cluster and the data-plane tests
# need, when they are missing: PostgreSQL 15 (the local cluster's
# postgres:15 image and the data plane's tests), iproute2 (network
# namespaces), util-linux (nsenter, losetup, findmnt), e2fsprogs (the local
# cluster's size-enforced volumes: mkfs.ext4, resize2fs), spin with gcc
# (the protocol's model check, hack/modelcheck.sh) and prometheus (promtool
# for the chart's alerts and dashboard queries, test/chart; the server for
# the end-to-end monitoring test). Everything else is built from Go modules
# by hack/build-tools.sh.
#
#   hack/deps.sh          the packages above
#   hack/deps.sh screenshots  also chromium (make screenshots)
#   hack/deps.sh nodes    also the local cluster's real nodes and their images
#                         (docs/local-cluster.md): containerd, runc, the CNI
#                         plugins, iptables and conntrack (kube-proxy),
#                         buildah and mmdebstrap (hack/images.sh)
set -euo pipefail

missing=()
[[ -x /usr/lib/postgresql/15/bin/postgres ]] || missing+=(postgresql-15 postgresql-client-15)
command -v ip >/dev/null || missing+=(iproute2)
command -v nsenter >/dev/null && command -v losetup >/dev/null || missing+=(util-linux)
command -v mkfs.ext4 >/dev/null && command -v resize2fs >/dev/null || missing+=(e2fsprogs)
command -v spin >/dev/null || missing+=(spin)
command -v gcc >/dev/null || missing+=(gcc)
command -v promtool >/dev/null || missing+=(prometheus)
if [[ "${1:-}" == screenshots ]]; then
	command -v chromium >/dev/null || missing+=(chromium)
fi
if [[ "${1:-}" == nodes ]]; then
	command -v containerd >/dev/null || missing+=(containerd)
	command -v runc >/dev/null || missing+=(runc)
	[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
	command -v iptables >/dev/null || missing+=(iptables)
	command -v conntrack >/dev/null || missing+=(conntrack)
	command -v buildah >/dev/null || missing+=(buildah)
	command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
fi
if [[ ${#missing[@]} -eq 0 ]]; then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "deps: missing ${missing[*]}; install them as root (apt-get install ${missing[*]})" >&2
	exit 1
fi
echo "deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
