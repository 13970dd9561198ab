#!/usr/bin/env bash
# The chaos run, long form (issue 6 §6), on the release binaries built with the test-only
# fault layer (`--features vfslockd/faults`): 3 daemons × 8 clients loop acquire → guarded
# write → release while random clients and daemons are SIGKILLed and restarted and the
# daemons fail 1% and delay 5% of their store operations; on S3 with --partition, one host
# runs in a network namespace of its own and its link to the store is cut while it holds a
# lock. A calm phase (faults off, no kills, link up) ends the run before the orphan check.
# Prints one summary line; exits 0 only if no overlap, token-order violation, orphan lock
# file or failed partition check was found.
#
#   tests/chaos.sh 300                                  # 5 minutes on file://
#   tests/chaos.sh 300 --store s3 --partition           # 5 minutes on S3 with partitions
#   tests/chaos.sh 600 --error-rate 0.05 --kill-daemon-every-ms 1000
#   tests/chaos.sh 120 --mode mixed                     # shared and exclusive clients
#   tests/chaos.sh 120 --mode slots:3                   # a semaphore of 3
#   tests/chaos.sh 120 --mode set                       # two of three targets at once
#
# The first argument is the duration in seconds (default 300); the others go to
# `mutex_checker chaos` after it (see `mutex_checker --help`; `--dir DIR` keeps the records
# and the daemon logs there). --partition needs root and iproute2, and the moto venv that
# tests/servers/start.sh installs (the run starts a moto of its own on the veth address); a
# run on S3 without --partition uses the test servers' moto (start.sh, run/env).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

duration="${1:-300}"
if (($#)); then shift; fi
if [[ -f tests/servers/run/env ]]; then
    # shellcheck source=/dev/null
    . tests/servers/run/env
fi

cargo build --release --bins --locked --features vfslockd/faults
bin_dir="${CARGO_TARGET_DIR:-target}/release"
exec env VFSLOCK_BIN_DIR="$bin_dir" "$bin_dir/mutex_checker" chaos --duration "$duration" "$@"
