#!/usr/bin/env bash
# Install (if missing) and start vfslock's real test servers on 127.0.0.1:
#   s3     moto 5.2.5, threaded, requests serialized once their body is read (moto_single.py)
#   azblob Azurite 3.35.0 (blob only, in memory)
#   gcs    cloudbox 0.2.3 GCS app, patched (patch_cloudbox.py)
#   sftp   Debian's OpenSSH sshd, internal-sftp, test user vfslocktest
# Idempotent: a server whose recorded PID is alive and answers is left alone.
# Writes run/env (shell `export` lines for the test suite), run/<name>.pid and
# run/<name>.log. Exits non-zero if any server does not come up.
# Stop with stop.sh; prove the conditions with check.sh. See README.md.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
HERE="$(pwd -P)"
RUN="$HERE/run"
mkdir -p "$RUN"

S3_PORT="${VFSLOCK_TEST_S3_PORT:-19100}"
GCS_PORT="${VFSLOCK_TEST_GCS_PORT:-19101}"
AZBLOB_PORT="${VFSLOCK_TEST_AZBLOB_PORT:-19102}"
SFTP_PORT="${VFSLOCK_TEST_SFTP_PORT:-19122}"
WAIT_SECS="${VFSLOCK_TEST_SERVER_WAIT:-90}"
PYTHON="${PYTHON:-python3}"

BUCKET=locks
AZ_ACCOUNT=devstoreaccount1
# Azurite's well-known development key (public, documented by Microsoft).
AZ_KEY='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
SFTP_USER=vfslocktest

# ssh resolves ~/.ssh from the passwd entry, not from $HOME: use the same.
SSH_HOME="$(getent passwd "$(id -u)" | cut -d: -f6)"
SSH_HOME="${SSH_HOME:-${HOME:-/root}}"

MOTO_VENV="$HERE/.venv-moto"
GCS_VENV="$HERE/.venv-gcs"

log() { printf '[start.sh %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf '[start.sh %s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

TIMINGS=()
timed() { # timed LABEL cmd...
  local label="$1" t0; shift
  t0="$(now)"
  "$@"
  TIMINGS+=("$label: $(since "$t0") s")
}

APT_UPDATED=0
apt_install() {
  if [[ $APT_UPDATED == 0 ]]; then
    log "apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
    APT_UPDATED=1
  fi
  log "apt-get install $*"
  # Do not let the package start a system-wide daemon (Debian's policy-rc.d hook).
  local made_policy=0
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >"$RUN/apt.log" 2>&1; then
    tail -n 30 "$RUN/apt.log" >&2
    die "apt-get install $* failed; see $RUN/apt.log"
  fi
  if [[ $made_policy == 1 ]]; then rm -f /usr/sbin/policy-rc.d; fi
}

sha() { cat "$@" | sha256sum | cut -c1-64; }

# ----------------------------------------------------------------- install

install_prereqs() {
  local pkgs=()
  command -v curl >/dev/null || pkgs+=(curl)
  command -v ssh-keygen >/dev/null && command -v sftp >/dev/null && command -v ssh-keyscan >/dev/null \
    || pkgs+=(openssh-client)
  [[ -x /usr/sbin/sshd ]] || pkgs+=(openssh-server)
  command -v npm >/dev/null || pkgs+=(nodejs npm)
  command -v "$PYTHON" >/dev/null || pkgs+=(python3 python3-venv)
  # `ip` (network namespaces, veth pairs): the mutex checker's network partition.
  command -v ip >/dev/null || pkgs+=(iproute2)
  # promtool and the Prometheus server: tests/tests/metrics.rs checks and scrapes the metrics.
  command -v promtool >/dev/null && command -v prometheus >/dev/null || pkgs+=(prometheus)
  if ((${#pkgs[@]})); then apt_install "${pkgs[@]}"; fi
  if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then apt_install python3-venv; fi
}

# make_venv DIR STAMP-INPUT... : (re)create DIR unless its stamp matches
venv_is_current() { [[ -x "$1/bin/python" && -f "$1/.vfslock-stamp" && "$(cat "$1/.vfslock-stamp")" == "$2" ]]; }

install_moto() {
  local stamp
  stamp="$("$PYTHON" -VV | tr -d '\n') $(sha constraints-moto.txt)"
  if venv_is_current "$MOTO_VENV" "$stamp"; then return; fi
  log "installing moto[server]==5.2.5 into $MOTO_VENV"
  rm -rf "$MOTO_VENV"
  "$PYTHON" -m venv "$MOTO_VENV"
  "$MOTO_VENV/bin/pip" install -q --disable-pip-version-check -c constraints-moto.txt 'moto[server]==5.2.5' >&2
  printf '%s' "$stamp" >"$MOTO_VENV/.vfslock-stamp"
}

install_cloudbox() {
  local stamp
  stamp="$("$PYTHON" -VV | tr -d '\n') $(sha constraints-gcs.txt patch_cloudbox.py)"
  if ! venv_is_current "$GCS_VENV" "$stamp"; then
    log "installing cloudbox==0.2.3 into $GCS_VENV"
    rm -rf "$GCS_VENV"
    "$PYTHON" -m venv "$GCS_VENV"
    # cloudbox declares Requires-Python >=3.14; patch 1 makes it run on older Pythons.
    "$GCS_VENV/bin/pip" install -q --disable-pip-version-check --ignore-requires-python \
      -c constraints-gcs.txt 'cloudbox==0.2.3' >&2
    "$GCS_VENV/bin/python" patch_cloudbox.py
    printf '%s' "$stamp" >"$GCS_VENV/.vfslock-stamp"
  fi
}

azurite_stamp() { echo "$(node --version) $(sha package.json package-lock.json 2>/dev/null || sha package.json)"; }
azurite_is_current() {
  [[ -x node_modules/.bin/azurite-blob && -f node_modules/.vfslock-stamp \
     && "$(cat node_modules/.vfslock-stamp)" == "$(azurite_stamp)" ]]
}
install_azurite() {
  local stamp
  stamp="$(azurite_stamp)"
  if [[ -f package-lock.json ]]; then
    npm ci --no-audit --no-fund --loglevel=error >&2
  else
    npm install --no-audit --no-fund --loglevel=error >&2
    stamp="$(node --version) $(sha package.json package-lock.json)"
  fi
  printf '%s' "$stamp" >node_modules/.vfslock-stamp
}

setup_sftp_user() {
  if ! getent passwd "$SFTP_USER" >/dev/null; then
    log "creating user $SFTP_USER"
    useradd --create-home --shell /bin/sh "$SFTP_USER"
  fi
  # '*' = no password login possible, but the account is not "locked" ('!'),
  # which sshd with UsePAM no would refuse even for public-key logins.
  usermod -p '*' "$SFTP_USER"
  SFTP_HOME="$(getent passwd "$SFTP_USER" | cut -d: -f6)"
  SFTP_ROOT="$SFTP_HOME/locks"
  install -d -o "$SFTP_USER" -g "$SFTP_USER" -m 755 "$SFTP_HOME" "$SFTP_ROOT"
  install -d -o "$SFTP_USER" -g "$SFTP_USER" -m 700 "$SFTP_HOME/.ssh"
}

make_ssh_keys() {
  # Throwaway keys, kept as long as run/ exists.
  [[ -f "$RUN/ssh_host_ed25519_key" ]] || ssh-keygen -q -t ed25519 -N '' -C vfslock-test-host -f "$RUN/ssh_host_ed25519_key"
  [[ -f "$RUN/sftp_client_key" ]] || ssh-keygen -q -t ed25519 -N '' -C vfslock-test-client -f "$RUN/sftp_client_key"
  chmod 600 "$RUN/ssh_host_ed25519_key" "$RUN/sftp_client_key"
  install -o "$SFTP_USER" -g "$SFTP_USER" -m 600 "$RUN/sftp_client_key.pub" "$SFTP_HOME/.ssh/authorized_keys"
  cat >"$RUN/sshd_config" <<EOF
# Generated by tests/servers/start.sh. Test-only sshd: loopback, one user, SFTP only.
Port $SFTP_PORT
ListenAddress 127.0.0.1
HostKey $RUN/ssh_host_ed25519_key
PidFile none
AuthorizedKeysFile .ssh/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers $SFTP_USER
StrictModes no
UsePAM no
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PrintMotd no
Subsystem sftp internal-sftp
ForceCommand internal-sftp
LogLevel INFO
EOF
  mkdir -p /run/sshd # privilege-separation dir; sshd (even -t) refuses to run without it
  /usr/sbin/sshd -t -f "$RUN/sshd_config" || die "sshd rejected $RUN/sshd_config"
}

# OpenDAL's sftp service runs the system ssh client with known_hosts_strategy
# "strict": it needs "[127.0.0.1]:PORT <hostkey>" in the running user's
# ~/.ssh/known_hosts. Add it; replace a stale line for the same host:port.
update_known_hosts() {
  local kh="$SSH_HOME/.ssh/known_hosts" host="[127.0.0.1]:$SFTP_PORT" line
  line="$host $(cut -d' ' -f1,2 "$RUN/ssh_host_ed25519_key.pub")"
  mkdir -p "$SSH_HOME/.ssh"
  chmod 700 "$SSH_HOME/.ssh"
  touch "$kh"
  if grep -qxF "$line" "$kh"; then return; fi
  if ssh-keygen -F "$host" -f "$kh" >/dev/null 2>&1; then
    log "replacing the stale known_hosts entry for $host in $kh"
    ssh-keygen -R "$host" -f "$kh" >/dev/null 2>&1
    rm -f "$kh.old"
  else
    log "adding $host to $kh"
  fi
  printf '%s\n' "$line" >>"$kh"
}

# ----------------------------------------------------------------- start

pid_alive() { [[ -n "$1" ]] && kill -0 "$1" 2>/dev/null; }
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# expected command-line fragment per server, so a recycled PID is never mistaken
declare -A CMD_MATCH=([s3]=moto_single.py [gcs]=cloudbox.services.gcs.app [azblob]=azurite-blob [sftp]=sshd)
pid_is_ours() { # name pid
  pid_alive "$2" && tr '\0' ' ' <"/proc/$2/cmdline" 2>/dev/null | grep -qF "${CMD_MATCH[$1]}"
}

STARTED=()
# start_server NAME PORT CMD... : start CMD in the background unless already running
start_server() {
  local name="$1" port="$2" pidf="$RUN/$1.pid" pid=""
  shift 2
  [[ -f "$pidf" ]] && pid="$(cat "$pidf")"
  if [[ -n "$pid" ]] && pid_is_ours "$name" "$pid"; then
    log "$name already running (pid $pid, port $port)"
    return
  fi
  rm -f "$pidf"
  if port_in_use "$port"; then
    die "port $port for $name is already taken by another process (not started by start.sh); free it or set VFSLOCK_TEST_${name^^}_PORT"
  fi
  # setsid: own session, so the server outlives this script and its terminal.
  (cd "$RUN" && exec setsid "$@" >"$RUN/$name.log" 2>&1 </dev/null) &
  echo "$!" >"$pidf"
  STARTED+=("$name")
  log "started $name (pid $!, port $port), log $RUN/$name.log"
}

# wait_for NAME PROBE-CMD... : bounded wait until PROBE-CMD succeeds
wait_for() {
  local name="$1" pid t0 deadline
  shift
  pid="$(cat "$RUN/$name.pid")"
  t0="$(now)"
  deadline=$((SECONDS + WAIT_SECS))
  until "$@" >/dev/null 2>&1; do
    if ! pid_alive "$pid"; then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name (pid $pid) exited during start-up; see $RUN/$name.log"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 30 "$RUN/$name.log" >&2 || true
      die "$name (pid $pid) did not answer within ${WAIT_SECS}s; see $RUN/$name.log (stop.sh stops what was started)"
    fi
    sleep 0.2
  done
  TIMINGS+=("$name answering after: $(since "$t0") s (since wait began)")
}

http_answers() { # url -> any HTTP status at all
  local code
  code="$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true)"
  [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}
http_200() { [[ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 3 "$1" || true)" == 200 ]]; }
sshd_answers() { # the host key the server presents is ours
  ssh-keyscan -T 3 -t ed25519 -p "$SFTP_PORT" 127.0.0.1 2>/dev/null \
    | grep -qF "$(cut -d' ' -f2 "$RUN/ssh_host_ed25519_key.pub")"
}

create_buckets() {
  local code
  code="$(curl -s -o "$RUN/.s3-bucket.out" -w '%{http_code}' -X PUT "http://127.0.0.1:$S3_PORT/$BUCKET")"
  if [[ "$code" == 200 ]] || { [[ "$code" == 409 ]] && grep -q BucketAlreadyOwnedByYou "$RUN/.s3-bucket.out"; }; then
    log "s3: bucket $BUCKET ready"
  else
    die "s3: creating bucket $BUCKET failed (HTTP $code: $(head -c 300 "$RUN/.s3-bucket.out"))"
  fi
  code="$(curl -s -o "$RUN/.gcs-bucket.out" -w '%{http_code}' -X POST \
    "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=local-project" \
    -H 'Content-Type: application/json' -d "{\"name\":\"$BUCKET\"}")"
  if [[ "$code" == 200 || "$code" == 409 ]]; then
    log "gcs: bucket $BUCKET ready"
  else
    die "gcs: creating bucket $BUCKET failed (HTTP $code: $(head -c 300 "$RUN/.gcs-bucket.out"))"
  fi
  rm -f "$RUN/.s3-bucket.out" "$RUN/.gcs-bucket.out"
  "$PYTHON" azblob.py mkcontainer "http://127.0.0.1:$AZBLOB_PORT/$AZ_ACCOUNT" "$AZ_ACCOUNT" "$AZ_KEY" "$BUCKET"
}

write_env() {
  local q
  # plain when safe, else single-quoted (so a simple `export K=V` parser copes too)
  q() { if [[ "$1" =~ ^[A-Za-z0-9_./:@+=,-]*$ ]]; then printf '%s' "$1"; else printf "'%s'" "${1//\'/\'\\\'\'}"; fi; }
  {
    echo "# Generated by tests/servers/start.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ). Source it: . tests/servers/run/env"
    echo "# Servers listen on 127.0.0.1 only; stop them with tests/servers/stop.sh."
    echo "# S3: moto 5.2.5 (requests serialized by moto_single.py). Any access key works; path-style; region us-east-1."
    echo "export VFSLOCK_TEST_S3_ENDPOINT=$(q "http://127.0.0.1:$S3_PORT")"
    echo "export VFSLOCK_TEST_S3_BUCKET=$BUCKET"
    echo "export VFSLOCK_TEST_S3_REGION=us-east-1"
    echo "export VFSLOCK_TEST_S3_ACCESS_KEY_ID=test"
    echo "export VFSLOCK_TEST_S3_SECRET_ACCESS_KEY=test"
    echo "# Azure Blob: Azurite 3.35.0, in memory, well-known devstoreaccount1 key."
    echo "export VFSLOCK_TEST_AZBLOB_ENDPOINT=$(q "http://127.0.0.1:$AZBLOB_PORT/$AZ_ACCOUNT")"
    echo "export VFSLOCK_TEST_AZBLOB_CONTAINER=$BUCKET"
    echo "export VFSLOCK_TEST_AZBLOB_ACCOUNT=$AZ_ACCOUNT"
    echo "export VFSLOCK_TEST_AZBLOB_KEY=$(q "$AZ_KEY")"
    echo "# GCS: cloudbox 0.2.3 GCS app (patched), no auth: use skip_signature + disable_config_load + disable_vm_metadata."
    echo "export VFSLOCK_TEST_GCS_ENDPOINT=$(q "http://127.0.0.1:$GCS_PORT")"
    echo "export VFSLOCK_TEST_GCS_BUCKET=$BUCKET"
    echo "# SFTP: OpenSSH sshd, user $SFTP_USER, key auth only, SFTP only."
    echo "# start.sh added '[127.0.0.1]:$SFTP_PORT <host key>' to $SSH_HOME/.ssh/known_hosts (replacing a stale"
    echo "# line for that host:port), so OpenDAL's known_hosts_strategy(\"strict\") works for user $(id -un)."
    echo "# Another user must add that line (from VFSLOCK_TEST_SFTP_HOST_KEY) to its own known_hosts."
    echo "export VFSLOCK_TEST_SFTP_ENDPOINT=$(q "ssh://$SFTP_USER@127.0.0.1:$SFTP_PORT")"
    echo "export VFSLOCK_TEST_SFTP_USER=$SFTP_USER"
    echo "export VFSLOCK_TEST_SFTP_KEY=$(q "$RUN/sftp_client_key")"
    echo "export VFSLOCK_TEST_SFTP_ROOT=$(q "$SFTP_ROOT")"
    echo "export VFSLOCK_TEST_SFTP_KNOWN_HOSTS=$(q "$SSH_HOME/.ssh/known_hosts")"
    echo "export VFSLOCK_TEST_SFTP_HOST_KEY=$(q "$(cut -d' ' -f1,2 "$RUN/ssh_host_ed25519_key.pub")")"
  } >"$RUN/env.tmp"
  mv "$RUN/env.tmp" "$RUN/env"
}

main() {
  local t_all
  t_all="$(now)"
  timed "prerequisites (apt)" install_prereqs
  # npm (Azurite) installs in the background while pip builds the two venvs.
  local npm_pid="" t_npm
  t_npm="$(now)"
  if ! azurite_is_current; then
    log "installing azurite 3.35.0 (npm ci, in the background; log $RUN/install-azurite.log)"
    (install_azurite) >"$RUN/install-azurite.log" 2>&1 &
    npm_pid=$!
  fi
  timed "moto venv" install_moto
  timed "cloudbox venv" install_cloudbox
  if [[ -n "$npm_pid" ]]; then
    if ! wait "$npm_pid"; then
      tail -n 30 "$RUN/install-azurite.log" >&2
      die "installing azurite failed; see $RUN/install-azurite.log"
    fi
    TIMINGS+=("azurite npm (parallel): $(since "$t_npm") s")
  fi
  setup_sftp_user
  make_ssh_keys
  update_known_hosts

  # Refuse early (before starting anything) if a port is held by something else.
  local name port pid
  for name in s3 gcs azblob sftp; do
    case $name in s3) port=$S3_PORT ;; gcs) port=$GCS_PORT ;; azblob) port=$AZBLOB_PORT ;; sftp) port=$SFTP_PORT ;; esac
    pid="$(cat "$RUN/$name.pid" 2>/dev/null || true)"
    if ! pid_is_ours "$name" "$pid" && port_in_use "$port"; then
      die "port $port for $name is already taken by another process (not started by start.sh); free it or set VFSLOCK_TEST_${name^^}_PORT"
    fi
  done

  local t_start
  t_start="$(now)"
  start_server s3 "$S3_PORT" "$MOTO_VENV/bin/python" "$HERE/moto_single.py" --host 127.0.0.1 --port "$S3_PORT"
  start_server gcs "$GCS_PORT" "$GCS_VENV/bin/python" -m uvicorn cloudbox.services.gcs.app:app \
    --host 127.0.0.1 --port "$GCS_PORT" --workers 1 --log-level warning
  start_server azblob "$AZBLOB_PORT" "$HERE/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 \
    --blobPort "$AZBLOB_PORT" --inMemoryPersistence --disableTelemetry --silent
  if ! pid_is_ours sftp "$(cat "$RUN/sftp.pid" 2>/dev/null || true)"; then
    # fresh sshd => fresh, empty root (the HTTP stores are in memory, so they start empty too)
    find "$SFTP_ROOT" -mindepth 1 -delete
  fi
  start_server sftp "$SFTP_PORT" /usr/sbin/sshd -D -e -f "$RUN/sshd_config"

  wait_for s3 http_200 "http://127.0.0.1:$S3_PORT/"
  wait_for gcs http_200 "http://127.0.0.1:$GCS_PORT/storage/v1/b?project=local-project"
  wait_for azblob http_answers "http://127.0.0.1:$AZBLOB_PORT/$AZ_ACCOUNT?comp=list"
  wait_for sftp sshd_answers
  TIMINGS+=("start (all four answering): $(since "$t_start") s")

  create_buckets
  write_env
  TIMINGS+=("total: $(since "$t_all") s")
  log "all servers up; environment in $RUN/env"
  printf '  %s\n' "${TIMINGS[@]}" >&2
}

main "$@"
