#!/usr/bin/env bash
# The whole test suite, in one command: builds the binaries that the end-to-end tests start,
# then runs every unit, integration and doc test of the workspace.
#
# Uses cargo-nextest when it is installed (each test in its own process), else `cargo test`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

cargo build --workspace --bins --locked
cargo test --workspace --doc --locked
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --failure-output final
else
    cargo test --workspace --locked --no-fail-fast --lib --bins --tests
fi
