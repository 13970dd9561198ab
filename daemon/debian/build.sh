#!/usr/bin/env bash
# Builds the Debian package of vfslockd and vfslockctl: target/debian/vfslockd_VERSION-1_ARCH.deb
# (docs/debian.md). Run from anywhere in the repository:
#
#   daemon/debian/build.sh
#
# It builds the release binaries, generates the man pages and shell completions with them
# (`vfslockd --man-page`, `vfslockctl man --out-dir`, `vfslockctl completions`: cargo-deb packages
# files, so they must exist first), and packages everything with cargo-deb, as listed in
# `[package.metadata.deb]` of daemon/Cargo.toml. cargo-deb is installed first if missing.
#
# Options (the test suite's; tests/deb.sh):
#   --profile PROFILE   package the binaries of this Cargo profile (default: release)
#   --no-build          package the binaries already built instead of building them
#   --output PATH       where the .deb goes (a directory or a file name)
#   --fast              lighter compression (a larger .deb, made sooner)
#   --install-tool      only install cargo-deb if it is missing (.ci/run)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

# Pinned, like every tool the project installs; 3.8.0 builds with Rust 1.85 and later.
CARGO_DEB_VERSION=3.8.0

profile=release
build=1
output=()
fast=()
install_only=0
while (($#)); do
    case "$1" in
    --profile) profile="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --output) output=(--output "$2"); shift 2 ;;
    --fast) fast=(--fast); shift ;;
    --install-tool) install_only=1; shift ;;
    *) echo "usage: $0 [--profile PROFILE] [--no-build] [--output PATH] [--fast] [--install-tool]" >&2; exit 2 ;;
    esac
done

if [[ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $CARGO_DEB_VERSION" ]]; then
    echo "build.sh: installing cargo-deb $CARGO_DEB_VERSION (cargo install, a few minutes)" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked
fi
cargo deb --version
if ((install_only)); then exit 0; fi

if ((build)); then
    cargo build --locked -p vfslockd --bins --profile "$profile"
fi

# Cargo's own answer, which follows CARGO_TARGET_DIR and .cargo/config.toml.
target_dir=$(cargo metadata --format-version 1 --no-deps --locked |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
case "$profile" in
dev) profile_dir=debug ;;
*) profile_dir="$profile" ;;
esac
bin="$target_dir/$profile_dir"
for name in vfslockd vfslockctl; do
    [[ -x "$bin/$name" ]] || { echo "build.sh: no $bin/$name: build it, or drop --no-build" >&2; exit 1; }
done

# Generated beside the binaries, where the assets' `target/release/deb/...` paths point (cargo-deb
# maps `target/release` to the packaged profile's directory).
gen="$bin/deb"
rm -rf "$gen"
mkdir -p "$gen/man" "$gen/completions"
"$bin/vfslockd" --man-page >"$gen/man/vfslockd.8"
"$bin/vfslockctl" man --out-dir "$gen/man"
# Debian ships man pages compressed (policy 12.1); -n leaves out the time, for the same bytes
# on every build.
gzip -9n "$gen"/man/*
"$bin/vfslockctl" completions bash >"$gen/completions/vfslockctl.bash"
"$bin/vfslockctl" completions zsh >"$gen/completions/_vfslockctl"
"$bin/vfslockctl" completions fish >"$gen/completions/vfslockctl.fish"

# cargo-deb warns that the dev profile is for tests only: the test suite packages its debug
# build rather than build the workspace a second time in release mode.
cargo deb -p vfslockd --locked --no-build --profile "$profile" "${output[@]}" "${fast[@]}"
