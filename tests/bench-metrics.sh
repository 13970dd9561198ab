#!/usr/bin/env bash
# What recording metrics costs (issue 18): the same release build with `[metrics] enabled =
# false` (the baseline) and with metrics on (the default), in one run.
#
# 1. Instructions the daemon spends per uncontended `mem://` cycle, counted by callgrind over
#    CYCLES cycles after a warm-up (valgrind runs the daemon; `bench_suite drive` is the client).
# 2. The pinned cycle section (`mem://`, `file://` on disk and tmpfs) of `bench_suite pass`,
#    PASSES passes each, interleaved, and `bench_suite compare`'s table of on against off.
#
# Usage: tests/bench-metrics.sh [PASSES] [CYCLES]   (PASSES 0: the instruction counts only)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
passes=${1:-3}
cycles=${2:-2000}
command -v valgrind >/dev/null && command -v callgrind_control >/dev/null \
    || { echo "bench-metrics: needs valgrind (apt-get install valgrind)" >&2; exit 2; }

target_dir=$(realpath -m "${CARGO_TARGET_DIR:-target}")
work="$target_dir/bench-metrics"
rm -rf "$work" && mkdir -p "$work"
cargo build --release --locked --bins -p vfslockd -p vfslock-tests >&2
bin="$target_dir/release"
off=$'[metrics]\nenabled = false'
on=$'[metrics]\nenabled = true'

# Instructions per cycle of a daemon with config $2 ("off" or "on").
instructions() {
    local name=$1 config=$2 dir="$work/callgrind-$1"
    mkdir -p "$dir/state"
    printf '%s\n' "$config" >"$dir/vfslockd.toml"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$dir/callgrind.out" \
        "$bin/vfslockd" --config "$dir/vfslockd.toml" --socket "$dir/vfslockd.sock" \
        --state-dir "$dir/state" 2>"$dir/valgrind.log" &
    local pid=$!
    for _ in $(seq 600); do [[ -S "$dir/vfslockd.sock" ]] && break; sleep 0.1; done
    "$bin/bench_suite" drive --socket "$dir/vfslockd.sock" --target mem:///bench/cg --cycles 200
    callgrind_control -i on "$pid" >/dev/null
    "$bin/bench_suite" drive --socket "$dir/vfslockd.sock" --target mem:///bench/cg --cycles "$cycles"
    callgrind_control -i off "$pid" >/dev/null
    kill -TERM "$pid"
    wait "$pid" || true
    local total
    total=$(awk '/^totals:/ { sum += $2 } END { print sum }' "$dir"/callgrind.out*)
    echo $((total / cycles))
}

echo "bench-metrics: callgrind, $cycles uncontended mem:// cycles each" >&2
base=$(instructions off "$off")
with=$(instructions on "$on")
echo "### Instructions per uncontended mem:// cycle (daemon, callgrind)"
echo
echo "| metrics off | metrics on | on/off |"
echo "|---|---|---|"
awk -v a="$base" -v b="$with" 'BEGIN { printf "| %d | %d | %.3f |\n", a, b, b / a }'
echo

# PASSES 0: instructions only (they do not change with the machine's load).
((passes > 0)) || exit 0
off_files=()
on_files=()
for ((i = 1; i <= passes; i++)); do
    echo "bench-metrics: pinned pass $i of $passes" >&2
    run() {
        VFSLOCK_BENCH_DAEMON_CONFIG="$2" taskset -c 0 "$bin/bench_suite" pass --label pinned \
            --out "$work/$1-$i.json" --sections cycle >&2
    }
    # Alternate which goes first, as bench-compare.sh does: the second of a pair pays for
    # the first's disk writeback.
    if ((i % 2)); then run off "$off"; run on "$on"; else run on "$on"; run off "$off"; fi
    off_files+=("$work/off-$i.json")
    on_files+=("$work/on-$i.json")
done
join() { local IFS=,; echo "$*"; }
echo "### Pinned cycle, metrics on (new) against off (old)"
echo
"$bin/bench_suite" compare --old "$(join "${off_files[@]}")" --new "$(join "${on_files[@]}")"
