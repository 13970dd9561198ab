#!/usr/bin/env bash
# The Debian package (docs/debian.md), tested as an administrator would meet it:
# 1. builds it with daemon/debian/build.sh from the binaries tests/run.sh already built (the
#    debug build: no second, release build of the workspace just for this);
# 2. checks its files and their modes, its control fields and conffiles, and its maintainer
#    scripts' syntax;
# 3. installs it with dpkg into a scratch root and checks what the maintainer scripts did
#    there: the vfslock user (by systemd-sysusers, and by useradd where that is missing), the
#    config's owner and mode, vfslockd.socket enabled and nothing else, `systemd-analyze
#    verify` on the installed units, the installed daemon accepting the installed config as
#    the vfslock user; then what they ask systemd on a first install, on upgrades (a running
#    daemon is reloaded, never restarted or stopped, since that releases every lock), on
#    remove and on purge.
#
# The scratch root: a private mount namespace (unshare) in which /usr, /etc and /var are
# overlays of the host's, writable into a temporary directory, and dpkg runs chrooted there,
# maintainer scripts included. Everything they write (passwd, dpkg's database, systemd's
# links) goes to the overlays, and the mounts vanish with the namespace: the host is never
# changed. A stub `systemctl` (first in PATH in the root) records what the scripts ask of
# systemd, which does not run there.
#
# Usage: tests/deb.sh (after `cargo build --bins`; tests/run.sh runs it). Needs root; installs
# dpkg-dev, systemd, util-linux and man-db if missing, and build.sh installs cargo-deb. Prints one line per
# check and "deb: N passed, M failed"; exits 1 if any failed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# ------------------------------------------------------------------------------ checks

# One line per check in $RESULTS (PASS/FAIL), shared by this script and its namespaced half.
pass() { echo "PASS $1" | tee -a "$RESULTS"; }
fail() {
    echo "FAIL $1" | tee -a "$RESULTS"
    shift
    if (($#)); then printf '%s\n' "$@" | sed 's/^/    /'; fi
}
# check NAME COMMAND...: passes when COMMAND succeeds; prints its output when it does not.
check() {
    local name="$1" out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}
# contains NAME TEXT PATTERN / lacks NAME TEXT PATTERN (extended regexps, line by line).
contains() { if grep -qE -- "$3" <<<"$2"; then pass "$1"; else fail "$1" "no line matches /$3/ in:" "$2"; fi; }
lacks() {
    local hits
    if hits=$(grep -E -- "$3" <<<"$2"); then fail "$1" "lines matching /$3/:" "$hits"; else pass "$1"; fi
}

# --------------------------------------------------------------- in the scratch root

# The second half, run by the first inside `unshare --mount`: DEB is the package, SCRATCH an
# empty directory for the overlays.
in_scratch_root() {
    local deb="$1" scratch="$2"
    local R="$scratch/root"
    mkdir -p "$R"
    for dir in usr etc var; do
        mkdir -p "$R/$dir" "$scratch/upper/$dir" "$scratch/work/$dir"
        mount -t overlay overlay \
            -o "lowerdir=/$dir,upperdir=$scratch/upper/$dir,workdir=$scratch/work/$dir" "$R/$dir"
    done
    # Debian 12 is merged-/usr: /bin, /sbin, /lib and /lib64 are links into /usr.
    for dir in bin sbin lib lib64; do ln -s "usr/$dir" "$R/$dir"; done
    mkdir -p "$R/proc" "$R/dev" "$R/run" "$R/tmp"
    mount -t proc proc "$R/proc"
    mount --rbind /dev "$R/dev"
    mount -t tmpfs tmpfs "$R/run"
    mount -t tmpfs tmpfs "$R/tmp"

    # Nothing of vfslock that the host may have (the README's manual install) is visible.
    if chroot "$R" dpkg-query -W vfslockd >/dev/null 2>&1; then
        fail "the host has no vfslockd package installed (tests/deb.sh needs a clean root)"
        return
    fi
    rm -rf "$R"/etc/vfslock "$R"/etc/systemd/system/vfslockd* "$R"/etc/systemd/system/*/vfslockd* \
        "$R"/etc/sysusers.d/vfslock.conf "$R"/var/lib/vfslock "$R"/var/log/vfslock \
        "$R"/var/lib/systemd/deb-systemd-helper-*/*vfslockd* \
        "$R"/var/lib/systemd/deb-systemd-helper-*/*/*vfslockd*
    for db in passwd group shadow gshadow; do
        grep -v '^vfslock:' "$R/etc/$db" >"$scratch/$db" || true
        cat "$scratch/$db" >"$R/etc/$db"
    done
    sed -i '\#/etc/vfslock/#d' "$R/var/lib/dpkg/statoverride"
    # A policy-rc.d (tests/servers/start.sh makes one while apt runs) would veto every action.
    rm -f "$R/usr/sbin/policy-rc.d"

    # systemd "runs" (the maintainer scripts test /run/systemd/system), answered by a stub
    # that records each call and says vfslockd.service is active when /stub-service-active
    # exists.
    mkdir -p "$R/run/systemd/system" "$R/usr/local/sbin"
    cat >"$R/usr/local/sbin/systemctl" <<'STUB'
#!/bin/sh
echo "systemctl $*" >>/systemctl.log
case " $* " in
*" is-active "*vfslockd.service*) [ -e /stub-service-active ] ;;
*" is-active "*) exit 3 ;;
*" is-enabled "*vfslockd.socket*)
    # What systemd would answer; systemctl itself declines in a chroot.
    if [ -L /etc/systemd/system/sockets.target.wants/vfslockd.socket ]; then echo enabled; else echo disabled; fi ;;
# Jobs for the running manager: recorded only.
*" start "* | *" stop "* | *" restart "* | *" try-restart "* | *" reload"* | *" daemon-reload "* | *" kill "*) ;;
# Unit files (enable, preset, is-enabled, mask...): systemctl does these without a manager.
*) exec /usr/bin/systemctl "$@" ;;
esac
STUB
    chmod 755 "$R/usr/local/sbin/systemctl"
    export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    # dpkg itself runs chrooted too: it looks the statoverride's vfslock user up by name, in the
    # root's passwd only then.
    cp "$deb" "$R/tmp/vfslockd.deb"
    deb=/tmp/vfslockd.deb
    local dpkg=(chroot "$R" dpkg --force-unsafe-io)
    local asked links out

    # ------------------------------------------------------------ first install
    : >"$R/systemctl.log"
    if ! out=$("${dpkg[@]}" -i "$deb" </dev/null 2>&1); then
        fail "dpkg -i installs the package into the scratch root" "$out"
        return
    fi
    pass "dpkg -i installs the package into the scratch root"
    check "the vfslock user exists: system account, home /var/lib/vfslock, no login shell" \
        sh -c "chroot '$R' getent passwd vfslock | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/vfslock\" && \$7 ~ /nologin\$/ { ok = 1 } END { exit !ok }'"
    check "the vfslock group exists" chroot "$R" getent group vfslock
    out=$(chroot "$R" stat -c '%U:%G %a' /etc/vfslock/vfslockd.toml)
    contains "the config is vfslock:vfslock 0600 (readable by the daemon only)" "$out" '^vfslock:vfslock 600$'
    links=$(cd "$R/etc/systemd/system" && find . -name 'vfslockd*' | sort)
    contains "vfslockd.socket is enabled (sockets.target.wants)" "$links" '^\./sockets\.target\.wants/vfslockd\.socket$'
    lacks "vfslockd.service and vfslockd-metrics.socket are not enabled" "$links" 'vfslockd\.service|vfslockd-metrics'
    asked=$(cat "$R/systemctl.log")
    contains "first install: systemd reloads the units and starts vfslockd.socket" "$asked" '^systemctl .*start vfslockd\.socket$'
    lacks "first install: the service itself is not started, reloaded or restarted" "$asked" \
        '(start|restart|reload|stop) .*vfslockd\.service'

    out=$(systemd-analyze verify --root="$R" vfslockd.socket vfslockd-metrics.socket vfslockd.service 2>&1 >/dev/null) &&
        [[ -z "$out" ]] && pass "systemd-analyze verify: the installed units, no warning" ||
        fail "systemd-analyze verify: the installed units, no warning" "$out"
    out=$(chroot --userspec=vfslock:vfslock "$R" /usr/bin/vfslockd --check-config \
        --config /etc/vfslock/vfslockd.toml 2>&1) && [[ "$out" == ok ]] &&
        pass "the installed daemon, as vfslock, accepts the installed config without a warning" ||
        fail "the installed daemon, as vfslock, accepts the installed config without a warning" "$out"
    check "others cannot read the config" \
        sh -c "! chroot --userspec=nobody:nogroup '$R' cat /etc/vfslock/vfslockd.toml"
    check "the bash completion loads and completes vfslockctl" \
        bash -c "source '$R/usr/share/bash-completion/completions/vfslockctl' && complete -p vfslockctl"
    check "man finds the installed pages" chroot "$R" man -w vfslockd vfslockctl vfslockctl-run

    # ------------------------------------------------- upgrades (dpkg -i again)
    # An edited conffile, which dpkg must keep, with its owner and mode.
    echo "# a local edit" >>"$R/etc/vfslock/vfslockd.toml"
    touch "$R/stub-service-active"
    : >"$R/systemctl.log"
    if out=$("${dpkg[@]}" -i "$deb" </dev/null 2>&1); then
        asked=$(cat "$R/systemctl.log")
        contains "upgrade with the daemon running: vfslockd.service is reloaded (locks kept)" "$asked" \
            '^systemctl .*reload vfslockd\.service$'
        lacks "upgrade with the daemon running: nothing is restarted or stopped" "$asked" '(restart|stop|kill)'
        check "upgrade: the local edit of the config is kept" grep -qx '# a local edit' "$R/etc/vfslock/vfslockd.toml"
        out=$(chroot "$R" stat -c '%U:%G %a' /etc/vfslock/vfslockd.toml)
        contains "upgrade: the config is still vfslock:vfslock 0600" "$out" '^vfslock:vfslock 600$'
    else
        fail "upgrade with the daemon running" "$out"
    fi

    rm "$R/stub-service-active"
    # The administrator disabled the socket (`systemctl disable vfslockd.socket`).
    rm "$R/etc/systemd/system/sockets.target.wants/vfslockd.socket"
    : >"$R/systemctl.log"
    if out=$("${dpkg[@]}" -i "$deb" </dev/null 2>&1); then
        asked=$(cat "$R/systemctl.log")
        lacks "upgrade with the daemon stopped: nothing is reloaded, restarted or stopped" "$asked" \
            '(reload|restart|stop|kill) '
        check "upgrade: an administrator's disabled socket stays disabled" \
            test ! -e "$R/etc/systemd/system/sockets.target.wants/vfslockd.socket"
    else
        fail "upgrade with the daemon stopped" "$out"
    fi

    # ------------------------------------------------------- remove and purge
    : >"$R/systemctl.log"
    if out=$("${dpkg[@]}" -r vfslockd </dev/null 2>&1); then
        asked=$(cat "$R/systemctl.log")
        contains "remove: the service and both sockets are stopped" "$asked" \
            '^systemctl .*stop vfslockd\.service vfslockd-metrics\.socket vfslockd\.socket$'
        check "remove: the binaries are gone, the config stays" \
            sh -c "test ! -e '$R/usr/bin/vfslockd' && test -e '$R/etc/vfslock/vfslockd.toml'"
    else
        fail "dpkg -r removes the package" "$out"
    fi
    if out=$("${dpkg[@]}" -P vfslockd </dev/null 2>&1); then
        check "purge: the config, its stat override and every unit link are gone" \
            sh -c "test ! -e '$R/etc/vfslock/vfslockd.toml' &&
                   ! grep -q /etc/vfslock/ '$R/var/lib/dpkg/statoverride' &&
                   test -z \"\$(find '$R/etc/systemd/system' -name 'vfslockd*')\""
        check "purge: the vfslock user stays (files on shared directories may be its)" \
            chroot "$R" getent passwd vfslock
    else
        fail "dpkg -P purges the package" "$out"
    fi

    # --------------------------------------------- without systemd-sysusers
    chroot "$R" userdel vfslock
    chroot "$R" groupdel vfslock 2>/dev/null || true
    rm "$R/usr/bin/systemd-sysusers"
    if out=$("${dpkg[@]}" -i "$deb" </dev/null 2>&1); then
        check "without systemd-sysusers, useradd makes the same system user" \
            sh -c "chroot '$R' getent passwd vfslock | awk -F: '\$3 < 1000 && \$6 == \"/var/lib/vfslock\" && \$7 ~ /nologin\$/ { ok = 1 } END { exit !ok }'"
        out=$(chroot "$R" stat -c '%U:%G %a' /etc/vfslock/vfslockd.toml)
        contains "without systemd-sysusers: the config is vfslock:vfslock 0600" "$out" '^vfslock:vfslock 600$'
    else
        fail "install without systemd-sysusers" "$out"
    fi
}

if [[ "${1:-}" == --in-scratch-root ]]; then
    shift
    in_scratch_root "$@"
    exit 0
fi

# --------------------------------------------------------------------- the package

if ((EUID != 0)); then
    echo "tests/deb.sh: needs root (chroot, mount namespaces)" >&2
    exit 1
fi
# Debian's tools, installed when missing (as tests/servers/start.sh installs the servers); a
# machine that cannot install them fails here, loudly, rather than skip.
packages=()
command -v dpkg-shlibdeps >/dev/null || packages+=(dpkg-dev) # $auto Depends (libc6)
command -v systemd-analyze >/dev/null || packages+=(systemd)
command -v unshare >/dev/null || packages+=(util-linux)
command -v man >/dev/null || packages+=(man-db)
if ((${#packages[@]})); then
    echo "tests/deb.sh: apt-get install ${packages[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}"
fi
TMP=$(mktemp -d "${TMPDIR:-/tmp}/vfslock-deb.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
export RESULTS="$TMP/results"
: >"$RESULTS"

started=$(date +%s)
if ! out=$(daemon/debian/build.sh --profile dev --no-build --fast --output "$TMP/out/" 2>&1); then
    printf '%s\n' "$out"
    echo "FAIL daemon/debian/build.sh builds the package"
    echo "deb: 0 passed, 1 failed"
    exit 1
fi
deb=$(echo "$TMP"/out/vfslockd_*.deb)
pass "daemon/debian/build.sh builds the package ($(basename "$deb"), $(($(date +%s) - started)) s)"

# The files, with their modes, except the per-subcommand man pages (checked below).
files=$(dpkg-deb -c "$deb" | awk '$1 !~ /^d/ { print $1, $6 }' | grep -v '/man1/vfslockctl-' | sort)
expected=$(sort <<'EOF'
-rwxr-xr-x ./usr/bin/vfslockd
-rwxr-xr-x ./usr/bin/vfslockctl
-rw-r--r-- ./usr/lib/systemd/system/vfslockd.service
-rw-r--r-- ./usr/lib/systemd/system/vfslockd.socket
-rw-r--r-- ./usr/lib/systemd/system/vfslockd-metrics.socket
-rw-r--r-- ./usr/lib/sysusers.d/vfslock.conf
-rw------- ./etc/vfslock/vfslockd.toml
-rw-r--r-- ./usr/share/man/man8/vfslockd.8.gz
-rw-r--r-- ./usr/share/man/man1/vfslockctl.1.gz
-rw-r--r-- ./usr/share/bash-completion/completions/vfslockctl
-rw-r--r-- ./usr/share/zsh/vendor-completions/_vfslockctl
-rw-r--r-- ./usr/share/fish/vendor_completions.d/vfslockctl.fish
-rw-r--r-- ./usr/share/doc/vfslockd/README.md
-rw-r--r-- ./usr/share/doc/vfslockd/copyright
EOF
)
if [[ "$files" == "$expected" ]]; then
    pass "the package holds the binaries, units, sysusers file, config, man pages, completions"
else
    fail "the package holds the binaries, units, sysusers file, config, man pages, completions" \
        "$(diff <(echo "$expected") <(echo "$files"))"
fi
owners=$(dpkg-deb -c "$deb" | awk '$2 != "0/0" { print $2, $6 }')
lacks "every file is root's in the archive" "$owners" '.'

# vfslockctl.1 lists its subcommands' pages: each must be in the package, and no other.
dpkg-deb -x "$deb" "$TMP/x"
referenced=$(zcat "$TMP/x/usr/share/man/man1/vfslockctl.1.gz" |
    sed -n 's/^vfslockctl\\-\([a-z-]*\)(1)$/vfslockctl-\1.1.gz/p' | sort)
shipped=$(cd "$TMP/x/usr/share/man/man1" && ls vfslockctl-*.1.gz | sort)
if [[ -n "$referenced" && "$referenced" == "$shipped" ]]; then
    pass "a man page for every subcommand vfslockctl.1 refers to ($(wc -l <<<"$shipped"))"
else
    fail "a man page for every subcommand vfslockctl.1 refers to" \
        "$(diff <(echo "$referenced") <(echo "$shipped"))"
fi
check "vfslockd.8 is section 8, titled vfslockd" \
    sh -c "zcat '$TMP/x/usr/share/man/man8/vfslockd.8.gz' | grep -q '^\.TH vfslockd 8 '"

# Control fields and files.
depends=$(dpkg-deb -f "$deb" Depends)
for dep in 'libc6 \(>= [0-9.]+\)' init-system-helpers passwd; do
    contains "Depends: $dep" "$(tr ',' '\n' <<<"$depends" | sed 's/^ *//')" "^$dep$"
done
check "Package vfslockd, Section admin, Architecture of this machine" \
    test "$(dpkg-deb -f "$deb" Package Section Architecture | tr '\n' ' ')" \
    == "Package: vfslockd Section: admin Architecture: $(dpkg --print-architecture) "
dpkg-deb -e "$deb" "$TMP/control"
check "conffiles lists the config, and only it" \
    test "$(cat "$TMP/control/conffiles")" == /etc/vfslock/vfslockd.toml
for script in postinst prerm postrm; do
    check "$script is executable and valid sh" \
        sh -c "test -x '$TMP/control/$script' && sh -n '$TMP/control/$script'"
done
# What the scripts say they do; the scratch root below checks what they do.
code=$(cat "$TMP/control/postinst" "$TMP/control/prerm" "$TMP/control/postrm" | grep -v '^ *#')
contains "postinst creates the user from the shipped sysusers file" "$code" 'systemd-sysusers vfslock\.conf'
contains "postinst enables vfslockd.socket with deb-systemd-helper" "$code" 'deb-systemd-helper enable vfslockd\.socket'
contains "postinst reloads a running daemon on upgrade" "$code" 'deb-systemd-invoke reload vfslockd\.service'
lacks "no script restarts anything" "$code" 'restart'

# The scratch root, in a mount namespace of its own.
mkdir "$TMP/scratch"
if ! unshare --mount --propagation private tests/deb.sh --in-scratch-root "$deb" "$TMP/scratch"; then
    fail "the scratch-root checks ran to the end"
fi

passed=$(grep -c '^PASS' "$RESULTS" || true)
failed=$(grep -c '^FAIL' "$RESULTS" || true)
echo "tests/deb.sh: $(($(date +%s) - started)) s"
echo "deb: $passed passed, $failed failed"
((failed == 0))
