"""Serve moto's S3 (and the rest of moto) with its requests SERIALIZED, on threads.

The stock `moto_server` runs werkzeug with threaded=True. moto's S3 handler checks
If-None-Match / If-Match and then stores the object without a lock, so two
concurrent conditional creates can both win now and then (measured: 2/50 and
1/200 double wins).

Serving one request at a time (threaded=False) closes that race, but then one
connection that stops mid-request (a client on a cut network link, half a body
sent) blocks the server for everyone: it waits for the rest of the body forever.

So this server is threaded (one thread per connection, HTTP/1.1 keep-alive), and
a WSGI wrapper runs moto under one global lock that a request takes only once it
has read its whole body, and releases once the whole response body is built:
  1. read wsgi.input fully into a buffer (no lock held: a stalled client stalls
     only its own thread);
  2. take the lock; call moto with the buffered body; materialize the response
     (every chunk of the iterable, and anything written through write());
  3. release the lock; send the response (again without the lock).
moto's check-then-store therefore never runs for two requests at once, as with
threaded=False, while a cut connection hangs only its own thread.

Run with the venv's python:  .venv-moto/bin/python moto_single.py --port 19100
"""

from __future__ import annotations

import argparse
import io
import logging
import os
import signal
import sys
import threading

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

# Read request bodies in pieces of this size.
READ_CHUNK = 64 * 1024


def read_body(environ) -> bytes:
    """The whole request body: CONTENT_LENGTH bytes, or (chunked) up to its end."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length.strip().isdigit():
        remaining = int(length)
        parts = []
        while remaining > 0:
            part = stream.read(min(remaining, READ_CHUNK))
            if not part:
                break  # the client went away; moto sees what arrived
            parts.append(part)
            remaining -= len(part)
        return b"".join(parts)
    if environ.get("wsgi.input_terminated"):
        # Chunked transfer: werkzeug's stream ends where the body ends.
        return stream.read()
    return b""


class Serialized:
    """Runs a WSGI app under one lock, taken after the request body has been read."""

    def __init__(self, app) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        body = read_body(environ)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        # The body is now a plain buffer of known length.
        environ.pop("wsgi.input_terminated", None)
        environ.pop("HTTP_TRANSFER_ENCODING", None)
        started = []
        written = []

        def capture(status, headers, exc_info=None):
            started[:] = [status, headers, exc_info]
            return written.append

        with self.lock:
            result = self.app(environ, capture)
            try:
                chunks = written + [bytes(chunk) for chunk in result]
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
        status, headers, exc_info = started
        start_response(status, headers, exc_info)
        return chunks


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

    app = Serialized(DomainDispatcherApplication(create_backend_app))
    print(
        f"moto (threaded, requests serialized after their body is read) serving on "
        f"http://{args.host}:{args.port}",
        file=sys.stderr,
        flush=True,
    )
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        processes=1,
        use_reloader=False,
        use_debugger=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
