"""Serve moto's S3 (and the rest of moto) ONE REQUEST AT A TIME.

The stock `moto_server` runs werkzeug with threaded=True. moto's S3 handler checks
If-None-Match / If-Match and then stores the object without a lock, so two
concurrent conditional creates can both win now and then (measured: 2/50 and
1/200 double wins). Serving the very same WSGI app with threaded=False makes
each request run to completion before the next one is read (HTTP/1.0, one
connection at a time), which removes that race.

Run with the venv's python:  .venv-moto/bin/python moto_single.py --port 19100
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--access-log", action="store_true", help="log every request (werkzeug INFO)")
    args = parser.parse_args()

    # werkzeug logs one line per request at INFO; keep the log small unless asked.
    # Errors and tracebacks are still logged.
    if not args.access_log:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    # moto uses MOTO_PORT to build some URLs in its answers.
    os.environ.setdefault("MOTO_PORT", str(args.port))

    def _exit(signum, frame):  # noqa: ARG001
        sys.exit(0)

    signal.signal(signal.SIGTERM, _exit)
    signal.signal(signal.SIGINT, _exit)

    app = DomainDispatcherApplication(create_backend_app)
    print(f"moto (single-threaded) serving on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    run_simple(
        args.host,
        args.port,
        app,
        threaded=False,
        processes=1,
        use_reloader=False,
        use_debugger=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
