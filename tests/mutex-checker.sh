#!/usr/bin/env bash
# The mutual-exclusion checker, long form, on the release binaries: several daemons sharing
# one directory of file:// targets, many workers, random SIGKILLs; prints one summary line
# and exits 0 only if no two holders ever overlapped, fencing tokens strictly increased, no
# late write was rejected, no lease loss was heard late and no lock file was left behind.
#
#   tests/mutex-checker.sh                                   # 2 minutes, 4 daemons × 8 clients
#   tests/mutex-checker.sh --duration 300 --daemons 4 --clients 8 --targets 3
#   tests/mutex-checker.sh --ttl 2 --pause-daemon-every-ms 5000 --pause-daemon-ms 3000
#
# Arguments are passed to `mutex_checker run` after the defaults below (the last value of an
# option wins); `--dir DIR` keeps the records and daemon logs there, `--keep` keeps the
# temporary directory. See `mutex_checker --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --release --bins --locked
bin_dir="${CARGO_TARGET_DIR:-target}/release"
exec env VFSLOCK_BIN_DIR="$bin_dir" "$bin_dir/mutex_checker" run \
    --duration 120 --daemons 4 --clients 8 --targets 3 "$@"
