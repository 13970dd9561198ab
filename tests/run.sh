#!/usr/bin/env bash
# The whole test suite, in one command:
# 1. installs (if missing) and starts the real store servers on loopback (moto for S3,
#    Azurite, a GCS emulator that enforces preconditions, OpenSSH for SFTP), and stops them,
#    by PID, when the suite ends (tests/servers/);
# 2. builds the binaries the end-to-end tests start, with the test-only fault-injection layer
#    (the `faults` feature; it acts only where a test's config asks for it);
# 3. runs every unit, integration and doc test of the workspace;
# 4. builds the Debian package from those binaries, checks it and installs it into a scratch
#    root (tests/deb.sh; it installs cargo-deb first if missing).
#
# Uses cargo-nextest when it is installed (each test in its own process), else `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

tests/servers/start.sh
trap 'tests/servers/stop.sh' EXIT
# shellcheck source=/dev/null
. tests/servers/run/env

cargo build --workspace --bins --locked --features vfslockd/faults
cargo test --workspace --doc --locked --features vfslockd/faults
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --failure-output final \
        --features vfslockd/faults
else
    cargo test --workspace --locked --no-fail-fast --lib --bins --tests \
        --features vfslockd/faults
fi
tests/deb.sh
