#!/usr/bin/env bash
# Speed and memory of this checkout next to an earlier revision, on this machine, in one run:
# builds both in release mode (the earlier one in a worktree under the target dir), then runs
# their bench passes interleaved, pinned to one CPU and unpinned, so that the machine's noise
# lands on both alike, and prints `bench_suite compare`'s table for each (exit 1 if a vfslockd
# figure of the pinned passes got worse by more than the tolerance; the unpinned figures swing
# with where the scheduler puts the two ends, and are reported, not judged).
#
# Usage: tests/bench-compare.sh REV [PASSES] [SECTIONS]
#   REV       the earlier revision (a commit, tag or branch)
#   PASSES    interleaved passes per build (default 4)
#   SECTIONS  bench sections (default cycle,many,scale)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
rev=${1:?usage: tests/bench-compare.sh REV [PASSES] [SECTIONS]}
passes=${2:-4}
sections=${3:-cycle,many,scale}

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
work="$target_dir/bench-compare"
old_tree="$work/tree-$(git rev-parse --short "$rev")"
mkdir -p "$work"
if [[ ! -d "$old_tree" ]]; then
    git worktree add --detach "$old_tree" "$rev" >&2
fi
(cd "$old_tree" && CARGO_TARGET_DIR="$work/target-old" \
    cargo build --release --locked --bins -p vfslockd -p vfslock-tests >&2)
cargo build --release --locked --bins -p vfslockd -p vfslock-tests >&2

old_bench="$work/target-old/release/bench_suite"
new_bench="$target_dir/release/bench_suite"
join() { local IFS=,; echo "$*"; }
verdict=0
for mode in pinned unpinned; do
    pin=()
    [[ $mode == pinned ]] && pin=(taskset -c 0)
    old_files=()
    new_files=()
    for ((i = 1; i <= passes; i++)); do
        echo "bench-compare: $mode pass $i of $passes" >&2
        run_old() {
            (cd "$old_tree" && "${pin[@]}" "$old_bench" pass --label "$mode" \
                --out "$work/old-$mode-$i.json" --sections "$sections" >&2)
        }
        run_new() {
            "${pin[@]}" "$new_bench" pass --label "$mode" --out "$work/new-$mode-$i.json" \
                --sections "$sections" >&2
        }
        # Alternate which build goes first: the second of a pair was measured paying for the
        # first's disk writeback (file:// figures 10-35 % worse for whichever ran second).
        if ((i % 2)); then run_old; run_new; else run_new; run_old; fi
        old_files+=("$work/old-$mode-$i.json")
        new_files+=("$work/new-$mode-$i.json")
    done
    echo "### $mode"
    echo
    if ! "$new_bench" compare --old "$(join "${old_files[@]}")" \
        --new "$(join "${new_files[@]}")" && [[ $mode == pinned ]]; then
        verdict=1
    fi
    echo
done
exit "$verdict"
