"""The emulators' common machinery: JSON-lines channels (plain, TLS, WebSocket), pool and miner skeletons.

Protocol modules (stratum.py, xmr.py, ethproxy.py) subclass `PoolServer` and
`MinerClient` and fill in the protocol hooks; everything about sockets, TLS,
WebSocket framing, limits and recording lives here. Guarantees:

- Bounded: a pool serves for at most `duration` seconds and stops reading after
  `max_messages` received messages (and `max_clients` connections); a client runs at
  most `duration` seconds and sends at most `max_messages` messages. Both stop by
  themselves; `stop()` ends them earlier.
- Addresses come from the caller; defaults are 127.0.0.1 only.
- Everything each side sends and receives is recorded in `self.record` (a `Record`:
  timestamps, peer, the JSON objects) and, with `record_path`, appended as JSON
  lines to a file as it happens (flushed per line), so tests can assert e.g. "the pool
  never received the login" even when the emulator runs in another process.
- Wire bytes are those of real implementations: compact JSON, one object per line
  ("\\n"), TLS from the ssl module, WebSocket per RFC 6455 (client frames masked).
"""
from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import random
import ssl
import time
from typing import Any

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_LINE = 1 << 16


class Record:
    """What one emulator sent and received, in order: (ts, direction 'in'|'out', peer, obj)."""

    def __init__(self, path: str | None = None):
        self.events: list[tuple[float, str, str, Any]] = []
        self._file = open(path, "a", encoding="utf-8") if path else None

    def add(self, direction: str, peer: str, obj: Any) -> None:
        ts = time.time()
        self.events.append((ts, direction, peer, obj))
        if self._file is not None:
            self._file.write(json.dumps({"ts": ts, "dir": direction, "peer": peer, "msg": obj}) + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def received(self) -> list[Any]:
        return [obj for _, d, _, obj in self.events if d == "in"]

    def sent(self) -> list[Any]:
        return [obj for _, d, _, obj in self.events if d == "out"]

    def methods(self, direction: str = "in") -> list[str]:
        """Method (or browser-miner "type") names of the messages in one direction, in order."""
        out = []
        for _, d, _, obj in self.events:
            if d == direction and isinstance(obj, dict):
                name = obj.get("method", obj.get("type"))
                if isinstance(name, str):
                    out.append(name)
        return out

    def summary(self) -> dict:
        counts: dict[str, int] = {}
        for name in self.methods("in"):
            counts[name] = counts.get(name, 0) + 1
        return {"received": len(self.received()), "sent": len(self.sent()), "methods_received": counts}


class Channel:
    """One JSON-lines connection, optionally inside WebSocket frames; records every message."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, record: Record,
                 peer: str, websocket: str | None = None):
        self.reader = reader
        self.writer = writer
        self.record = record
        self.peer = peer
        self.websocket = websocket          # None, "client" (masks frames) or "server"
        self._pending: list[bytes] = []
        self.closed = False

    async def send(self, obj: Any) -> None:
        data = json.dumps(obj, separators=(",", ":")).encode() + b"\n"
        if self.websocket:
            data = ws_frame(data, mask=self.websocket == "client")
        self.writer.write(data)
        self.record.add("out", self.peer, obj)
        await self.writer.drain()

    async def recv(self) -> Any:
        """The next JSON message; None at end of stream. Undecodable lines are skipped."""
        while True:
            line = await self._next_line()
            if line is None:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            self.record.add("in", self.peer, obj)
            return obj

    async def _next_line(self) -> bytes | None:
        if not self.websocket:
            try:
                line = await self.reader.readuntil(b"\n")
            except asyncio.IncompleteReadError as exc:
                return exc.partial or None
            except (asyncio.LimitOverrunError, ConnectionError, ssl.SSLError, OSError):
                return None
            return line
        while not self._pending:
            message = await ws_read_message(self.reader, self.writer, mask=self.websocket == "client")
            if message is None:
                return None
            self._pending = [p for p in message.split(b"\n") if p.strip()]
        return self._pending.pop(0)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            if self.websocket:
                self.writer.write(ws_frame(b"\x03\xe8", mask=self.websocket == "client", opcode=8))
            self.writer.close()
            await asyncio.wait_for(self.writer.wait_closed(), 1.0)
        except Exception:                 # the peer may already be gone; closing is best effort
            pass


# --- WebSocket (RFC 6455), just what the emulators need -------------------------------------

def ws_frame(payload: bytes, mask: bool, opcode: int = 1) -> bytes:
    head = bytes([0x80 | opcode])
    n = len(payload)
    bit = 0x80 if mask else 0
    if n < 126:
        head += bytes([bit | n])
    elif n < 65536:
        head += bytes([bit | 126]) + n.to_bytes(2, "big")
    else:
        head += bytes([bit | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


async def ws_read_message(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, mask: bool) -> bytes | None:
    """The next data message (fragments joined); answers pings; None on close or error."""
    parts: list[bytes] = []
    try:
        while True:
            b0, b1 = await reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await reader.readexactly(8), "big")
            if n > MAX_LINE:
                return None
            key = await reader.readexactly(4) if b1 & 0x80 else b""
            payload = await reader.readexactly(n)
            if key:
                payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
            opcode = b0 & 0x0F
            if opcode == 8:
                return None
            if opcode == 9:
                writer.write(ws_frame(payload, mask=mask, opcode=10))
                continue
            if opcode == 10:
                continue
            parts.append(payload)
            if b0 & 0x80:
                return b"".join(parts)
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        return None


async def ws_client_handshake(reader, writer, host: str, path: str, user_agent: str) -> bool:
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: %s\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n"
                  "Origin: http://%s\r\n\r\n" % (path, host, user_agent, key, host)).encode())
    await writer.drain()
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        return False
    expected = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest())
    return head.startswith(b"HTTP/1.1 101") and expected in head


async def ws_server_handshake(reader, writer) -> bool:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, OSError):
        return False
    key = b""
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"sec-websocket-key":
            key = value.strip()
    if not key or b"websocket" not in head.lower():
        writer.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
        return False
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    writer.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
    await writer.drain()
    return True


# --- Pool skeleton ----------------------------------------------------------------------------

class Session:
    """One miner connection as the pool sees it: a channel plus protocol state."""

    def __init__(self, channel: Channel, number: int):
        self.channel = channel
        self.number = number
        self.state: dict[str, Any] = {}
        self.ready = False                 # the pool may push jobs (after login/authorize)

    async def send(self, obj: Any) -> None:
        await self.channel.send(obj)


class PoolServer:
    """A bounded emulated pool. Subclasses implement `on_message` and `make_job`.

    Parameters (keyword): host/port to listen on (port 0 = any free port; see
    `address` after `start()`), tls (False, True for a fresh self-signed cert, or an
    SSLContext), websocket (serve WebSocket instead of raw lines), duration (seconds),
    max_messages (received, all sessions), max_clients, job_interval (seconds between
    pushed jobs), seed (for reproducible job contents), record_path (JSON lines log),
    banner (bytes of "# ..." text lines sent on connect, before the protocol, raw
    lines only: a pool that talks first so that the miner's login comes late in the
    connection; miners skip lines they cannot decode).
    """
    protocol = "json-lines"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, tls: bool | ssl.SSLContext = False,
                 websocket: bool = False, duration: float = 30.0, max_messages: int = 10_000,
                 max_clients: int = 32, job_interval: float = 1.0, seed: int | None = None,
                 record_path: str | None = None, tls_name: str = "pool.test", banner: int = 0):
        self.banner = banner
        self.host = host
        self.port = port
        self.tls = tls
        self.tls_name = tls_name
        self.websocket = websocket
        self.duration = duration
        self.max_messages = max_messages
        self.max_clients = max_clients
        self.job_interval = job_interval
        self.rng = random.Random(seed)
        self.record = Record(record_path)
        self.sessions: list[Session] = []
        self.received_count = 0
        self.address: tuple[str, int] | None = None
        self._server: asyncio.AbstractServer | None = None
        self._done = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()

    # protocol hooks
    async def on_message(self, session: Session, obj: Any) -> None:
        raise NotImplementedError

    def make_job(self, session: Session) -> Any:
        """A pushed job notification for a ready session, or None."""
        return None

    # lifecycle
    async def start(self) -> tuple[str, int]:
        ctx = self.tls
        if ctx is True:
            from egress.sim.tlscert import server_context
            ctx = server_context(self.tls_name)
        self._server = await asyncio.start_server(self._handle, self.host, self.port, ssl=ctx or None,
                                                  limit=MAX_LINE)
        sock = self._server.sockets[0].getsockname()
        self.address = (sock[0], sock[1])
        loop = asyncio.get_running_loop()
        loop.call_later(self.duration, self.stop)
        return self.address

    def stop(self) -> None:
        self._done.set()

    async def wait(self) -> None:
        await self._done.wait()
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for session in self.sessions:
            await session.channel.close()
        for task in list(self._tasks):
            task.cancel()
        self.record.close()

    async def run(self) -> dict:
        await self.start()
        await self.wait()
        return self.record.summary()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        peer = writer.get_extra_info("peername")
        peer_text = "%s:%s" % (peer[0], peer[1]) if peer else "?"
        if self._done.is_set() or len(self.sessions) >= self.max_clients:
            writer.close()
            return
        if self.websocket and not await ws_server_handshake(reader, writer):
            writer.close()
            return
        session = Session(Channel(reader, writer, self.record, peer_text, "server" if self.websocket else None),
                          len(self.sessions))
        self.sessions.append(session)
        if self.banner and not self.websocket:
            writer.write(banner_lines(self.banner))
        pusher = asyncio.ensure_future(self._push_jobs(session))
        try:
            while not self._done.is_set():
                obj = await session.channel.recv()
                if obj is None:
                    break
                self.received_count += 1
                await self.on_message(session, obj)
                if self.received_count >= self.max_messages:
                    self.stop()
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            pusher.cancel()
            await session.channel.close()
            if task is not None:
                self._tasks.discard(task)

    async def _push_jobs(self, session: Session) -> None:
        try:
            while not self._done.is_set():
                await asyncio.sleep(self.job_interval)
                if session.ready and not session.channel.closed:
                    job = self.make_job(session)
                    if job is not None:
                        await session.send(job)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
            return


def banner_lines(size: int) -> bytes:
    """`size` bytes of message-of-the-day lines, none of them JSON."""
    if size <= 0:
        return b""
    line = b"# pool message of the day: welcome, miners\n"
    return (line * (size // len(line) + 1))[:size - 1] + b"\n"


# --- Miner skeleton ---------------------------------------------------------------------------

class MinerClient:
    """A bounded emulated miner. Subclasses implement `handshake`, `on_message`, `make_share`
    and optionally `make_periodic`.

    Parameters (keyword): host/port of the pool, tls (False/True/SSLContext),
    server_hostname (the SNI; default: tls_name), websocket and ws_path, duration,
    max_messages (sent), share_interval (mean seconds between shares) and jitter (a
    fraction: each interval is drawn uniformly in interval*(1 +/- jitter)),
    periodic_interval (keepalive / hashrate reports), user, password, agent, seed,
    record_path, after_banner (bytes the pool sends first that the miner reads and
    skips before its login: a pool's banner, let pass so that the login comes late).
    """
    default_user = "user"
    default_agent = "miner/1.0"

    def __init__(self, host: str = "127.0.0.1", port: int = 3333, *, tls: bool | ssl.SSLContext = False,
                 server_hostname: str | None = None, tls_name: str = "pool.test", websocket: bool = False,
                 ws_path: str = "/", duration: float = 10.0, max_messages: int = 200,
                 share_interval: float = 1.0, jitter: float = 0.3, periodic_interval: float = 5.0,
                 user: str | None = None, password: str = "x", agent: str | None = None,
                 seed: int | None = None, record_path: str | None = None, connect_timeout: float = 5.0,
                 after_banner: int = 0):
        self.after_banner = after_banner
        self.host = host
        self.port = port
        self.tls = tls
        self.server_hostname = server_hostname or tls_name
        self.websocket = websocket
        self.ws_path = ws_path
        self.duration = duration
        self.max_messages = max_messages
        self.share_interval = share_interval
        self.jitter = jitter
        self.periodic_interval = periodic_interval
        self.user = user or self.default_user
        self.password = password
        self.agent = agent or self.default_agent
        self.rng = random.Random(seed)
        self.record = Record(record_path)
        self.connect_timeout = connect_timeout
        self.channel: Channel | None = None
        self.state: dict[str, Any] = {}
        self.shares = 0
        self.sent_count = 0
        self.error: str | None = None
        self._stop = asyncio.Event()
        self._next_id = 1

    def next_id(self) -> int:
        self._next_id += 1
        return self._next_id

    # protocol hooks
    async def handshake(self) -> None:
        raise NotImplementedError

    def on_message(self, obj: Any) -> None:
        pass

    def make_share(self) -> Any:
        return None

    def make_periodic(self) -> Any:
        return None

    def stop(self) -> None:
        self._stop.set()

    async def send(self, obj: Any) -> bool:
        """Send one message unless the budget is spent; False when the client must stop."""
        if self.channel is None or self.sent_count >= self.max_messages:
            self.stop()
            return False
        self.sent_count += 1
        await self.channel.send(obj)
        return True

    async def run(self) -> dict:
        """Connect, mine until duration/max_messages/stop, close. Returns a summary dict
        (with "error" set to a one-line reason when the connection failed or was cut)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration
        ctx = self.tls
        if ctx is True:
            from egress.sim.tlscert import client_context
            ctx = client_context()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, ssl=ctx or None, limit=MAX_LINE,
                                        server_hostname=self.server_hostname if ctx else None),
                self.connect_timeout)
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as exc:
            self.error = "connect to %s:%d failed: %s" % (self.host, self.port, exc.__class__.__name__)
            self.record.close()
            return self.summary()
        if self.websocket and not await ws_client_handshake(reader, writer, "%s:%d" % (self.host, self.port),
                                                            self.ws_path, self.agent):
            self.error = "websocket handshake refused"
            writer.close()
            self.record.close()
            return self.summary()
        if self.after_banner and not self.websocket:
            try:
                await asyncio.wait_for(reader.readexactly(self.after_banner), self.connect_timeout)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ssl.SSLError) as exc:
                self.error = "no %d-byte banner from the pool: %s" % (self.after_banner, exc.__class__.__name__)
                writer.close()
                self.record.close()
                return self.summary()
        peer = "%s:%d" % (self.host, self.port)
        self.channel = Channel(reader, writer, self.record, peer, "client" if self.websocket else None)
        reading = asyncio.ensure_future(self._read_loop())
        try:
            # A send blocked by a silently dropping firewall must not outlive the duration.
            await asyncio.wait_for(self._mine(deadline), max(0.1, deadline - loop.time()) + 2.0)
        except asyncio.TimeoutError:
            self.error = "stalled: no progress before the deadline"
        except (ConnectionError, ssl.SSLError, OSError) as exc:
            self.error = "connection lost: %s" % exc.__class__.__name__
        finally:
            reading.cancel()
            await self.channel.close()
            self.record.close()
        return self.summary()

    async def _mine(self, deadline: float) -> None:
        await self.handshake()
        await self._work_loop(deadline)

    def summary(self) -> dict:
        out = self.record.summary()
        out["shares"] = self.shares
        if self.error:
            out["error"] = self.error
        return out

    async def _read_loop(self) -> None:
        try:
            while True:
                obj = await self.channel.recv()
                if obj is None:
                    if not self._stop.is_set():
                        self.error = self.error or "pool closed the connection"
                    self.stop()
                    return
                self.on_message(obj)
        except asyncio.CancelledError:
            return

    async def _work_loop(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        next_share = loop.time() + self._interval(self.share_interval)
        next_periodic = loop.time() + self.periodic_interval
        while not self._stop.is_set():
            now = loop.time()
            if now >= deadline:
                return
            if now >= next_share:
                share = self.make_share()
                if share is not None:
                    if not await self.send(share):
                        return
                    self.shares += 1
                next_share = now + self._interval(self.share_interval)
            if now >= next_periodic:
                extra = self.make_periodic()
                if extra is not None and not await self.send(extra):
                    return
                next_periodic = now + self.periodic_interval
            wake = min(next_share, next_periodic, deadline)
            try:
                await asyncio.wait_for(self._stop.wait(), max(0.0, wake - loop.time()))
            except asyncio.TimeoutError:
                pass

    def _interval(self, mean: float) -> float:
        return max(0.001, mean * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))


def rand_hex(rng: random.Random, nbytes: int) -> str:
    return "%0*x" % (nbytes * 2, rng.getrandbits(nbytes * 8))


# --- Command line -----------------------------------------------------------------------------

def parse_hostport(text: str, default_port: int) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host:
        return text, default_port
    return host.strip("[]"), int(port)


def cli(pool_cls: type, client_cls: type, argv: list[str] | None, default_port: int, variants: tuple[str, ...],
        prog: str) -> int:
    """`python -m egress.sim.X pool|client ...`: run one emulator until its limits; print a JSON
    summary on stdout (the pool first prints {"event": "listening", "address": [host, port]}).
    Exit 0, or 1 when the client could not connect or lost the pool (reason on stderr)."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog=prog)
    sub = parser.add_subparsers(dest="role", required=True)
    p = sub.add_parser("pool", help="run an emulated pool")
    p.add_argument("--listen", default="127.0.0.1:%d" % default_port, help="HOST:PORT (port 0: any)")
    p.add_argument("--job-interval", type=float, default=1.0)
    p.add_argument("--max-clients", type=int, default=32)
    p.add_argument("--max-messages", type=int, default=10_000, help="received messages, all sessions")
    p.add_argument("--banner", type=int, default=0, metavar="BYTES",
                   help="send BYTES of text lines on connect, before the protocol")
    c = sub.add_parser("client", help="run an emulated miner")
    c.add_argument("--connect", required=True, help="HOST:PORT of the pool")
    c.add_argument("--sni", default=None, help="TLS server name (default: --tls-name)")
    c.add_argument("--ws-path", default="/")
    c.add_argument("--share-interval", type=float, default=1.0)
    c.add_argument("--jitter", type=float, default=0.3)
    c.add_argument("--periodic-interval", type=float, default=5.0)
    c.add_argument("--max-messages", type=int, default=200, help="sent messages")
    c.add_argument("--user", default=None)
    c.add_argument("--password", default="x")
    c.add_argument("--agent", default=None)
    c.add_argument("--after-banner", type=int, default=0, metavar="BYTES",
                   help="read and skip BYTES the pool sends first, then log in")
    for q in (p, c):
        q.add_argument("--tls", action="store_true", help="wrap in TLS (self-signed cert made at start)")
        q.add_argument("--tls-name", default="pool.test")
        q.add_argument("--ws", action="store_true", help="speak inside WebSocket")
        q.add_argument("--duration", type=float, default=30.0 if q is p else 10.0)
        q.add_argument("--seed", type=int, default=None)
        q.add_argument("--record", default=None, help="append every message as a JSON line to FILE")
        q.add_argument("--variant", default=variants[0], choices=variants)
    args = parser.parse_args(argv)
    common = dict(tls=args.tls, tls_name=args.tls_name, websocket=args.ws, duration=args.duration,
                  seed=args.seed, record_path=args.record, variant=args.variant,
                  max_messages=args.max_messages)

    async def main() -> dict:
        if args.role == "pool":
            host, port = parse_hostport(args.listen, default_port)
            pool = pool_cls(host, port, job_interval=args.job_interval, max_clients=args.max_clients,
                            banner=args.banner, **common)
            address = await pool.start()
            print(json.dumps({"event": "listening", "address": list(address)}), flush=True)
            await pool.wait()
            return pool.record.summary()
        host, port = parse_hostport(args.connect, default_port)
        client = client_cls(host, port, server_hostname=args.sni, ws_path=args.ws_path,
                            share_interval=args.share_interval, jitter=args.jitter,
                            periodic_interval=args.periodic_interval, user=args.user,
                            password=args.password, agent=args.agent, after_banner=args.after_banner, **common)
        return await client.run()

    try:
        summary = asyncio.run(main())
    except (OSError, ValueError) as exc:
        print("%s: %s" % (prog, exc), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(summary), flush=True)
    if summary.get("error"):
        print("%s: %s" % (prog, summary["error"]), file=sys.stderr)
        return 1
    return 0
