#!/usr/bin/env bash
# Checks the leadership protocol's model (model/leadership.pml, see
# model/README.md) with spin: the protocol as built must hold its
# invariants (no error in an exhaustive search); every weakened variant must
# break one (spin finds a counterexample, whose trail is printed as a story).
# Prints one line per variant and a summary table; exits non-zero on any
# unexpected outcome. Works in a temporary directory: no pan files in the
# repository. Installs spin and gcc when missing (hack/deps.sh).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$root/hack/deps.sh"
model="$root/model/leadership.pml"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# name | expected (pass: no error; fail: a counterexample) | spin -D flags |
# search (dfs: exhaustive, states collapsed; bfs: stops at the shortest
# counterexample, whose trail reads best)
variants=(
	"built-async|pass|-DPROP_B -DTMAX=10|dfs"
	"built-sync|pass|-DSYNC -DPROP_B|dfs"
	"sync-c-any-leader-clock|pass|-DSYNC -DNO_RELAY_LEASE_CHECK -DONLY_C|dfs"
	"built-async-failsafe|pass|-DFAILSAFE -DPROP_B -DTMAX=7|dfs"
	"built-sync-failsafe|pass|-DSYNC -DFAILSAFE -DPROP_B -DTMAX=6 -DMAXC=1|dfs"
	"witness-failsafe|fail|-DWITNESS_FAILSAFE|bfs"
	"CONFIRM_WHEN_REVOKED|fail|-DCONFIRM_WHEN_REVOKED|bfs"
	"NO_FAILSAFE_WAIT|fail|-DNO_FAILSAFE_WAIT|bfs"
	"witness-async|fail|-DWITNESS|bfs"
	"witness-sync|fail|-DSYNC -DWITNESS|bfs"
	"NO_GATE|fail|-DNO_GATE|bfs"
	"NO_RELAY_LEASE_CHECK|fail|-DSYNC -DNO_RELAY_LEASE_CHECK|bfs"
	"NO_SEAL|fail|-DSYNC -DNO_SEAL|bfs"
	"NO_SEAL-any-leader-clock|fail|-DSYNC -DNO_SEAL -DFRESH_STATUS -DNO_RELAY_LEASE_CHECK -DONLY_C|bfs"
	"NO_OCC_SEAL|fail|-DNO_OCC_SEAL|bfs"
	"COUNT_SILENT|fail|-DSYNC -DCOUNT_SILENT|bfs"
	"ACK_AT_CLIENT|fail|-DACK_AT_CLIENT|bfs"
)

describe() {
	case $1 in
	pass) echo "no error" ;;
	fail) echo "counterexample" ;;
	esac
}

echo "modelcheck: $(spin -V | head -1); $model"
echo "(time: spin, gcc and the search, wall clock; states: stored; dfs searches are exhaustive, bfs ones"
echo " stop at the shortest counterexample. In a trail, an actor whose steps do not appear for a while"
echo " was frozen or slow meanwhile: a frozen pod, a stuck goroutine, a request delayed in the network.)"
summary=()
unexpected=0
for v in "${variants[@]}"; do
	IFS='|' read -r name expect flags search <<<"$v"
	dir="$work/$name"
	mkdir -p "$dir"
	cp "$model" "$dir/"
	start=$EPOCHREALTIME
	# shellcheck disable=SC2086 # flags are words
	(
		cd "$dir"
		spin -a $flags leadership.pml >spin.out 2>&1
		case $search in
		dfs) gcc -O2 -DSAFETY -DCOLLAPSE -o pan pan.c ;;
		bfs) gcc -O2 -DSAFETY -DBFS -o pan pan.c ;;
		esac
		# -E: a run that stops when the clock stops is no deadlock.
		./pan -E -m10000 -w24 >pan.out 2>&1 || true
	) || {
		echo "modelcheck: $name: spin or gcc failed:" >&2
		cat "$dir/spin.out" >&2 || true
		exit 1
	}
	secs=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1fs", b - a }')
	out="$dir/pan.out"
	errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | tail -1)
	states=$(awk '/states, stored/ {print $1}' "$out" | tail -1)
	got=
	if [[ -z $errors ]]; then
		got="no result"
	elif [[ $errors -eq 0 ]]; then
		got=pass
		if grep -q -e 'max search depth too small' -e 'out of memory' -e 'hash table full' "$out"; then
			got="incomplete"
		fi
	else
		got=fail
	fi
	line=$(printf '%-26s %-15s %-15s %10s %7s  %s' "$name" "$(describe "$expect")" \
		"$( [[ $got == pass || $got == fail ]] && describe "$got" || echo "$got")" "${states:-?}" "$secs" "$flags")
	echo "$line"
	summary+=("$line")
	if [[ $got != "$expect" ]]; then
		unexpected=1
		echo "  UNEXPECTED: expected $(describe "$expect"); pan said:"
		sed 's/^/    /' "$out" | head -40
	fi
	if [[ $got == fail ]]; then
		# The trail, as the model's printf story (steps of processes that
		# do not appear were not taken: those processes were frozen or
		# slow meanwhile), ending with the violated assertion.
		what=$(grep -m1 'assertion violated' "$out" | sed 's/^pan:1: //; s/ (at depth.*//')
		echo "  counterexample: $what"
		# shellcheck disable=SC2086
		(cd "$dir" && spin -T -t $flags leadership.pml 2>&1) |
			grep -E '^(t=|VIOLATION)' | tail -30 | sed 's/^/    /'
	fi
done

echo
printf '%-26s %-15s %-15s %10s %7s  %s\n' variant expected got states time "spin flags"
printf '%s\n' "${summary[@]}"
if [[ $unexpected -ne 0 ]]; then
	echo "modelcheck: some variants did not give the expected outcome" >&2
	exit 1
fi
echo "modelcheck: as expected: the protocol as built holds (a), (b) and (c); every weakened variant breaks one"
