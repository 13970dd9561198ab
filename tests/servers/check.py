#!/usr/bin/env python3
"""Prove, with raw HTTP (Python stdlib only), that each test server really
enforces the conditions vfslock relies on. Reads the VFSLOCK_TEST_* variables
that start.sh writes to run/env (check.sh sources it and calls this).

Per HTTP store (S3 = moto, Azure Blob = Azurite, GCS = cloudbox):
  * create-if-absent twice: the second one fails (S3 412, Azure 409/412, GCS 412)
    and the object keeps the first bytes;
  * conditional overwrite with a wrong version fails (412) and changes nothing;
    with the right version it succeeds and yields a new version;
  * conditional delete with a wrong / stale version fails (412) and the object
    stays; with the right version it is deleted;
  * a race: ROUNDS rounds of 2 concurrent create-if-absent on a fresh key:
    exactly one wins, the other gets the "exists" status, the stored bytes are
    the winner's.
S3 also: a request whose body stops half-way (a client on a cut link) does not
hold up the others (moto_single.py serializes requests only once their body is in).
SFTP: `sftp -b` with the test key and strict host-key checking against
~/.ssh/known_hosts can put / ls / rm a file in the root.

Exit status 0 only if every check passed; each failure is printed.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import azblob  # noqa: E402

PASSED: list[str] = []
FAILED: list[str] = []


def ok(cond: bool, what: str) -> bool:
    (PASSED if cond else FAILED).append(what)
    print(("  ok   " if cond else "  FAIL ") + what, flush=True)
    return cond


def env(name: str) -> str:
    v = os.environ.get(name)
    if not v:
        raise SystemExit(f"check.py: {name} is not set (source tests/servers/run/env first)")
    return v


def hreq(method: str, url: str, headers: dict[str, str] | None = None, body: bytes | None = None):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port or 80, timeout=20)
    try:
        path = u.path + (f"?{u.query}" if u.query else "")
        hdrs = dict(headers or {})
        if body is None and method in ("PUT", "POST"):
            body = b""
        conn.request(method, path, body=body, headers=hdrs)
        r = conn.getresponse()
        data = r.read()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, data
    finally:
        conn.close()


WRITERS = 2
PAD = 0  # extra bytes per race body (bigger bodies widen a check-then-store window)


def race(label: str, rounds: int, create, read, win: set[int], lose: set[int]) -> None:
    """WRITERS threads race to create-if-absent one fresh key per round.
    `create(key, body)` -> status; `read(key)` -> (status, bytes), and deletes the key."""
    bad = []
    for r in range(rounds):
        key = f"vfslock-check/race-{uuid.uuid4().hex}"
        barrier = threading.Barrier(WRITERS)
        results: list[tuple[int, bytes] | None] = [None] * WRITERS
        errors: list[BaseException] = []

        def worker(i: int) -> None:
            body = f"{label} round {r} writer {i} {uuid.uuid4().hex}".encode() + b"." * PAD
            try:
                barrier.wait(timeout=10)
                results[i] = (create(key, body), body)
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(WRITERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            bad.append(f"round {r}: {errors[0]!r}")
            continue
        statuses = [res[0] for res in results]  # type: ignore[index]
        winners = [i for i, s in enumerate(statuses) if s in win]
        losers = [i for i, s in enumerate(statuses) if s in lose]
        if len(winners) != 1 or len(losers) != WRITERS - 1:
            bad.append(f"round {r}: statuses {statuses} (want exactly one of {sorted(win)}, the rest {sorted(lose)})")
            continue
        st, stored = read(key)
        if st != 200 or stored != results[winners[0]][1]:  # type: ignore[index]
            bad.append(f"round {r}: stored bytes are not the winner's (GET {st}: {stored[:80]!r})")
    ok(not bad, f"{label}: {rounds} rounds x {WRITERS} concurrent create-if-absent: exactly one winner each"
       + ("" if not bad else " -- " + "; ".join(bad[:5])))


# --------------------------------------------------------------------------- S3


def sigv4(method: str, url: str, headers: dict[str, str], body: bytes,
          access_key: str, secret_key: str, region: str) -> dict[str, str]:
    """AWS Signature V4 headers for one S3 request (moto treats unsigned requests
    as anonymous and answers 403 to most of them)."""
    u = urllib.parse.urlsplit(url)
    now = time.gmtime()
    amz_date, day = time.strftime("%Y%m%dT%H%M%SZ", now), time.strftime("%Y%m%d", now)
    payload = hashlib.sha256(body).hexdigest()
    hdrs = {k.lower(): v.strip() for k, v in headers.items()}
    hdrs.update({"host": u.netloc, "x-amz-date": amz_date, "x-amz-content-sha256": payload})
    signed = ";".join(sorted(hdrs))
    query = "&".join(
        f"{urllib.parse.quote(k, safe='-_.~')}={urllib.parse.quote(v, safe='-_.~')}"
        for k, v in sorted(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
    )
    canonical = "\n".join([
        method, u.path or "/", query,
        "".join(f"{k}:{hdrs[k]}\n" for k in sorted(hdrs)), signed, payload,
    ])
    scope = f"{day}/{region}/s3/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret_key).encode()
    for part in (day, region, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    out = dict(headers)
    out.update({"x-amz-date": amz_date, "x-amz-content-sha256": payload,
                "Authorization": f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, "
                                 f"SignedHeaders={signed}, Signature={sig}"})
    return out


def check_s3(rounds: int) -> None:
    ep, bucket = env("VFSLOCK_TEST_S3_ENDPOINT").rstrip("/"), env("VFSLOCK_TEST_S3_BUCKET")
    creds = (env("VFSLOCK_TEST_S3_ACCESS_KEY_ID"), env("VFSLOCK_TEST_S3_SECRET_ACCESS_KEY"),
             env("VFSLOCK_TEST_S3_REGION"))
    print(f"S3 (moto) at {ep}, bucket {bucket}")

    def s3req(method: str, u: str, headers: dict[str, str] | None = None, body: bytes | None = None):
        return hreq(method, u, sigv4(method, u, headers or {}, body or b"", *creds), body)

    def url(key: str) -> str:
        return f"{ep}/{bucket}/{urllib.parse.quote(key)}"

    def get(key: str):
        s, _, d = s3req("GET", url(key))
        return s, d

    key = f"vfslock-check/{uuid.uuid4().hex}"
    b1, b2, b3 = b"first holder", b"second holder", b"intruder"
    s, h, _ = s3req("PUT", url(key), {"If-None-Match": "*"}, b1)
    ok(s == 200, f"s3: first PUT If-None-Match:* -> {s} (want 200)")
    etag1 = h.get("etag", "")
    s, _, _ = s3req("PUT", url(key), {"If-None-Match": "*"}, b3)
    ok(s == 412, f"s3: second PUT If-None-Match:* -> {s} (want 412)")
    ok(get(key) == (200, b1), "s3: object unchanged after the failed create")
    s, _, _ = s3req("PUT", url(key), {"If-Match": '"0123456789abcdef0123456789abcdef"'}, b3)
    ok(s == 412, f"s3: PUT If-Match:<wrong etag> -> {s} (want 412)")
    ok(get(key) == (200, b1), "s3: object unchanged after the failed overwrite")
    s, h, _ = s3req("PUT", url(key), {"If-Match": etag1}, b2)
    ok(s == 200, f"s3: PUT If-Match:<current etag> -> {s} (want 200)")
    etag2 = h.get("etag", "")
    ok(bool(etag2) and etag2 != etag1, f"s3: overwrite returned a new etag ({etag1} -> {etag2})")
    s, _, _ = s3req("DELETE", url(key), {"If-Match": etag1})
    ok(s == 412, f"s3: DELETE If-Match:<stale etag> -> {s} (want 412)")
    ok(get(key) == (200, b2), "s3: object still there after the failed delete")
    s, _, _ = s3req("DELETE", url(key), {"If-Match": etag2})
    ok(s == 204, f"s3: DELETE If-Match:<current etag> -> {s} (want 204)")
    ok(get(key)[0] == 404, "s3: object gone after the conditional delete")

    def create(k: str, body: bytes) -> int:
        return s3req("PUT", url(k), {"If-None-Match": "*"}, body)[0]

    def read(k: str):
        res = get(k)
        s3req("DELETE", url(k))
        return res

    if rounds:
        race("s3", rounds, create, read, {200}, {412})

    # A PUT that announces 1000 bytes and sends 10, then stalls: the next request must
    # still be served.
    host = urllib.parse.urlsplit(ep)
    stalled = socket.create_connection((host.hostname, host.port or 80), timeout=5)
    try:
        stalled.sendall(
            f"PUT /{bucket}/vfslock-check/stalled HTTP/1.1\r\nHost: {host.netloc}\r\n"
            "Content-Length: 1000\r\n\r\n0123456789".encode()
        )
        time.sleep(0.2)
        started = time.monotonic()
        key = f"vfslock-check/{uuid.uuid4().hex}"
        s, _, _ = s3req("PUT", url(key), {"If-None-Match": "*"}, b"beside a stalled request")
        took = time.monotonic() - started
        ok(s == 200 and took < 5,
           f"s3: a PUT beside a stalled half-sent request -> {s} in {took:.2f} s (want 200, < 5 s)")
        s3req("DELETE", url(key))
    finally:
        stalled.close()


# --------------------------------------------------------------------------- Azure


def check_azblob(rounds: int) -> None:
    ep = env("VFSLOCK_TEST_AZBLOB_ENDPOINT").rstrip("/")
    container = env("VFSLOCK_TEST_AZBLOB_CONTAINER")
    account, key_b64 = env("VFSLOCK_TEST_AZBLOB_ACCOUNT"), env("VFSLOCK_TEST_AZBLOB_KEY")
    print(f"Azure Blob (Azurite) at {ep}, container {container}")

    def req(method: str, blob: str, headers: dict[str, str] | None = None, body: bytes = b""):
        return azblob.request(ep, account, key_b64, method, f"/{container}/{blob}", headers=headers, body=body)

    def put(blob: str, body: bytes, cond: dict[str, str]):
        return req("PUT", blob, {"x-ms-blob-type": "BlockBlob", **cond}, body)

    def get(blob: str):
        s, _, d = req("GET", blob)
        return s, d

    blob = f"vfslock-check/{uuid.uuid4().hex}"
    b1, b2, b3 = b"first holder", b"second holder", b"intruder"
    s, h, _ = put(blob, b1, {"If-None-Match": "*"})
    ok(s == 201, f"azblob: first PUT If-None-Match:* -> {s} (want 201)")
    etag1 = h.get("etag", "")
    s, _, _ = put(blob, b3, {"If-None-Match": "*"})
    ok(s in (409, 412), f"azblob: second PUT If-None-Match:* -> {s} (want 409 or 412)")
    ok(get(blob) == (200, b1), "azblob: blob unchanged after the failed create")
    s, _, _ = put(blob, b3, {"If-Match": '"0x8D000000DEADBEE"'})
    ok(s == 412, f"azblob: PUT If-Match:<wrong etag> -> {s} (want 412)")
    ok(get(blob) == (200, b1), "azblob: blob unchanged after the failed overwrite")
    s, h, _ = put(blob, b2, {"If-Match": etag1})
    ok(s == 201, f"azblob: PUT If-Match:<current etag> -> {s} (want 201)")
    etag2 = h.get("etag", "")
    ok(bool(etag2) and etag2 != etag1, f"azblob: overwrite returned a new etag ({etag1} -> {etag2})")
    s, _, _ = req("DELETE", blob, {"If-Match": etag1})
    ok(s == 412, f"azblob: DELETE If-Match:<stale etag> -> {s} (want 412)")
    ok(get(blob) == (200, b2), "azblob: blob still there after the failed delete")
    s, _, _ = req("DELETE", blob, {"If-Match": etag2})
    ok(s == 202, f"azblob: DELETE If-Match:<current etag> -> {s} (want 202)")
    ok(get(blob)[0] == 404, "azblob: blob gone after the conditional delete")

    def create(k: str, body: bytes) -> int:
        return put(k, body, {"If-None-Match": "*"})[0]

    def read(k: str):
        res = get(k)
        req("DELETE", k)
        return res

    if rounds:
        race("azblob", rounds, create, read, {201}, {409, 412})


# --------------------------------------------------------------------------- GCS


def check_gcs(rounds: int) -> None:
    ep, bucket = env("VFSLOCK_TEST_GCS_ENDPOINT").rstrip("/"), env("VFSLOCK_TEST_GCS_BUCKET")
    print(f"GCS (cloudbox) at {ep}, bucket {bucket}")

    def obj_url(name: str, **q: str) -> str:
        qs = f"?{urllib.parse.urlencode(q)}" if q else ""
        return f"{ep}/storage/v1/b/{bucket}/o/{urllib.parse.quote(name, safe='')}{qs}"

    def media(name: str, body: bytes, gen: str | None):
        q = {"uploadType": "media", "name": name}
        if gen is not None:
            q["ifGenerationMatch"] = gen
        s, _, d = hreq("POST", f"{ep}/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(q)}",
                       {"Content-Type": "application/octet-stream"}, body)
        return s, (json.loads(d) if s == 200 else d)

    def resumable(name: str, body: bytes, gen: str | None):
        """The path OpenDAL takes for conditional writes: initiate, then PUT to Location."""
        q = {"uploadType": "resumable", "name": name}
        if gen is not None:
            q["ifGenerationMatch"] = gen
        s, h, d = hreq("POST", f"{ep}/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(q)}",
                       {"Content-Type": "application/json; charset=UTF-8"}, json.dumps({"name": name}).encode())
        if s != 200:
            return s, d
        loc = h.get("location", "")
        if not loc.startswith("http://"):
            return -1, f"resumable Location is not absolute: {loc!r}".encode()
        s, _, d = hreq("PUT", loc, {"Content-Type": "application/octet-stream"}, body)
        return s, (json.loads(d) if s == 200 else d)

    def multipart(name: str, body: bytes, gen: str | None):
        """OpenDAL's single-request insert when it sends metadata (e.g. a content type)."""
        q = {"uploadType": "multipart"}
        if gen is not None:
            q["ifGenerationMatch"] = gen
        b = "vfslock-check-boundary"
        payload = (f"--{b}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
                   + json.dumps({"name": name, "contentType": "application/octet-stream"})
                   + f"\r\n--{b}\r\nContent-Type: application/octet-stream\r\n\r\n").encode() \
            + body + f"\r\n--{b}--\r\n".encode()
        s, _, d = hreq("POST", f"{ep}/upload/storage/v1/b/{bucket}/o?{urllib.parse.urlencode(q)}",
                       {"Content-Type": f"multipart/related; boundary={b}"}, payload)
        return s, (json.loads(d) if s == 200 else d)

    def get(name: str):
        s, _, d = hreq("GET", obj_url(name, alt="media"))
        return s, d

    def delete(name: str, gen: str | None):
        return hreq("DELETE", obj_url(name, **({"ifGenerationMatch": gen} if gen else {})))[0]

    name = f"vfslock-check/{uuid.uuid4().hex}"
    b1, b2, b3 = b"first holder", b"second holder", b"intruder"
    s, meta = media(name, b1, "0")
    ok(s == 200, f"gcs: first upload ifGenerationMatch=0 -> {s} (want 200)")
    gen1 = meta.get("generation", "") if s == 200 else ""
    s, _ = media(name, b3, "0")
    ok(s == 412, f"gcs: second media upload ifGenerationMatch=0 -> {s} (want 412)")
    s, _ = resumable(name, b3, "0")
    ok(s == 412, f"gcs: second resumable upload ifGenerationMatch=0 -> {s} (want 412)")
    s, _ = multipart(name, b3, "0")
    ok(s == 412, f"gcs: second multipart upload ifGenerationMatch=0 -> {s} (want 412)")
    ok(get(name) == (200, b1), "gcs: object unchanged after the failed creates")
    wrong = str(int(gen1 or "0") + 777)
    s, _ = media(name, b3, wrong)
    ok(s == 412, f"gcs: media upload ifGenerationMatch=<wrong> -> {s} (want 412)")
    s, _ = resumable(name, b3, wrong)
    ok(s == 412, f"gcs: resumable upload ifGenerationMatch=<wrong> -> {s} (want 412)")
    s, _ = multipart(name, b3, wrong)
    ok(s == 412, f"gcs: multipart upload ifGenerationMatch=<wrong> -> {s} (want 412)")
    ok(get(name) == (200, b1), "gcs: object unchanged after the failed overwrites")
    s, meta = resumable(name, b2, gen1)
    ok(s == 200, f"gcs: resumable upload ifGenerationMatch=<current> -> {s} (want 200)")
    gen2 = meta.get("generation", "") if s == 200 else ""
    ok(bool(gen2) and gen2 != gen1, f"gcs: overwrite returned a new generation ({gen1} -> {gen2})")
    s = delete(name, gen1)
    ok(s == 412, f"gcs: DELETE ifGenerationMatch=<stale> -> {s} (want 412)")
    ok(get(name) == (200, b2), "gcs: object still there after the failed delete")
    s = delete(name, gen2)
    ok(s in (200, 204), f"gcs: DELETE ifGenerationMatch=<current> -> {s} (want 204)")
    ok(get(name)[0] == 404, "gcs: object gone after the conditional delete")
    # ABA: a re-created object must get a generation never seen before
    # (real GCS does; stock cloudbox restarts at 1, patch 3 fixes that).
    s, meta = media(name, b1, "0")
    gen3 = meta.get("generation", "") if s == 200 else ""
    ok(s == 200 and gen3 not in (gen1, gen2),
       f"gcs: re-created object gets a fresh generation ({gen1}, {gen2} -> {gen3})")
    s = delete(name, gen1)
    ok(s == 412, f"gcs: DELETE with the first incarnation's generation -> {s} (want 412)")
    delete(name, None)

    def create(k: str, body: bytes) -> int:
        # alternate the two upload paths; OpenDAL uses the resumable one
        fn = resumable if int(k[-1], 16) & 1 else media
        return fn(k, body, "0")[0]

    def read(k: str):
        res = get(k)
        delete(k, None)
        return res

    if rounds:
        race("gcs", rounds, create, read, {200}, {412})


# --------------------------------------------------------------------------- SFTP


def check_sftp() -> None:
    ep = urllib.parse.urlsplit(env("VFSLOCK_TEST_SFTP_ENDPOINT"))
    key, root = env("VFSLOCK_TEST_SFTP_KEY"), env("VFSLOCK_TEST_SFTP_ROOT").rstrip("/")
    print(f"SFTP (OpenSSH) at {ep.geturl()}, root {root}")
    name = f"vfslock-check-{uuid.uuid4().hex}"
    base = [
        "sftp", "-q", "-b", "-", "-i", key, "-P", str(ep.port or 22),
        "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "StrictHostKeyChecking=yes",
        "-o", "ConnectTimeout=10", f"{ep.username}@{ep.hostname}",
    ]
    with tempfile.NamedTemporaryFile("wb", suffix=".lock") as f:
        f.write(b"sftp lock body\n")
        f.flush()
        batch = f"put {f.name} {root}/{name}\nls -l {root}/{name}\nrm {root}/{name}\n"
        p = subprocess.run(base, input=batch, capture_output=True, text=True, timeout=60)
    ok(p.returncode == 0 and name in p.stdout,
       f"sftp: put/ls/rm in {root} with the test key and strict known_hosts -> exit {p.returncode}"
       + ("" if p.returncode == 0 else f": {p.stderr.strip()[-400:]}"))
    p = subprocess.run(base, input=f"ls {root}/{name}\n", capture_output=True, text=True, timeout=60)
    ok(p.returncode != 0, "sftp: file gone after rm")


def main() -> None:
    ap = argparse.ArgumentParser(description="raw-protocol checks of the vfslock test servers")
    ap.add_argument("--only", default="s3,azblob,gcs,sftp", help="comma-separated subset")
    ap.add_argument("--rounds", type=int, default=20, help="race rounds per HTTP store (0 = none)")
    ap.add_argument("--pad", type=int, default=0, help="extra bytes in each race body")
    ap.add_argument("--writers", type=int, default=2, help="concurrent creators per race round")
    a = ap.parse_args()
    global WRITERS, PAD
    WRITERS, PAD = max(2, a.writers), max(0, a.pad)
    checks = {"s3": check_s3, "azblob": check_azblob, "gcs": check_gcs, "sftp": check_sftp}
    t0 = time.monotonic()
    for name in [n.strip() for n in a.only.split(",") if n.strip()]:
        if name not in checks:
            raise SystemExit(f"unknown server {name!r}; known: {', '.join(checks)}")
        try:
            checks[name](a.rounds) if name != "sftp" else checks[name]()
        except (OSError, http.client.HTTPException, subprocess.SubprocessError, ValueError) as e:
            ok(False, f"{name}: request failed: {e!r}")
    print(f"check: {len(PASSED)} passed, {len(FAILED)} failed ({time.monotonic() - t0:.1f} s)")
    if FAILED:
        print("FAILED checks:\n  " + "\n  ".join(FAILED), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
