"""Patch the installed cloudbox 0.2.3 so that its GCS app works for vfslock's tests.

Run with the venv's python (idempotent; fails loudly if an anchor is missing):
    .venv-gcs/bin/python patch_cloudbox.py

1. cloudbox declares Python >= 3.14 and relies on deferred evaluation of
   annotations (PEP 649): e.g. `def keys(...) -> list[str]` inside a class that
   also defines a method `list` fails on 3.11-3.13. Prepending
   `from __future__ import annotations` to every module fixes that.
2. The resumable-upload session answers with a relative `Location`. OpenDAL's
   GCS writer (used for every conditional write) follows Location as a full URL,
   so make it absolute (built from the request's own base URL).
3. cloudbox numbers generations per object from 1, so after delete + re-create a
   stale generation matches again (ABA). Real GCS generations are unique
   (microsecond timestamps). Hand out generations from one process-wide,
   strictly increasing counter seeded with the time in microseconds instead.
"""

from __future__ import annotations

import pathlib
import sys

import cloudbox

FUTURE = "from __future__ import annotations"
MARK = "# vfslock-test-servers patch"


def patch_future(root: pathlib.Path) -> int:
    n = 0
    for path in sorted(root.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if any(line.startswith(FUTURE) for line in text.splitlines()):
            continue
        if text.startswith("#!") or text.startswith("# -*-"):
            raise SystemExit(f"unexpected first line in {path}; patch by hand")
        path.write_text(f"{FUTURE}  {MARK} 1\n{text}", encoding="utf-8")
        n += 1
    return n


def replace_once(path: pathlib.Path, old: str, new: str, done_marker: str) -> bool:
    text = path.read_text(encoding="utf-8")
    if done_marker in text:
        return False
    if text.count(old) != 1:
        raise SystemExit(f"patch anchor not found exactly once in {path}:\n{old}")
    path.write_text(text.replace(old, new), encoding="utf-8")
    return True


def main() -> None:
    root = pathlib.Path(cloudbox.__file__).resolve().parent
    app = root / "services" / "gcs" / "app.py"
    n = patch_future(root)

    p2 = replace_once(
        app,
        '    return Response(status_code=200, headers={"Location": location})\n',
        f"    location = str(request.base_url).rstrip(\"/\") + location  {MARK} 2\n"
        '    return Response(status_code=200, headers={"Location": location})\n',
        f"{MARK} 2",
    )

    p3 = replace_once(
        app,
        '    generation = str(int(existing["generation"]) + 1) if existing else "1"\n',
        f"    generation = _vfslock_next_generation()  {MARK} 3\n",
        f"{MARK} 3",
    )
    if p3:
        text = app.read_text(encoding="utf-8")
        anchor = "def _store_object("
        helper = (
            f"{MARK} 3: unique, increasing generations like real GCS\n"
            "_vfslock_last_generation = 0\n\n\n"
            "def _vfslock_next_generation() -> str:\n"
            "    import time\n\n"
            "    global _vfslock_last_generation\n"
            "    _vfslock_last_generation = max(time.time_ns() // 1000, _vfslock_last_generation + 1)\n"
            "    return str(_vfslock_last_generation)\n\n\n"
        )
        if text.count(anchor) != 1:
            raise SystemExit(f"patch anchor {anchor!r} not found exactly once in {app}")
        app.write_text(text.replace(anchor, helper + anchor), encoding="utf-8")

    # Prove the GCS app imports on this Python.
    import importlib

    importlib.import_module("cloudbox.services.gcs.app")
    print(
        f"cloudbox patched in {root}: future-import added to {n} module(s), "
        f"absolute Location {'applied' if p2 else 'already present'}, "
        f"unique generations {'applied' if p3 else 'already present'}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
