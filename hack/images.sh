#!/usr/bin/env bash
# Builds the container images of the local cluster's real nodes, here, from
# Debian's packages, Go modules and the project's Dockerfile (no registry is
# reached), and writes each as an OCI archive that a node's containerd
# imports (docs/local-cluster.md, "Real nodes"):
#
#   bin/images/regent.tar     regent:<version> and regent:dev, from ./Dockerfile
#   bin/images/postgres.tar   postgres:15, Debian's PostgreSQL 15, user postgres (uid 999)
#   bin/images/pause.tar      localhost/pause:<kubernetes version>, Kubernetes' pause.c
#   bin/images/coredns.tar    localhost/coredns:<version>, CoreDNS built from its Go module
#
#   hack/images.sh [image ...]        (default: all of them)
#
# The Dockerfile's bases are build arguments: here they are images built
# from a Debian root made by mmdebstrap (the Go toolchain of this machine on
# Debian for the build stage, and a distroless-like static root with the
# nonroot user for the final one). A base already built from the same inputs
# is kept; the images themselves are rebuilt on every call (seconds: the Go
# caches of this machine are mounted into the build).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=tools/versions.env
source "$root/hack/tools/versions.env"
out="$root/bin/images"
work="$root/bin/images/work"
mkdir -p "$out" "$work"
# Debian's release of the images: the one this machine runs.
suite=bookworm
version=${VERSION:-$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo dev)}
go_version=$(go env GOVERSION)

log() { printf '[images] %s\n' "$*" >&2; }

for t in buildah mmdebstrap gcc; do
	command -v "$t" >/dev/null || { log "missing $t: run hack/deps.sh nodes"; exit 1; }
done

# label_of IMAGE: the inputs label of a stored image, empty if none.
label_of() {
	buildah inspect --type image --format '{{index .ImageAnnotations "dev.regent.inputs"}}' "$1" 2>/dev/null || true
}

# debian_root TAR INPUTS... : a minimal Debian root with extra packages, as a
# tarball; INPUTS are mmdebstrap's options.
debian_root() {
	local tar=$1; shift
	log "mmdebstrap $suite $*"
	mmdebstrap --quiet --variant=minbase "$@" "$suite" "$tar"
}

# commit CONTAINER IMAGE INPUTS: commits a working container as IMAGE,
# labelled with the hash of its inputs.
commit() {
	buildah config --annotation "dev.regent.inputs=$3" "$1" >/dev/null
	buildah commit --quiet --rm "$1" "$2" >/dev/null
	log "built $2"
}

# The build stage's base: Debian with this machine's Go toolchain, laid out
# as the golang image has it (GOROOT /usr/local/go, GOPATH /go).
build_go_base() {
	local img=localhost/regent-go:${go_version#go} inputs
	inputs="$suite minbase ca-certificates git $go_version"
	[[ "$(label_of "$img")" == "$inputs" ]] && { echo "$img"; return; }
	debian_root "$work/go-root.tar" --include=ca-certificates,git
	local c
	c=$(buildah from scratch)
	buildah add --quiet "$c" "$work/go-root.tar" / >/dev/null
	buildah add --quiet "$c" "$(go env GOROOT)" /usr/local/go >/dev/null
	buildah config --env PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--env GOPATH=/go --env GOTOOLCHAIN=local --workingdir /go "$c"
	commit "$c" "$img" "$inputs"
	rm -f "$work/go-root.tar"
	echo "$img"
}

# The final stage's base, as distroless/static's nonroot variant: CA
# certificates, time zones, /etc/passwd with root, nobody and nonroot
# (65532), a /tmp, and nothing else: no shell, no package manager.
build_static_base() {
	local img=localhost/regent-static:$suite inputs
	inputs="$suite static ca-certificates tzdata nonroot-65532"
	[[ "$(label_of "$img")" == "$inputs" ]] && { echo "$img"; return; }
	debian_root "$work/static-root.tar" --include=ca-certificates,tzdata
	local dir=$work/static
	rm -rf "$dir" && mkdir -p "$dir/root"
	tar -C "$dir/root" -xf "$work/static-root.tar" ./etc/ssl/certs/ca-certificates.crt ./usr/share/zoneinfo
	mkdir -p "$dir/root/tmp" "$dir/root/home/nonroot" "$dir/root/etc"
	chmod 1777 "$dir/root/tmp"
	chown 65532:65532 "$dir/root/home/nonroot"
	cat >"$dir/root/etc/passwd" <<-'EOF'
		root:x:0:0:root:/root:/sbin/nologin
		nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
		nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
	EOF
	cat >"$dir/root/etc/group" <<-'EOF'
		root:x:0:
		nobody:x:65534:
		nonroot:x:65532:
	EOF
	local c
	c=$(buildah from scratch)
	buildah add --quiet "$c" "$dir/root" / >/dev/null
	buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --user 65532:65532 --workingdir /home/nonroot "$c"
	commit "$c" "$img" "$inputs"
	rm -rf "$dir" "$work/static-root.tar"
	echo "$img"
}

# save IMAGE ARCHIVE NAME...: the image as an OCI archive whose reference
# is the first NAME; the node imports it under every NAME.
save() {
	local img=$1 archive=$2; shift 2
	rm -f "$archive"
	buildah push --quiet "$img" "oci-archive:$archive:$1" >/dev/null
	printf '%s\n' "$@" >"$archive.names"
	log "wrote $archive ($(du -h "$archive" | cut -f1)): $*"
}

build_regent() {
	local go_base static_base
	go_base=$(build_go_base)
	static_base=$(build_static_base)
	log "building regent:$version from the Dockerfile"
	# Earlier builds' images would fill the disk, one per commit.
	buildah images --format '{{.Name}}:{{.Tag}}' | grep '^localhost/regent:' | xargs -r buildah rmi >/dev/null 2>&1 || true
	# The Go caches of this machine serve the build stage: no module is
	# downloaded twice, and an unchanged package is not compiled again. The
	# modules are fetched here, by the machine's Go with the machine's
	# trust store (a module proxy may present a certificate of a CA only
	# the host trusts), and the build stage fetches nothing (GOPROXY=off).
	(cd "$root" && go mod download)
	buildah bud --quiet --layers=false \
		--build-arg "GO_IMAGE=$go_base" --build-arg "BASE_IMAGE=$static_base" \
		--build-arg "VERSION=$version" --build-arg "GOPROXY=off" \
		--volume "$(go env GOMODCACHE):/go/pkg/mod" \
		--volume "$(go env GOCACHE):/root/.cache/go-build" \
		-t "localhost/regent:$version" -f "$root/Dockerfile" "$root" >/dev/null
	save "localhost/regent:$version" "$out/regent.tar" "docker.io/library/regent:$version" docker.io/library/regent:dev
}

# PostgreSQL 15 as the official image lays it out for what Regent uses: the
# server's tools on PATH, and a postgres user and group of id 999, made
# before the packages so that postgresql-common keeps them.
build_postgres() {
	local img=localhost/postgres:15 inputs
	inputs="$suite postgresql-15 uid-999"
	if [[ "$(label_of "$img")" != "$inputs" ]]; then
		debian_root "$work/postgres-root.tar" --include=postgresql-15,ca-certificates,tzdata,locales \
			--essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/bash" >>"$1/etc/passwd"' \
			--essential-hook='echo "postgres:x:999:" >>"$1/etc/group"' \
			--customize-hook='rm -rf "$1"/var/lib/postgresql/15/main "$1"/etc/postgresql/15/main "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*'
		local c
		c=$(buildah from scratch)
		buildah add --quiet "$c" "$work/postgres-root.tar" / >/dev/null
		buildah config --env PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
			--env LANG=C.UTF-8 --user 999:999 --workingdir /var/lib/postgresql "$c"
		commit "$c" "$img" "$inputs"
		rm -f "$work/postgres-root.tar"
	fi
	save "$img" "$out/postgres.tar" docker.io/library/postgres:15
}

# The pod sandbox's process, from the pause.c of the pinned Kubernetes
# module, static, on an empty root.
build_pause() {
	local img=localhost/pause:$KUBERNETES_VERSION inputs
	inputs="pause.c $KUBERNETES_VERSION"
	if [[ "$(label_of "$img")" != "$inputs" ]]; then
		local src
		src=$(cd "$root/hack/tools/kubernetes" && go mod download k8s.io/kubernetes &&
			go list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
		gcc -Os -Wall -Werror -static -DVERSION="$KUBERNETES_VERSION" -o "$work/pause" "$src"
		local c
		c=$(buildah from scratch)
		buildah add --quiet "$c" "$work/pause" /pause >/dev/null
		buildah config --entrypoint '["/pause"]' --user 65535:65535 "$c"
		commit "$c" "$img" "$inputs"
		rm -f "$work/pause"
	fi
	save "$img" "$out/pause.tar" "$img"
}

# Cluster DNS: CoreDNS at the version the pinned kubeadm deploys, built
# from its Go module, on the static base.
build_coredns() {
	local img=localhost/coredns:$COREDNS_VERSION inputs
	inputs="coredns $COREDNS_VERSION"
	if [[ "$(label_of "$img")" != "$inputs" ]]; then
		"$root/hack/build-tools.sh" coredns
		local static_base c
		static_base=$(build_static_base)
		c=$(buildah from "$static_base")
		buildah add --quiet "$c" "$root/bin/coredns" /coredns >/dev/null
		buildah config --entrypoint '["/coredns"]' "$c"
		commit "$c" "$img" "$inputs"
	fi
	save "$img" "$out/coredns.tar" "$img"
}

images=("$@")
[[ ${#images[@]} -gt 0 ]] || images=(pause coredns postgres regent)
for i in "${images[@]}"; do
	case "$i" in
	regent) build_regent ;;
	postgres) build_postgres ;;
	pause) build_pause ;;
	coredns) build_coredns ;;
	*) log "unknown image $i (regent, postgres, pause, coredns)"; exit 2 ;;
	esac
done
