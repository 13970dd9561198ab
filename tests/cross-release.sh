#!/usr/bin/env bash
# A daemon of an earlier release and this checkout's daemon sharing one store: both serve the
# same file:// directory (each its own socket, host id and state), and every lock taken through
# one is seen as held through the other, both ways, and freed for the other at release, with a
# fencing token that keeps increasing across the two. The earlier release is built as
# tests/bench-compare.sh builds it (a worktree and target dir under target/bench-compare).
#
# Usage: tests/cross-release.sh REV
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev=${1:?usage: tests/cross-release.sh REV}

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
work="$target_dir/bench-compare"
old_tree="$work/tree-$(git rev-parse --short "$rev")"
mkdir -p "$work"
[[ -d "$old_tree" ]] || git worktree add --detach "$old_tree" "$rev" >&2
(cd "$old_tree" && CARGO_TARGET_DIR="$work/target-old" \
    cargo build --release --locked --bins -p vfslockd >&2)
cargo build --release --locked --bins -p vfslockd >&2
old="$work/target-old/release"
new="$target_dir/release"

dir=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
mkdir -p "$dir/data"
for side in old new; do
    bin=$old
    [[ $side == new ]] && bin=$new
    "$bin/vfslockd" --socket "$dir/$side.sock" --state-dir "$dir/$side-state" \
        --host-id "host-$side" >"$dir/$side.log" 2>&1 &
    pids+=($!)
done
for side in old new; do
    for _ in $(seq 100); do [[ -S "$dir/$side.sock" ]] && break; sleep 0.05; done
done

failures=0
check() { # WHAT EXPECTED ACTUAL
    if [[ $2 == "$3" ]]; then echo "ok: $1"; else echo "FAILED: $1 (expected $2, got $3)"; failures=$((failures + 1)); fi
}
ctl() { local side=$1; shift; local bin=$old; [[ $side == new ]] && bin=$new; "$bin/vfslockctl" --socket "$dir/$side.sock" "$@"; }

target="$dir/data/shared.csv"
for holder in old new; do
    other=new
    [[ $holder == new ]] && other=old
    # The holder keeps the lock while the other side tries it and reads it.
    ctl "$holder" run "$target" -- sleep 3 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$target.lock" ]] && break; sleep 0.05; done
    set +e
    ctl "$other" run -n "$target" -- true
    code=$?
    shown=$(ctl "$other" show "$target")
    set -e
    check "held through the $holder daemon, refused through the $other" 1 "$code"
    check "the $other daemon shows the $holder daemon's holder" yes \
        "$(grep -q "host-$holder" <<<"$shown" && echo yes || echo no)"
    token=$(grep -o '"token": [0-9]*' "$target.lock" | grep -o '[0-9]*$')
    wait "$runner"
    check "released by the $holder daemon" no "$([[ -e "$target.lock" ]] && echo yes || echo no)"
    # The other side takes it now, with a larger fencing token.
    ctl "$other" run -n "$target" -- sh -c "grep -o '\"token\": [0-9]*' '$target.lock'" \
        >"$dir/token"
    check "taken through the $other daemon after the release" 0 "$?"
    later=$(grep -o '[0-9]*$' "$dir/token")
    check "fencing token increases across the two ($token < $later)" yes \
        "$([[ $later -gt $token ]] && echo yes || echo no)"
done
# Lock modes (issue 15): a shared lock file of the new daemon (a holder list under the Go
# library's top-level fields) is held for an old daemon, which reads only those fields, and
# an old daemon's exclusive lock keeps a new shared request out. Skipped when REV predates
# lock modes on both sides (its vfslockctl has no -s).
if ctl new run --help | grep -q -- '--shared'; then
    ctl new run -s "$target" -- sleep 3 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$target.lock" ]] && break; sleep 0.05; done
    set +e
    ctl old run -n "$target" -- true
    code=$?
    shown=$(ctl old show "$target")
    set -e
    check "a shared lock of the new daemon is held for the old one" 1 "$code"
    check "the old daemon shows the shared holder" yes \
        "$(grep -q "host-new" <<<"$shown" && echo yes || echo no)"
    wait "$runner"
    check "released by the new daemon" no "$([[ -e "$target.lock" ]] && echo yes || echo no)"
    ctl old run "$target" -- sleep 3 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$target.lock" ]] && break; sleep 0.05; done
    set +e
    ctl new run -s -n "$target" -- true
    code=$?
    set -e
    check "an old daemon's exclusive lock keeps a new shared request out" 1 "$code"
    wait "$runner"
fi
# Clients across releases: the earlier release's vfslockctl against this checkout's daemon,
# and this checkout's against the earlier daemon (exclusive locks, show, list; a lock mode is
# refused by the older daemon's side with a message naming its protocol).
cross() { local bin=$1 side=$2; shift 2; "$bin/vfslockctl" --socket "$dir/$side.sock" "$@"; }
set +e
cross "$old" new run -n "$target" -- true
check "an old client locks through the new daemon" 0 "$?"
cross "$old" new list >/dev/null
check "an old client lists through the new daemon" 0 "$?"
cross "$new" old run -n "$target" -- true
check "a new client locks through the old daemon" 0 "$?"
cross "$new" old show "$target" >/dev/null
check "a new client's show falls back on the old daemon (not locked: 1)" 1 "$?"
refusal=$(cross "$new" old run -s -n "$target" -- true 2>&1)
code=$?
set -e
if ctl new run --help | grep -q -- '--shared' && ! ctl old run --help | grep -q -- '--shared'; then
    check "a shared lock through the old daemon is refused" 70 "$code"
    check "the refusal names the daemon's protocol" yes \
        "$(grep -q "speaks protocol" <<<"$refusal" && echo yes || echo no)"
fi
# Several targets and max-hold (issue 16): an older daemon refuses both through a new client,
# naming its protocol; a new daemon's set never takes part of a set one of whose targets an old
# daemon holds.
if ctl new run --help | grep -q -- '--max-hold' && ! ctl old run --help | grep -q -- '--max-hold'; then
    second="$dir/data/second.csv"
    set +e
    refusal=$(cross "$new" old run -n "$target" "$second" -- true 2>&1)
    code=$?
    set -e
    check "a set through the old daemon is refused" 70 "$code"
    check "the set's refusal names the daemon's protocol" yes \
        "$(grep -q "speaks protocol" <<<"$refusal" && echo yes || echo no)"
    set +e
    refusal=$(cross "$new" old run -n --max-hold 1m "$target" -- true 2>&1)
    code=$?
    set -e
    check "a max-hold through the old daemon is refused" 70 "$code"
    check "the max-hold's refusal names the daemon's protocol" yes \
        "$(grep -q "speaks protocol" <<<"$refusal" && echo yes || echo no)"
    ctl old run "$second" -- sleep 3 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$second.lock" ]] && break; sleep 0.05; done
    set +e
    ctl new run -n "$target" "$second" -- true
    code=$?
    set -e
    check "a new daemon's set is refused while the old daemon holds one of it" 1 "$code"
    check "and leaves its other target free" no "$([[ -e "$target.lock" ]] && echo yes || echo no)"
    wait "$runner"
    ctl new run -n "$target" "$second" -- true
    check "the set is taken through the new daemon once the old one released" 0 "$?"
fi
# Waiting for a release (issue 19): this checkout's vfslockctl waits through an older daemon
# (which has no such request: the client looks at the lock file with backoff), and this
# checkout's daemon waits for a lock the older daemon holds (re-checked like a waiter's).
if ctl new wait --help >/dev/null 2>&1 && ! ctl old wait --help >/dev/null 2>&1; then
    ctl old run "$target" -- sleep 2 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$target.lock" ]] && break; sleep 0.05; done
    set +e
    cross "$new" old wait -w 0.3 "$target"
    check "a wait through the old daemon runs out while it holds the lock" 1 "$?"
    cross "$new" old wait -w 20 "$target"
    check "a wait through the old daemon ends at the release" 0 "$?"
    check "and the lock is released then" no "$([[ -e "$target.lock" ]] && echo yes || echo no)"
    set -e
    wait "$runner"
    ctl old run "$target" -- sleep 2 &
    runner=$!
    for _ in $(seq 100); do [[ -e "$target.lock" ]] && break; sleep 0.05; done
    set +e
    ctl new wait -w 20 "$target"
    check "the new daemon waits for the old daemon's release" 0 "$?"
    check "and the lock is released then" no "$([[ -e "$target.lock" ]] && echo yes || echo no)"
    set -e
    wait "$runner"
fi
echo "$failures failed"
[[ $failures -eq 0 ]]
