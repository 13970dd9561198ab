"""Minimal Azure Blob SharedKey client (Python stdlib only) for Azurite.

Used by start.sh to create the container and by check.py for raw conditional
requests. Endpoint is path-style, as Azurite serves it:
    http://127.0.0.1:PORT/devstoreaccount1

CLI:  python3 azblob.py mkcontainer ENDPOINT ACCOUNT KEY CONTAINER
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import sys
import urllib.parse

API_VERSION = "2021-12-02"


def request(
    endpoint: str,
    account: str,
    key: str,
    method: str,
    path: str,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 10.0,
) -> tuple[int, dict[str, str], bytes]:
    """Send one SharedKey-signed request. `path` is relative to the account
    endpoint, e.g. "/locks" or "/locks/some/blob". Returns (status, headers, body)."""
    u = urllib.parse.urlsplit(endpoint.rstrip("/"))
    full_path = u.path + path  # /devstoreaccount1/locks/blob
    query = dict(query or {})
    hdrs = {k.lower(): v for k, v in (headers or {}).items()}
    hdrs.setdefault("x-ms-date", email.utils.formatdate(usegmt=True))
    hdrs.setdefault("x-ms-version", API_VERSION)
    if body or method in ("PUT", "POST"):
        hdrs["content-length"] = str(len(body))

    def h(name: str) -> str:
        return hdrs.get(name, "")

    content_length = h("content-length")
    if content_length == "0":
        content_length = ""
    canon_headers = "".join(
        f"{k}:{hdrs[k].strip()}\n" for k in sorted(hdrs) if k.startswith("x-ms-")
    )
    # Path-style (emulator) URLs: canonical resource = /account + URL path,
    # so the account name appears twice.
    canon_resource = f"/{account}{urllib.parse.quote(full_path)}"
    for k in sorted(query, key=str.lower):
        canon_resource += f"\n{k.lower()}:{query[k]}"
    string_to_sign = "\n".join(
        [
            method,
            h("content-encoding"),
            h("content-language"),
            content_length,
            h("content-md5"),
            h("content-type"),
            "",  # Date: x-ms-date is used instead
            h("if-modified-since"),
            h("if-match"),
            h("if-none-match"),
            h("if-unmodified-since"),
            h("range"),
            canon_headers + canon_resource,
        ]
    )
    sig = base64.b64encode(
        hmac.new(base64.b64decode(key), string_to_sign.encode(), hashlib.sha256).digest()
    ).decode()
    hdrs["authorization"] = f"SharedKey {account}:{sig}"
    url = urllib.parse.quote(full_path)
    if query:
        url += "?" + urllib.parse.urlencode(query)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=timeout)
    try:
        conn.request(method, url, body=body if body or "content-length" in hdrs else None, headers=hdrs)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


def mkcontainer(endpoint: str, account: str, key: str, container: str) -> None:
    status, _, data = request(
        endpoint, account, key, "PUT", f"/{container}", query={"restype": "container"}
    )
    if status == 201:
        print(f"azblob: created container {container}", file=sys.stderr)
    elif status == 409 and b"ContainerAlreadyExists" in data:
        print(f"azblob: container {container} already exists", file=sys.stderr)
    else:
        raise SystemExit(
            f"azblob: creating container {container} failed: HTTP {status}: {data[:500]!r}"
        )


if __name__ == "__main__":
    if len(sys.argv) != 6 or sys.argv[1] != "mkcontainer":
        raise SystemExit("usage: azblob.py mkcontainer ENDPOINT ACCOUNT KEY CONTAINER")
    mkcontainer(*sys.argv[2:])
