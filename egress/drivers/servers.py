"""Small, bounded servers for the outside namespace of the demo and the end-to-end tests.

    python -m egress.drivers.servers https  --host H --port P --cert C --key K --root DIR
    python -m egress.drivers.servers git    --host H --port P --cert C --key K --root DIR
    python -m egress.drivers.servers dns    --host H [--port 53] --zone NAME=ADDR ...
    python -m egress.drivers.servers listen --host H --port P [--send TEXT]

- https: files from DIR over TLS (HTTP/1.1).
- git:   git's smart HTTP protocol over TLS through the real `git http-backend` (CGI),
         so `git clone https://...` in the sandbox is a real clone.
- dns:   answers A/AAAA queries for the given names (NXDOMAIN otherwise), over UDP.
- listen: a TCP listener that sends TEXT on accept (e.g. "id\\n" to a reverse shell) and
         records what each connection sends.

Every server prints "ready" on stdout once listening, appends one JSON line per
request/connection to `--record FILE` (so a test can prove what a server did or never
received), and stops by itself after `--duration` seconds (default 60). Addresses are
whatever the caller gives: these only ever run inside test namespaces or on loopback.
"""
from __future__ import annotations

import argparse
import http.server
import json
import os
import socket
import socketserver
import ssl
import struct
import subprocess
import sys
import threading
import time


class Recorder:
    def __init__(self, path: str | None):
        self._file = open(path, "a", encoding="utf-8") if path else None
        self._lock = threading.Lock()

    def add(self, **fields) -> None:
        if self._file is None:
            return
        fields.setdefault("ts", time.time())
        with self._lock:
            self._file.write(json.dumps(fields) + "\n")
            self._file.flush()


def read_record(path: str) -> list[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


def make_cert(directory: str, names: list[str]) -> tuple[str, str]:
    """A self-signed certificate (P-256) for `names`; returns (cert, key) paths."""
    cert, key = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    san = ",".join("DNS:" + n for n in names)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + names[0],
                    "-addext", "subjectAltName=" + san], check=True, capture_output=True)
    return cert, key


# -- HTTPS and git smart HTTP ------------------------------------------------------------------

class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def _http_server(args, handler_cls):
    _Server.address_family = _family(args.host)
    server = _Server((args.host, args.port), handler_cls)
    server.socket = tls_context(args.cert, args.key).wrap_socket(server.socket, server_side=True)
    return server


def serve_https(args, recorder: Recorder):
    root = args.root

    class Handler(http.server.SimpleHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def __init__(self, *a, **kw):
            super().__init__(*a, directory=root, **kw)

        def log_message(self, fmt, *a):
            recorder.add(kind="http", client=self.client_address[0], request=self.requestline,
                         status=a[1] if len(a) > 1 else "")

    return _http_server(args, Handler)


def serve_git(args, recorder: Recorder):
    root = args.root

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            self._cgi()

        def do_POST(self):
            self._cgi()

        def _cgi(self):
            path, _, query = self.path.partition("?")
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {"GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1", "PATH_INFO": path,
                   "QUERY_STRING": query, "REQUEST_METHOD": self.command, "REMOTE_ADDR": self.client_address[0],
                   "CONTENT_TYPE": self.headers.get("Content-Type", ""), "CONTENT_LENGTH": str(len(body)),
                   "HTTP_GIT_PROTOCOL": self.headers.get("Git-Protocol", ""), "PATH": os.environ.get("PATH", "")}
            if self.headers.get("Content-Encoding"):
                env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
            proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, timeout=30)
            head, _, payload = proc.stdout.partition(b"\r\n\r\n")
            status = 200
            headers = []
            for line in head.decode("latin-1").split("\r\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = int(value.split()[0])
                elif name:
                    headers.append((name, value.strip()))
            self.send_response(status)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            recorder.add(kind="git", client=self.client_address[0], request="%s %s" % (self.command, self.path),
                         status=status)

        def log_message(self, fmt, *a):
            pass

    return _http_server(args, Handler)


def run_http(server, duration: float) -> None:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print("ready", flush=True)
    time.sleep(duration)
    server.shutdown()


# -- DNS -------------------------------------------------------------------------------------

def parse_query(data: bytes):
    """(id, flags, qname, qtype, question bytes) of a DNS query, or None."""
    if len(data) < 12:
        return None
    qid, flags, qd = struct.unpack_from("!HHH", data)
    if qd != 1:
        return None
    pos, labels = 12, []
    while pos < len(data):
        n = data[pos]
        if n == 0 or n & 0xC0:
            break
        labels.append(data[pos + 1:pos + 1 + n].decode("ascii", "replace"))
        pos += 1 + n
    if pos + 5 > len(data):
        return None
    qtype, = struct.unpack_from("!H", data, pos + 1)
    return qid, flags, ".".join(labels).lower(), qtype, data[12:pos + 5]


def dns_answer(data: bytes, zone: dict[str, list[str]], ttl: int = 60) -> bytes | None:
    q = parse_query(data)
    if q is None:
        return None
    qid, flags, name, qtype, question = q
    want = 4 if qtype == 1 else 6 if qtype == 28 else 0
    addrs = [a for a in zone.get(name, []) if want and (":" in a) == (want == 6)]
    rcode = 0 if name in zone else 3
    answers = b""
    for a in addrs:
        rdata = socket.inet_pton(socket.AF_INET if want == 4 else socket.AF_INET6, a)
        answers += struct.pack("!HHHIH", 0xC00C, qtype, 1, ttl, len(rdata)) + rdata
    header = struct.pack("!HHHHHH", qid, 0x8180 | (flags & 0x0100) | rcode, 1, len(addrs), 0, 0)
    return header + question + answers


def serve_dns(args, recorder: Recorder) -> None:
    zone: dict[str, list[str]] = {}
    for item in args.zone:
        name, _, addr = item.partition("=")
        zone.setdefault(name.lower().rstrip("."), []).append(addr)
    sock = socket.socket(_family(args.host), socket.SOCK_DGRAM)
    sock.bind((args.host, args.port))
    sock.settimeout(0.2)
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    while time.monotonic() < deadline:
        try:
            data, peer = sock.recvfrom(4096)
        except socket.timeout:
            continue
        reply = dns_answer(data, zone)
        q = parse_query(data)
        recorder.add(kind="dns", client=peer[0], name=q[2] if q else None, qtype=q[3] if q else None)
        if reply:
            sock.sendto(reply, peer)


# -- a recording TCP listener ----------------------------------------------------------------

def serve_listen(args, recorder: Recorder) -> None:
    srv = socket.socket(_family(args.host), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((args.host, args.port))
    srv.listen(16)
    srv.settimeout(0.2)
    print("ready", flush=True)
    deadline = time.monotonic() + args.duration
    send = args.send.encode().decode("unicode_escape").encode("latin-1") if args.send else b""

    def handle(conn, peer):
        conn.settimeout(args.idle)
        got = b""
        recorder.add(kind="accept", client=peer[0], port=peer[1])
        try:
            if send:
                conn.sendall(send)
            while len(got) < 1 << 20:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                got += chunk
        except OSError:
            pass
        finally:
            conn.close()
        recorder.add(kind="conn", client=peer[0], port=peer[1], received=got.decode("latin-1"), bytes=len(got))

    while time.monotonic() < deadline:
        try:
            conn, peer = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=handle, args=(conn, peer), daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m egress.drivers.servers")
    p.add_argument("kind", choices=("https", "git", "dns", "listen"))
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--root")
    p.add_argument("--zone", action="append", default=[], metavar="NAME=ADDR")
    p.add_argument("--send", default="")
    p.add_argument("--idle", type=float, default=5.0)
    p.add_argument("--record")
    p.add_argument("--duration", type=float, default=60.0)
    args = p.parse_args(argv)
    recorder = Recorder(args.record)
    if args.kind == "dns":
        args.port = args.port or 53
        serve_dns(args, recorder)
    elif args.kind == "listen":
        serve_listen(args, recorder)
    else:
        server = (serve_https if args.kind == "https" else serve_git)(args, recorder)
        run_http(server, args.duration)
    return 0


if __name__ == "__main__":
    sys.exit(main())
