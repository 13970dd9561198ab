#!/usr/bin/env bash
# The mutual-exclusion checker, long form, on the release binaries: several daemons sharing
# one directory of file:// targets (or one prefix in a bucket of a test object store), many
# workers, random SIGKILLs; prints one summary line and exits 0 only if no two holders ever
# overlapped, fencing tokens strictly increased, no late write was rejected, no lease loss was
# heard late and no lock file (or lock object) was left behind (with --mode: no exclusive
# section overlapped another, no semaphore had more than N holders).
#
#   tests/mutex-checker.sh                                   # 2 minutes, 4 daemons × 8 clients
#   tests/mutex-checker.sh --duration 300 --daemons 4 --clients 8 --targets 3
#   tests/mutex-checker.sh --ttl 2 --pause-daemon-every-ms 5000 --pause-daemon-ms 3000
#
# On an object store (S3 on moto, GCS on cloudbox, Azure Blob on Azurite): start the test
# servers first (tests/servers/start.sh; this script reads their tests/servers/run/env). The
# targets are s3://<bucket>/mutex-checker-<time>-<pid>/t0…; the servers are slow (moto runs
# one request at a time), so ask for fewer daemons and workers than on file://:
#
#   tests/mutex-checker.sh --store s3 --daemons 2 --clients 4 --targets 2 --hold-ms 5
#   tests/mutex-checker.sh --store gcs --duration 60 --daemons 3 --clients 3
#   tests/mutex-checker.sh --store azblob --duration 60 --daemons 3 --clients 3
#   tests/mutex-checker.sh --store s3 --daemons 2 --clients 3 --faults 0.2
#
# On SFTP (OpenSSH) the targets are files directly in the server's root,
# <root>/mutex-checker-<time>-<pid>-t0…, and the daemons run create-only: no fencing tokens
# (the workers skip the guarded write, token order is not checked, the token columns stay 0)
# and no stale steals (the TTL defaults to 10 s there; --pause-daemon-* is refused):
#
#   tests/mutex-checker.sh --store sftp --duration 60 --daemons 2 --clients 3 --ttl 10
#
# `--faults RATE` makes each daemon apply that share of its object-store writes and then
# report them failed ([faults] write-then-fail); it needs the `faults` feature, which this
# script then builds in. The summary line ends with `store=<name>` (and `injected=<n>`, the
# daemons' ambiguous writes, with --faults).
#
# Lock modes (issue 15): `--mode mixed` makes each acquisition shared with probability
# `--shared-share` (default 0.7), else exclusive: no exclusive section may overlap any other,
# and the summary adds how often shared ones did (`shared_overlaps`); `--mode slots:N` makes
# every acquisition take one of N slots: never more than N sections of a target at once (the
# summary adds `max_concurrent`). Shared and slot holders do a guarded read instead of the
# write (`rejected_reads`). `--mode set` takes two of three targets at once (`lock_all`, random
# order): no two sections of a target overlap, and no set's wait times out (`set_sections`,
# `wait_timeouts`, `longest_wait_ms`). Not on SFTP (no compare-and-swap, so no shared modes):
#
#   tests/mutex-checker.sh --duration 60 --daemons 4 --clients 6 --mode mixed
#   tests/mutex-checker.sh --duration 60 --daemons 4 --clients 6 --mode slots:3
#   tests/mutex-checker.sh --duration 60 --daemons 4 --clients 6 --mode set
#   tests/mutex-checker.sh --store s3 --duration 60 --daemons 2 --clients 4 --targets 2 --mode mixed
#
# The chaos run (daemon kills, store faults, a network partition) has a script of its own:
# tests/chaos.sh.
#
# Arguments are passed to `mutex_checker run` after the defaults below (the last value of an
# option wins); `--dir DIR` keeps the records and daemon logs there, `--keep` keeps the
# temporary directory (and the run's objects). See `mutex_checker --help`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

features=()
for arg in "$@"; do
    case "$arg" in
        --faults | --faults=*) features=(--features vfslockd/faults) ;;
    esac
done
if [[ -f tests/servers/run/env ]]; then
    # shellcheck source=/dev/null
    . tests/servers/run/env
fi

cargo build --release --bins --locked "${features[@]}"
bin_dir="${CARGO_TARGET_DIR:-target}/release"
exec env VFSLOCK_BIN_DIR="$bin_dir" "$bin_dir/mutex_checker" run \
    --duration 120 --daemons 4 --clients 8 --targets 3 "$@"
