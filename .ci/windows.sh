#!/usr/bin/env bash
# Windows, as far as Linux can show it:
#   1. type-check and lint (clippy -D warnings) the Windows build of vfslock-proto, vfslock and
#      vfslockd (lib, both bins, tests, examples; also with the `faults` feature);
#   2. build the named-pipe round trip (daemon/examples/pipe_roundtrip.rs) and the two binaries
#      for Windows and run them under Wine.
# The tests crate (vfslock-tests) is left out by `-p` selection: it drives the real binaries over
# Unix sockets, systemd and the file store, none of which exist on Windows.
#
# Missing pieces are installed (rustup target, mingw-w64, wine64). If the Rust toolchain server
# cannot be reached the whole step is SKIPPED (exit 0); if mingw-w64 or Wine cannot be installed
# only the Wine runs are SKIPPED. Either is printed loudly. Anything else that fails, fails.
#
# Env: VFSLOCK_WINEPREFIX (default: target/wine-prefix), a Wine prefix used by this script only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR=never

TARGET=x86_64-pc-windows-gnu
CRATES=(-p vfslock-proto -p vfslock -p vfslockd)
WINE=/usr/lib/wine/wine64
WINESERVER=/usr/lib/wine/wineserver
TARGET_DIR=$(realpath -m "${CARGO_TARGET_DIR:-target}")
START=$SECONDS

stage() { echo "== windows: $* ($((SECONDS - START))s)"; }
skipped() {
    echo
    echo "##########################################################################"
    echo "SKIPPED: $*"
    echo "##########################################################################"
    echo
}
apt_install() {
    # Refresh the package lists once, only when something must be installed.
    if [ -z "${APT_UPDATED:-}" ]; then
        apt-get update -qq || return 1
        APT_UPDATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

stage "rust target $TARGET"
if ! rustup target list --installed | grep -qx "$TARGET"; then
    if ! rustup target add "$TARGET"; then
        skipped "Windows checks: the Rust toolchain server cannot be reached (rustup target add $TARGET failed)"
        exit 0
    fi
fi

stage "cargo check --target $TARGET"
cargo check --locked --target "$TARGET" "${CRATES[@]}" --all-targets

stage "cargo clippy --target $TARGET"
cargo clippy --locked --target "$TARGET" "${CRATES[@]}" --all-targets -- -D warnings
cargo clippy --locked --target "$TARGET" -p vfslockd --all-targets --features vfslockd/faults -- -D warnings

stage "mingw-w64 (linker)"
if ! command -v x86_64-w64-mingw32-gcc >/dev/null; then
    if ! apt_install gcc-mingw-w64-x86-64 binutils-mingw-w64-x86-64; then
        skipped "Windows named-pipe round trip: mingw-w64 cannot be installed, nothing can be linked for Windows"
        exit 0
    fi
fi

stage "cargo build --target $TARGET (pipe_roundtrip example, vfslockd, vfslockctl)"
cargo build --locked --target "$TARGET" -p vfslockd --example pipe_roundtrip --bins
EXE_DIR="$TARGET_DIR/$TARGET/debug"

stage "wine64"
if [ ! -x "$WINE" ]; then
    if ! apt_install wine64 || [ ! -x "$WINE" ]; then
        skipped "Windows named-pipe round trip: Wine (wine64) cannot be installed; the Windows build was only type-checked and linted"
        exit 0
    fi
fi
export WINEPREFIX="${VFSLOCK_WINEPREFIX:-$TARGET_DIR/wine-prefix}"
export WINEDEBUG=-all
if [ ! -f "$WINEPREFIX/system.reg" ]; then
    mkdir -p "$WINEPREFIX"
    "$WINE" wineboot --init >/dev/null 2>&1
    "$WINESERVER" -w
fi
# Debian 12's Wine 8.0 has no bcryptprimitives.dll, whose ProcessPrng Rust's std calls (without
# it the program does not even start): a DLL exporting ProcessPrng over RtlGenRandom stands in.
SHIM_DIR="$TARGET_DIR/wine-shim"
SHIM="$SHIM_DIR/bcryptprimitives.dll"
mkdir -p "$SHIM_DIR"
cat >"$SHIM_DIR/bcryptprimitives.c.new" <<'EOF'
#include <windows.h>
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length); /* RtlGenRandom, advapi32 */
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length) {
    while (length > 0) {
        ULONG chunk = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
EOF
if [ ! -f "$SHIM" ] || ! cmp -s "$SHIM_DIR/bcryptprimitives.c.new" "$SHIM_DIR/bcryptprimitives.c"; then
    mv "$SHIM_DIR/bcryptprimitives.c.new" "$SHIM_DIR/bcryptprimitives.c"
    x86_64-w64-mingw32-gcc -shared -O2 -o "$SHIM" "$SHIM_DIR/bcryptprimitives.c" -ladvapi32
else
    rm "$SHIM_DIR/bcryptprimitives.c.new"
fi
SYSTEM32="$WINEPREFIX/drive_c/windows/system32"
if [ -f "$SYSTEM32/bcryptprimitives.dll" ] && ! cmp -s "$SHIM" "$SYSTEM32/bcryptprimitives.dll"; then
    # Wine's own (a later Wine may ship one): keep it.
    echo "the Wine prefix has its own bcryptprimitives.dll: using it"
else
    cp "$SHIM" "$SYSTEM32/bcryptprimitives.dll"
fi

stage "pipe_roundtrip.exe under Wine"
OUT=$(mktemp)
STATE=$(mktemp -d)
DAEMON=""
trap 'rm -rf "$OUT" "$STATE"; if [ -n "$DAEMON" ]; then kill "$DAEMON" 2>/dev/null || true; fi' EXIT
if ! VFSLOCK_UNDER_WINE=1 timeout 120 "$WINE" "$EXE_DIR/examples/pipe_roundtrip.exe" 2>&1 | tee "$OUT"; then
    echo "pipe_roundtrip.exe failed under Wine" >&2
    exit 1
fi
grep -q '^named-pipe round trip: ok' "$OUT" || {
    echo "pipe_roundtrip.exe did not report a successful round trip" >&2
    exit 1
}

stage "vfslockd.exe and vfslockctl.exe under Wine"
PIPE="\\\\.\\pipe\\vfslock-ci-$$-$RANDOM"
ctl() { timeout 30 "$WINE" "$EXE_DIR/vfslockctl.exe" --socket "$PIPE" "$@"; }
NO_COLOR=1 "$WINE" "$EXE_DIR/vfslockd.exe" --socket "$PIPE" --state-dir "$STATE" >"$OUT" 2>&1 &
DAEMON=$!
failed=""
up=""
for _ in $(seq 1 100); do
    if ctl status >/dev/null 2>&1; then
        up=1
        break
    fi
    kill -0 "$DAEMON" 2>/dev/null || break
    sleep 0.2
done
if [ -z "$up" ]; then
    failed="vfslockd.exe did not answer vfslockctl.exe status"
else
    for command in "status" "acquire mem:///ci/windows --ttl 30s" "show mem:///ci/windows" \
        "break mem:///ci/windows --reason windows.sh" "list"; do
        echo "\$ vfslockctl --socket '$PIPE' $command"
        # shellcheck disable=SC2086 # split on purpose
        if ! ctl $command; then
            failed="vfslockctl.exe $command failed"
            break
        fi
    done
fi
# Only a console's Ctrl-C stops it gracefully, and Wine gives this one none: end the process.
kill "$DAEMON" 2>/dev/null || true
wait "$DAEMON" 2>/dev/null || true
DAEMON=""
echo "vfslockd.exe log:"
sed 's/^/    /' "$OUT"
if [ -n "$failed" ]; then
    echo "FAILED: $failed" >&2
    exit 1
fi

stage "done"
