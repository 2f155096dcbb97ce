#!/usr/bin/env python3
"""A real registry for bench/push.sh, behind a byte-counting proxy.

usage: registry.py serve DIR [--chaos SEED:P503:PDROP:P429]
                                  run docker-registry (CNCF distribution) on a free
                                  127.0.0.1 port with fresh storage DIR/storage, and a
                                  counting proxy in front of it; writes DIR/state.json
                                  ({port, proxy_port, pid, registry_pid}) once both
                                  answer; stops the registry on SIGTERM or SIGINT
       registry.py counts DIR     the proxy's counters, once no connection is open
       registry.py log DIR [--from LINE]
                                  what the access log says (from that line on):
                                  completed uploads, mounts, manifest puts, errors
       registry.py stored DIR     blobs in the registry's storage: count and bytes
       registry.py snapshot DIR   log length, counters and the registry's CPU time
                                  now, for --since
       registry.py record DIR --out FILE --kind K [--round R] [--since SNAP]
                          [--counts] [--push-json STDOUT]
                                  append one JSON line: log summary, the registry's
                                  CPU time (and counters) since SNAP, storage, and
                                  the sums of the stats of
                                  `imgbuild push --json` when given its stdout
       registry.py verify DIR RESULT --manifests N --bytes B [--since SNAP]
                                  mark a measure.py RESULT failed unless the registry
                                  got N manifests and stores at least B bytes
       registry.py tags DIR PREFIX TAG NAME...
                                  whether PREFIX/NAME:TAG is PREFIX/NAME:latest, each NAME
       registry.py complete DIR PREFIX OCI_DIR NAME...
                                  how many PREFIX/NAME:latest name the layout's
                                  manifest of NAME with every blob it names stored
                                  (asked of the registry directly)
       registry.py layout OCI_DIR NAME...
                                  the blobs (configs, layers) and manifests that these
                                  images of an OCI layout name: unique count, bytes

The proxy (127.0.0.1:PROXY_PORT -> 127.0.0.1:PORT) forwards bytes as they come and
counts them both ways. In the client-to-registry direction it also reads the HTTP/1.1
framing (request heads, Content-Length and chunked bodies), to split what it forwards
into request heads, blob upload bodies (POST/PATCH/PUT .../blobs/uploads/...),
manifest bodies (PUT .../manifests/...) and other bodies. A stream it cannot parse is
forwarded as it is and counted only in the total. Counters are rewritten to
DIR/counts.json whenever a connection closes.

With --chaos the proxy is another one: it passes one request at a time and, drawing
from SEED, answers a fraction P503 of requests 503, P429 429 with `Retry-After: 1`,
and cuts a fraction PDROP of connections (before the request is read, mid-body of
the request or else of the answer, or after the request but before its answer, each
a third). What it injected is rewritten to DIR/chaos.json as it goes.
"""

import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

BUF = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


class Counters:
    def __init__(self, path):
        self.path = path
        self.lock = threading.Lock()
        self.c = {"connections": 0, "open": 0, "requests": 0, "up_bytes": 0, "down_bytes": 0,
                  "head_bytes": 0, "blob_body_bytes": 0, "manifest_body_bytes": 0,
                  "other_body_bytes": 0, "chunk_framing_bytes": 0, "unparsed_bytes": 0,
                  "by_method": {}}
        self.save()

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                self.c[k] += v

    def request(self, method):
        with self.lock:
            self.c["requests"] += 1
            self.c["by_method"][method] = self.c["by_method"].get(method, 0) + 1

    def save(self):
        with self.lock:
            write_json(self.path, self.c)


def kind_of(method, target):
    path = target.split("?", 1)[0]
    if "/blobs/uploads" in path and method in ("POST", "PATCH", "PUT"):
        return "blob_body_bytes"
    if "/manifests/" in path and method == "PUT":
        return "manifest_body_bytes"
    return "other_body_bytes"


def pump_raw(src, dst, counters, key):
    """Forward until EOF; returns nothing. Counts into `key` and the direction total."""
    buf = bytearray(BUF)
    view = memoryview(buf)
    total = "down_bytes" if key == "down_bytes" else "up_bytes"
    while True:
        n = src.recv_into(buf)
        if n == 0:
            return
        dst.sendall(view[:n])
        if key == total:
            counters.add(**{total: n})
        else:
            counters.add(**{total: n, key: n})


def pump_requests(client, upstream, counters):
    """Forward client -> registry, parsing the HTTP/1.1 framing to count by kind."""
    r = client.makefile("rb", buffering=BUF)

    def send(data, key):
        upstream.sendall(data)
        counters.add(up_bytes=len(data), **{key: len(data)})

    def body(n, key):
        while n > 0:
            data = r.read1(min(n, BUF))
            if not data:
                raise EOFError("inside a body")
            send(data, key)
            n -= len(data)

    try:
        while True:
            first = r.peek(1)[:1]
            if not first:
                return
            if not first.isalpha():
                # Not a request line: a TLS ClientHello (a client trying https
                # first), say. Never wait for a line end that may not come.
                raise ValueError("not HTTP/1.1")
            line = r.readline(65536)
            head = [line]
            while line not in (b"\r\n", b"\n"):
                line = r.readline(65536)
                if not line:
                    raise EOFError("inside a head")
                head.append(line)
            raw = b"".join(head)
            text = raw.decode("latin-1")
            start, _, rest = text.partition("\n")
            parts = start.split()
            method, target = (parts + ["", ""])[:2]
            headers = {}
            for h in rest.split("\n"):
                k, sep, v = h.partition(":")
                if sep:
                    headers.setdefault(k.strip().lower(), []).append(v.strip())
            send(raw, "head_bytes")
            counters.request(method)
            key = kind_of(method, target)
            te = ",".join(headers.get("transfer-encoding", [])).lower()
            if "chunked" in te:
                while True:
                    size_line = r.readline(65536)
                    if not size_line:
                        raise EOFError("inside a chunked body")
                    send(size_line, "chunk_framing_bytes")
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while True:
                            t = r.readline(65536)
                            if not t:
                                raise EOFError("inside trailers")
                            send(t, "chunk_framing_bytes")
                            if t in (b"\r\n", b"\n"):
                                break
                        break
                    body(size, key)
                    send(r.readline(65536), "chunk_framing_bytes")
            else:
                n = int((headers.get("content-length") or ["0"])[0] or 0)
                body(n, key)
    except (ValueError, EOFError):
        # Not HTTP/1.1 as we know it: forward the rest as it is.
        while True:
            data = r.read1(BUF)
            if not data:
                return
            send(data, "unparsed_bytes")


def serve_conn(client, port, counters):
    counters.add(connections=1, open=1)
    try:
        upstream = socket.create_connection(("127.0.0.1", port))
    except OSError:
        client.close()
        counters.add(open=-1)
        counters.save()
        return
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def down():
        try:
            pump_raw(upstream, client, counters, "down_bytes")
        except OSError:
            pass
        try:
            client.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    t = threading.Thread(target=down, daemon=True)
    t.start()
    try:
        pump_requests(client, upstream, counters)
    except OSError:
        pass
    try:
        upstream.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    t.join()
    client.close()
    upstream.close()
    counters.add(open=-1)
    counters.save()


class Chaos:
    """Seeded fault draws, and what was injected."""

    def __init__(self, spec, path):
        seed, p503, pdrop, p429 = spec.split(":")
        self.rng = random.Random(int(seed))
        self.p503, self.pdrop, self.p429 = float(p503), float(pdrop), float(p429)
        self.path = path
        self.lock = threading.Lock()
        self.c = {"requests": 0, "503": 0, "429": 0, "cut_before_request": 0,
                  "cut_mid_body": 0, "cut_before_answer": 0}

    def draw(self):
        with self.lock:
            self.c["requests"] += 1
            u = self.rng.random()
            if u < self.p503:
                fault = "503"
            elif u < self.p503 + self.p429:
                fault = "429"
            elif u < self.p503 + self.p429 + self.pdrop:
                fault = self.rng.choice(["cut_before_request", "cut_mid_body", "cut_before_answer"])
            else:
                fault = None
            if fault:
                self.c[fault] += 1
            if self.c["requests"] % 20 == 0:
                write_json(self.path, self.c)
            return fault

    def save(self):
        with self.lock:
            write_json(self.path, self.c)


def read_head(r):
    """(start line, {lower name: [values]}, raw bytes), or None at EOF."""
    line = r.readline(65536)
    if not line:
        return None
    head = [line]
    while line not in (b"\r\n", b"\n"):
        line = r.readline(65536)
        if not line:
            raise EOFError("inside a head")
        head.append(line)
    raw = b"".join(head)
    text = raw.decode("latin-1")
    start, _, rest = text.partition("\n")
    headers = {}
    for h in rest.split("\n"):
        k, sep, v = h.partition(":")
        if sep:
            headers.setdefault(k.strip().lower(), []).append(v.strip())
    return start.strip(), headers, raw


def framing(headers, no_body=False, request=False):
    """("none"|"chunked"|"length"|"close", length): a request without a length has
    no body; an answer without one runs until the connection closes."""
    if no_body:
        return "none", 0
    if "chunked" in ",".join(headers.get("transfer-encoding", [])).lower():
        return "chunked", 0
    if "content-length" in headers:
        n = int(headers["content-length"][0] or 0)
        return ("length", n) if n else ("none", 0)
    return ("none", 0) if request else ("close", 0)


class Cut(Exception):
    """The valve's limit was reached: the connection is to be cut."""


class Valve:
    """Passes at most `left` bytes (all when None), then raises Cut."""

    def __init__(self, w, left):
        self.w, self.left = w, left

    def sendall(self, data):
        if self.left is not None:
            if len(data) > self.left:
                self.w.sendall(data[:self.left])
                raise Cut()
            self.left -= len(data)
        self.w.sendall(data)


def copy_body(r, w, kind, n, limit=None):
    """Forward a body as it is on the wire; with `limit`, only that many bytes, and
    False (the connection is to be cut)."""
    try:
        pass_body(r, Valve(w, limit), kind, n)
        return True
    except Cut:
        return False


def pass_body(r, w, kind, n):
    if kind == "length":
        while n > 0:
            data = r.read1(min(n, BUF))
            if not data:
                raise EOFError("inside a body")
            w.sendall(data)
            n -= len(data)
    elif kind == "close":
        while True:
            data = r.read1(BUF)
            if not data:
                return
            w.sendall(data)
    elif kind == "chunked":
        while True:
            size_line = r.readline(65536)
            if not size_line:
                raise EOFError("inside a chunked body")
            w.sendall(size_line)
            size = int(size_line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = r.readline(65536)
                    if not t:
                        raise EOFError("inside trailers")
                    w.sendall(t)
                    if t in (b"\r\n", b"\n"):
                        return
            pass_body(r, w, "length", size)
            w.sendall(r.readline(65536))


class Sink:
    def sendall(self, data):
        pass


def fault_answer(status, close):
    reason = {503: "Service Unavailable", 429: "Too Many Requests"}[status]
    code = {503: "UNAVAILABLE", 429: "TOOMANYREQUESTS"}[status]
    body = json.dumps({"errors": [{"code": code, "message": f"{reason} (injected)"}]}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n")
    if status == 429:
        head += "Retry-After: 1\r\n"
    if close:
        head += "Connection: close\r\n"
    return (head + "\r\n").encode() + body


def chaos_conn(client, port, chaos):
    """One client connection through the chaos proxy, a request at a time."""
    r = client.makefile("rb", buffering=BUF)
    upstream = None
    ur = None
    try:
        if r.peek(1)[:1] == b"\x16":
            # A TLS handshake (skopeo tries https first): answer as Go's HTTP server
            # does, so the client falls back to HTTP at once instead of timing out.
            client.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"
                           b"Client sent an HTTP request to an HTTPS server.\n")
            return
        while True:
            head = read_head(r)
            if head is None:
                return
            start, headers, raw = head
            method = (start.split() + [""])[0]
            kind, n = framing(headers, request=True)
            expect = "100-continue" in ",".join(headers.get("expect", [])).lower()
            close = "close" in ",".join(headers.get("connection", [])).lower()
            fault = chaos.draw()
            if fault in ("503", "429"):
                if expect and kind != "none":
                    client.sendall(fault_answer(int(fault), True))
                    return
                copy_body(r, Sink(), kind, n)
                client.sendall(fault_answer(int(fault), close))
                if close:
                    return
                continue
            if fault == "cut_before_request":
                return
            if upstream is None:
                upstream = socket.create_connection(("127.0.0.1", port))
                upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                ur = upstream.makefile("rb", buffering=BUF)
            upstream.sendall(raw)
            if expect and kind != "none":
                interim = read_head(ur)
                if interim is None:
                    return
                client.sendall(interim[2])
                if not interim[0].split()[1:2] == ["100"]:
                    copy_body(ur, client, *framing(interim[1], method == "HEAD"))
                    return
            cut_request = fault == "cut_mid_body" and kind != "none"
            limit = (n // 2 if kind == "length" else 1) if cut_request else None
            if not copy_body(r, upstream, kind, n, limit):
                return
            while True:
                resp = read_head(ur)
                if resp is None:
                    return
                status = int((resp[0].split() + ["0", "0"])[1])
                if 100 <= status < 200 and status != 101:
                    if fault != "cut_before_answer":
                        client.sendall(resp[2])
                    continue
                break
            if fault == "cut_before_answer":
                return
            rkind, rn = framing(resp[1], method == "HEAD" or status in (204, 304))
            if fault == "cut_mid_body":
                if rkind == "none":
                    return
                client.sendall(resp[2])
                copy_body(ur, client, rkind, rn, rn // 2 if rkind == "length" else 64)
                return
            client.sendall(resp[2])
            copy_body(ur, client, rkind, rn)
            if close or rkind == "close" or "close" in ",".join(resp[1].get("connection", [])).lower():
                return
    except (OSError, EOFError, ValueError):
        return
    finally:
        chaos.save()
        for s in (client, upstream):
            if s is not None:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()


def complete(d, prefix, oci, names):
    """How many PREFIX/NAME:latest are the layout's NAME, every blob stored."""
    with open(os.path.join(d, "state.json")) as f:
        port = json.load(f)["port"]
    with open(os.path.join(oci, "index.json")) as f:
        index = json.load(f)
    by_name = {m.get("annotations", {}).get("org.opencontainers.image.ref.name"): m
               for m in index["manifests"]}

    def ask(method, path, accept=None):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/{prefix}/{path}", method=method,
                                     headers={"Accept": accept} if accept else {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.headers, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, b""
        except OSError:
            return 0, {}, b""

    done = []
    for name in names:
        m = by_name.get(name)
        if m is None:
            continue
        status, h, _ = ask("HEAD", f"{name}/manifests/latest", m["mediaType"])
        if status != 200 or h.get("Docker-Content-Digest") != m["digest"]:
            continue
        with open(os.path.join(oci, "blobs", *m["digest"].split(":", 1)), "rb") as f:
            manifest = json.load(f)
        blobs = [manifest["config"]] + manifest.get("layers", [])
        if all(ask("HEAD", f"{name}/blobs/{b['digest']}")[0] == 200 for b in blobs):
            done.append(name)
    return {"complete": len(done), "of": len(names),
            "missing": [n for n in names if n not in done]}


def answers(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
            return r.status in (200, 401)
    except urllib.error.HTTPError as e:
        return e.code in (200, 401)
    except OSError:
        return False


def die_with_parent():
    """In the child before exec: SIGTERM when this process dies, even by SIGKILL."""
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def serve(d, chaos_spec=None):
    d = os.path.abspath(d)
    os.makedirs(d, exist_ok=True)
    log_path = os.path.join(d, "registry.log")
    proc = None
    for _ in range(5):
        port = free_port()
        with open(os.path.join(d, "config.yml"), "w") as f:
            f.write(f"""version: 0.1
log:
  level: info
  formatter: text
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: {d}/storage
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:{port}
  secret: imgbuild-bench-secret-{port}
""")
        log = open(log_path, "wb")
        proc = subprocess.Popen(["docker-registry", "serve", os.path.join(d, "config.yml")],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                preexec_fn=die_with_parent)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None and not answers(port):
            time.sleep(0.05)
        if proc.poll() is None and answers(port):
            break
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        text = open(log_path, errors="replace").read()
        if "address already in use" not in text:
            sys.exit(f"docker-registry did not start:\n{text[-2000:]}")
        proc = None
    if proc is None:
        sys.exit("docker-registry found no free port")

    counters = Counters(os.path.join(d, "counts.json"))
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(128)
    proxy_port = lsock.getsockname()[1]

    stopping = threading.Event()

    def stop(*_):
        stopping.set()
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)

    def watch():
        proc.wait()
        if stopping.is_set():
            return
        print("registry.py: docker-registry exited", file=sys.stderr)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
    write_json(os.path.join(d, "state.json"),
               {"port": port, "proxy_port": proxy_port, "registry_pid": proc.pid, "pid": os.getpid()})
    chaos = Chaos(chaos_spec, os.path.join(d, "chaos.json")) if chaos_spec else None
    if chaos:
        chaos.save()
    while True:
        conn, _ = lsock.accept()
        if chaos:
            threading.Thread(target=chaos_conn, args=(conn, port, chaos), daemon=True).start()
        else:
            threading.Thread(target=serve_conn, args=(conn, port, counters), daemon=True).start()


def counts(d):
    path = os.path.join(d, "counts.json")
    deadline = time.monotonic() + 10
    while True:
        with open(path) as f:
            c = json.load(f)
        if c["open"] == 0 or time.monotonic() > deadline:
            return c
        time.sleep(0.05)


ACCESS = re.compile(r'\] "(\S+) (\S+) [^"]*" (\d+) ')


def log_summary(d, start):
    path = os.path.join(d, "registry.log")
    # The registry writes its access line just after the response: wait until the
    # log stops growing.
    last = -1
    for _ in range(40):
        size = os.path.getsize(path)
        if size == last:
            break
        last = size
        time.sleep(0.1)
    with open(path, errors="replace") as f:
        lines = f.read().splitlines()
    s = {"lines": len(lines), "requests": 0, "uploads": 0, "mounts": 0, "manifest_puts": 0,
         "blob_heads": 0, "blob_heads_found": 0, "upload_starts": 0, "patches": 0, "errors": 0}
    for line in lines[start:]:
        m = ACCESS.search(line)
        if not m:
            continue
        method, target, status = m.group(1), m.group(2), int(m.group(3))
        s["requests"] += 1
        if status >= 400 and not (method == "HEAD" and status == 404):
            s["errors"] += 1
        if "/blobs/uploads/" in target:
            if method == "PUT" and status == 201:
                s["uploads"] += 1
            elif method == "POST" and status == 201 and "mount=" in target:
                s["mounts"] += 1
            elif method == "POST" and status == 202:
                s["upload_starts"] += 1
            elif method == "PATCH":
                s["patches"] += 1
        elif "/blobs/" in target and method == "HEAD":
            s["blob_heads"] += 1
            s["blob_heads_found"] += status == 200
        elif "/manifests/" in target and method == "PUT" and status == 201:
            s["manifest_puts"] += 1
    return s


def stored(d):
    root = os.path.join(d, "storage/docker/registry/v2/blobs/sha256")
    n = size = 0
    for dirpath, _, files in os.walk(root):
        if "data" in files:
            n += 1
            size += os.path.getsize(os.path.join(dirpath, "data"))
    return {"blobs": n, "bytes": size}


def layout(oci, names):
    def blob(desc):
        algo, hexd = desc["digest"].split(":", 1)
        return os.path.join(oci, "blobs", algo, hexd)

    index = json.load(open(os.path.join(oci, "index.json")))
    by_name = {m.get("annotations", {}).get("org.opencontainers.image.ref.name"): m
               for m in index["manifests"]}
    blobs, manifests, missing = {}, {}, []
    for name in names:
        m = by_name.get(name)
        if m is None:
            missing.append(name)
            continue
        manifests[m["digest"]] = m["size"]
        man = json.load(open(blob(m)))
        for desc in [man["config"]] + man.get("layers", []):
            blobs[desc["digest"]] = desc["size"]
    return {"images": len(names) - len(missing), "missing": missing,
            "blobs": len(blobs), "blob_bytes": sum(blobs.values()),
            "manifests": len(manifests), "manifest_bytes": sum(manifests.values()),
            "largest_blob": max(blobs.values(), default=0)}


def registry_cpu(d):
    """CPU seconds (user + system) the docker-registry process has used so far."""
    try:
        with open(os.path.join(d, "state.json")) as f:
            pid = json.load(f)["registry_pid"]
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, KeyError, IndexError):
        return None


def snapshot(d):
    """Where the log, the counters and the registry's CPU time are now: a
    `record --since` starts from here."""
    return {"log_lines": log_summary(d, 0)["lines"], "counts": counts(d),
            "registry_cpu_s": registry_cpu(d)}


def delta(now, before):
    if isinstance(now, dict):
        return {k: delta(v, (before or {}).get(k)) for k, v in now.items()}
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return now - (before or 0)
    return now


def push_stats(path):
    """Sum the per-image `stats` of `imgbuild push --json`."""
    try:
        with open(path) as f:
            out = json.load(f)
    except (OSError, ValueError) as e:
        return {"error": f"no JSON: {e}"}
    total = {}
    for img in out.get("images", []):
        for k, v in (img.get("stats") or {}).items():
            if isinstance(v, (int, float)):
                total[k] = total.get(k, 0) + v
    total["images"] = len(out.get("images", []))
    return total


def record(d, a):
    """A JSON line about what one command did to the registry in DIR."""
    since = {}
    if a.since:
        with open(a.since) as f:
            since = json.load(f)
    rec = {"kind": a.kind, "round": a.round, "registry": os.path.basename(d),
           "log": log_summary(d, since.get("log_lines", 0)), "stored": stored(d)}
    cpu = registry_cpu(d)
    if cpu is not None:
        rec["registry_cpu_s"] = round(cpu - (since.get("registry_cpu_s") or 0), 3)
    if a.counts:
        rec["counts"] = delta(counts(d), since.get("counts"))
    if a.push_json:
        rec["imgbuild"] = push_stats(a.push_json)
    with open(a.out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    return rec


def verify(d, a):
    """Mark a measure.py result failed when the registry did not get the images:
    fewer manifests put than expected, or less stored than the unique blobs. This
    keeps a push that exits 0 having sent nothing from being reported as fast."""
    with open(a.result) as f:
        res = json.load(f)
    if not res.get("ok"):
        return
    since = {}
    if a.since:
        with open(a.since) as f:
            since = json.load(f)
    lg, st = log_summary(d, since.get("log_lines", 0)), stored(d)
    why = None
    if lg["manifest_puts"] < a.manifests:
        why = f"the registry got {lg['manifest_puts']} manifests, not {a.manifests}"
    elif st["bytes"] < a.bytes:
        why = f"the registry stores {st['bytes']} bytes of blobs, less than {a.bytes}"
    elif lg["errors"]:
        why = f"{lg['errors']} requests answered with an error status"
    if why:
        res.update(ok=False, error=why)
        with open(a.result, "w") as f:
            json.dump(res, f, indent=2)
        print(f"warning: {res['name']}: not counted: {why}", file=sys.stderr)


def tag_check(d, prefix, tag, names):
    """Whether PREFIX/NAME:TAG names the same manifest as PREFIX/NAME:latest, for
    every NAME (asked of the registry directly, not through the proxy)."""
    with open(os.path.join(d, "state.json")) as f:
        port = json.load(f)["port"]
    accept = ", ".join(["application/vnd.oci.image.manifest.v1+json",
                        "application/vnd.oci.image.index.v1+json",
                        "application/vnd.docker.distribution.manifest.v2+json",
                        "application/vnd.docker.distribution.manifest.list.v2+json"])

    def digest(name, ref):
        req = urllib.request.Request(f"http://127.0.0.1:{port}/v2/{prefix}/{name}/manifests/{ref}",
                                     method="HEAD", headers={"Accept": accept})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.headers.get("Docker-Content-Digest")
        except OSError:
            return None

    bad = [n for n in names if digest(n, tag) is None or digest(n, tag) != digest(n, "latest")]
    return {"tag": tag, "checked": len(names), "same": len(names) - len(bad), "differ": bad}


def main():
    import argparse
    ap = argparse.ArgumentParser(description="A registry behind a counting proxy, for bench/push.sh.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("serve", "counts", "log", "stored", "snapshot"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        if name == "log":
            p.add_argument("--from", dest="start", type=int, default=0)
        if name == "serve":
            p.add_argument("--chaos")
    p = sub.add_parser("complete")
    p.add_argument("dir")
    p.add_argument("prefix")
    p.add_argument("oci")
    p.add_argument("names", nargs="+")
    p = sub.add_parser("layout")
    p.add_argument("dir")
    p.add_argument("names", nargs="+")
    p = sub.add_parser("record")
    p.add_argument("dir")
    p.add_argument("--out", required=True)
    p.add_argument("--kind", required=True)
    p.add_argument("--round", type=int, default=0)
    p.add_argument("--since")
    p.add_argument("--counts", action="store_true")
    p.add_argument("--push-json")
    p = sub.add_parser("tags")
    p.add_argument("dir")
    p.add_argument("prefix")
    p.add_argument("tag")
    p.add_argument("names", nargs="+")
    p = sub.add_parser("verify")
    p.add_argument("dir")
    p.add_argument("result")
    p.add_argument("--since")
    p.add_argument("--manifests", type=int, required=True)
    p.add_argument("--bytes", type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "serve":
        serve(a.dir, a.chaos)
        return
    out = {"counts": lambda: counts(a.dir), "log": lambda: log_summary(a.dir, a.start),
           "stored": lambda: stored(a.dir), "snapshot": lambda: snapshot(a.dir),
           "layout": lambda: layout(a.dir, a.names), "record": lambda: record(a.dir, a),
           "verify": lambda: verify(a.dir, a),
           "complete": lambda: complete(a.dir, a.prefix, a.oci, a.names),
           "tags": lambda: tag_check(a.dir, a.prefix, a.tag, a.names)}[a.cmd]()
    if out is not None:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
