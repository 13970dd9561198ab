#!/usr/bin/env bash
# Prove that each running test server enforces the conditions vfslock relies on
# (raw HTTP / sftp; see check.py). Usage: check.sh [--only s3,azblob,gcs,sftp] [--rounds N]
# Exits non-zero on any failure, or if a server is not running.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
RUN="$(pwd -P)/run"

[[ -f "$RUN/env" ]] || { echo "check.sh: $RUN/env missing; run start.sh first" >&2; exit 1; }
only="s3,azblob,gcs,sftp"
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
  [[ "${args[$i]}" == --only ]] && only="${args[$((i + 1))]:-}"
  [[ "${args[$i]}" == --only=* ]] && only="${args[$i]#--only=}"
done
missing=0
for name in ${only//,/ }; do
  pid="$(cat "$RUN/$name.pid" 2>/dev/null || true)"
  if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    echo "check.sh: $name is not running (no live pid in $RUN/$name.pid); run start.sh" >&2
    missing=1
  fi
done
((missing == 0)) || exit 1

# shellcheck disable=SC1091
. "$RUN/env"
exec "${PYTHON:-python3}" check.py "$@"
