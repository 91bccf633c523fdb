#!/usr/bin/env bash
# Fails when generated files (CRD, RBAC, deepcopy), go.mod/go.sum or the
# formatting differ from what the sources produce. It compares against the
# working tree as it was, so it works with uncommitted changes too.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

snapshot=$(mktemp -d)
trap 'rm -rf "$snapshot"' EXIT
watched=(api config charts go.mod go.sum)
cp -a "${watched[@]}" "$snapshot/"

make --no-print-directory manifests generate >/dev/null
go mod tidy

drift=0
for p in "${watched[@]}"; do
	if ! diff -r -u "$snapshot/$p" "$root/$p" >"$snapshot/diff" 2>&1; then
		echo "$p drifted from its sources:"
		head -40 "$snapshot/diff" || true
		drift=1
	fi
done
if [[ $drift -ne 0 ]]; then
	echo "Run 'make manifests generate' and 'go mod tidy', then commit the result."
	exit 1
fi

unformatted=$(gofmt -l $(go list -f '{{.Dir}}' ./...))
if [[ -n "$unformatted" ]]; then
	echo "gofmt would change: $unformatted"
	exit 1
fi
echo "verify: generated files, go.mod and formatting are up to date"
