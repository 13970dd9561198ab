#!/usr/bin/env bash
# Stop exactly the servers start.sh recorded in run/<name>.pid: SIGTERM, then
# SIGKILL after a bounded wait. Removes the pid files. Safe when nothing runs.
# A PID whose command line is not the expected server (recycled PID) is left alone.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
RUN="$(pwd -P)/run"
GRACE_SECS="${VFSLOCK_TEST_STOP_GRACE:-10}"

declare -A CMD_MATCH=([s3]=moto_single.py [gcs]=cloudbox.services.gcs.app [azblob]=azurite-blob [sftp]=sshd)
log() { printf '[stop.sh] %s\n' "$*" >&2; }

shopt -s nullglob
pidfiles=("$RUN"/*.pid)
if ((${#pidfiles[@]} == 0)); then
  log "nothing recorded in $RUN; nothing to stop"
  exit 0
fi

rc=0
declare -A TERMED=()
for pidf in "${pidfiles[@]}"; do
  name="$(basename "$pidf" .pid)"
  pid="$(cat "$pidf" 2>/dev/null || true)"
  if ! [[ "$pid" =~ ^[0-9]+$ ]]; then
    log "$name: bad pid file ($pid); removing it"
    rm -f "$pidf"
    continue
  fi
  if ! kill -0 "$pid" 2>/dev/null; then
    log "$name: pid $pid not running"
    rm -f "$pidf"
    continue
  fi
  want="${CMD_MATCH[$name]:-}"
  if [[ -z "$want" ]] || ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF "$want"; then
    log "$name: pid $pid is not the $name server any more (PID reused?); leaving it alone"
    rm -f "$pidf"
    continue
  fi
  log "$name: SIGTERM pid $pid"
  kill -TERM "$pid" 2>/dev/null || true
  TERMED[$name]="$pid"
done

deadline=$((SECONDS + GRACE_SECS))
for name in "${!TERMED[@]}"; do
  pid="${TERMED[$name]}"
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    log "$name: pid $pid still alive after ${GRACE_SECS}s; SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      log "$name: pid $pid survived SIGKILL"
      rc=1
      continue
    fi
  fi
  log "$name: stopped"
  rm -f "$RUN/$name.pid"
done
exit "$rc"
