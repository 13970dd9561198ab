#!/usr/bin/env bash
# The performance suite (issue 7), in one command:
# 1. installs what it compares against when missing: Debian's redis-server (apt; the bench
#    starts its own server on loopback and stops it) and Python's filelock (pip, in a venv);
# 2. builds the release binaries;
# 3. runs every section twice, pinned to one CPU (`taskset -c 0`: the stable figures, used for
#    the targets' ratios) and unpinned;
# 4. writes the report (markdown tables with the targets judged, an SVG chart) and prints it.
#
# Usage: tests/bench.sh [--quick] [--sections cycle,contention,many,scale,renewal,cli]
# --quick is a smoke test (few, short rounds; its results go to the target dir, not to
# tests/bench-results/). Needs root for apt and for raising the open-file hard limit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

quick=()
sections=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --quick) quick=(--quick) ;;
        --sections) sections=(--sections "$2"); shift ;;
        *) echo "usage: tests/bench.sh [--quick] [--sections LIST]" >&2; exit 2 ;;
    esac
    shift
done

target_dir=${CARGO_TARGET_DIR:-$PWD/target}

if ! command -v redis-server >/dev/null; then
    echo "bench: installing redis-server (apt)" >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server >&2 \
        || echo "bench: redis-server could not be installed: Redis figures will be missing" >&2
fi
venv="$target_dir/bench-venv"
if [[ ! -x "$venv/bin/python" ]] || ! "$venv/bin/python" -c 'import filelock' 2>/dev/null; then
    echo "bench: installing filelock (pip, in $venv)" >&2
    if python3 -m venv "$venv" >&2 && "$venv/bin/pip" install -q 'filelock==3.16.1' >&2; then :; else
        echo "bench: filelock could not be installed: its figure will be missing" >&2
    fi
fi
if "$venv/bin/python" -c 'import filelock' 2>/dev/null; then
    export VFSLOCK_BENCH_PYTHON="$venv/bin/python"
fi

cargo build --release --locked --bins -p vfslockd -p vfslock-tests
bin="$target_dir/release"

if [[ ${#quick[@]} -gt 0 ]]; then
    out="$target_dir/bench-quick"
    chart="$out/bench.svg"
else
    out=tests/bench-results
    chart=docs/bench.svg
fi
mkdir -p "$out" "$(dirname "$chart")"

taskset -c 0 "$bin/bench_suite" pass --label pinned --out "$out/pinned.json" \
    "${quick[@]}" "${sections[@]}"
"$bin/bench_suite" pass --label unpinned --out "$out/unpinned.json" "${quick[@]}" "${sections[@]}"
"$bin/bench_suite" report --pinned "$out/pinned.json" --unpinned "$out/unpinned.json" \
    --markdown "$out/results.md" --svg "$chart"
echo "bench: report in $out/results.md, chart in $chart" >&2
