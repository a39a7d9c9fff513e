"""Run one emulated pool + miner pair over loopback and capture the wire bytes of both directions.

For tests, benchmarks and the classifier corpus: a recording TCP relay (`Tap`) sits
between the miner and the pool, so what is captured is exactly what crossed the
wire (TLS ciphertext for the TLS variants, WebSocket frames for --ws).

    from egress.sim.session import run_session
    s = run_session("stratum", variant="btc", tls=False, websocket=False, duration=1.5,
                    share_interval=0.1, job_interval=0.3, seed=7)
    s.to_server, s.to_client        # bytes the miner sent / the pool sent (through the relay)
    s.chunks                        # [(ts, direction 0|1, length)] per relayed read
    s.pool_methods, s.client_methods  # method names each side received
    s.client_summary                # the miner's summary dict (shares, error...)
    packets = to_packets(s, client=("10.203.0.2", 40000), server=("10.203.0.3", 3333))
                                    # [(ts, raw IPv4 bytes)] with the session's real timing,
                                    # for egress.types.RawPacket(ts, data, 101) or craft.write_pcap

kinds: "stratum" (variants btc, ethstratum), "xmr" (xmrig, coinhive), "ethproxy",
"stratum_v2" (shape only: the sizes of an encrypted session, not its cryptography).
Everything binds to `host` (default 127.0.0.1) and stops by itself after `duration`.
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from egress.sim.ethproxy import EthProxyClient, EthProxyPool
from egress.sim.stratum import StratumClient, StratumPool
from egress.sim.stratum_v2 import StratumV2ShapeClient, StratumV2ShapePool
from egress.sim.xmr import CryptoNoteClient, CryptoNotePool

KINDS = {
    "stratum": (StratumPool, StratumClient, "btc"),
    "xmr": (CryptoNotePool, CryptoNoteClient, "xmrig"),
    "ethproxy": (EthProxyPool, EthProxyClient, "ethproxy"),
    "stratum_v2": (StratumV2ShapePool, StratumV2ShapeClient, "shape"),   # sizes only, see its docstring
}


class Tap:
    """A bounded recording TCP relay: accepts connections and forwards each to (up_host, up_port)."""

    def __init__(self, up_host: str, up_port: int, host: str = "127.0.0.1", port: int = 0,
                 max_bytes: int = 1 << 22):
        self.up_host, self.up_port = up_host, up_port
        self.host, self.port = host, port
        self.max_bytes = max_bytes
        self.streams = [bytearray(), bytearray()]       # 0: client -> server, 1: server -> client
        self.chunks: list[tuple[float, int, int]] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> tuple[str, int]:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        return self._server.sockets[0].getsockname()[:2]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.up_host, self.up_port)
        except OSError:
            writer.close()
            return
        self._tasks += [asyncio.ensure_future(self._pump(reader, up_writer, 0)),
                        asyncio.ensure_future(self._pump(up_reader, writer, 1))]

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: int) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if len(self.streams[direction]) < self.max_bytes:
                    self.streams[direction] += data
                self.chunks.append((time.time(), direction, len(data)))
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            try:
                writer.close()
            except Exception:     # already closed by the other pump
                pass

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()


@dataclass
class SessionResult:
    to_server: bytes
    to_client: bytes
    chunks: list = field(default_factory=list)
    pool_methods: list = field(default_factory=list)
    client_methods: list = field(default_factory=list)
    pool_received: list = field(default_factory=list)
    client_summary: dict = field(default_factory=dict)


async def run_session_async(kind: str = "stratum", *, variant: str | None = None, tls: bool = False,
                            websocket: bool = False, duration: float = 1.5, share_interval: float = 0.1,
                            job_interval: float = 0.3, periodic_interval: float = 0.5, seed: int | None = None,
                            host: str = "127.0.0.1", client_kwargs: dict | None = None,
                            pool_kwargs: dict | None = None) -> SessionResult:
    pool_cls, client_cls, default_variant = KINDS[kind]
    variant = variant or default_variant
    pool = pool_cls(host, 0, variant=variant, tls=tls, websocket=websocket, duration=duration + 5.0,
                    job_interval=job_interval, seed=seed, **(pool_kwargs or {}))
    p_host, p_port = await pool.start()
    tap = Tap(p_host, p_port, host)
    t_host, t_port = await tap.start()
    client = client_cls(t_host, t_port, variant=variant, tls=tls, websocket=websocket, duration=duration,
                        share_interval=share_interval, periodic_interval=periodic_interval,
                        seed=None if seed is None else seed + 1, **(client_kwargs or {}))
    try:
        summary = await client.run()
        await asyncio.sleep(0.05)              # let the relay flush the last bytes
    finally:
        pool.stop()
        await pool.wait()
        await tap.close()
    return SessionResult(bytes(tap.streams[0]), bytes(tap.streams[1]), list(tap.chunks),
                         pool.record.methods("in"), client.record.methods("in"), pool.record.received(),
                         summary)


def run_session(kind: str = "stratum", **kwargs: Any) -> SessionResult:
    """Synchronous wrapper of `run_session_async` (runs its own event loop)."""
    return asyncio.run(run_session_async(kind, **kwargs))


def to_packets(result: SessionResult, client: tuple = ("10.203.0.2", 40000), server: tuple = ("10.203.0.3", 3333),
               mss: int = 1448) -> list[tuple[float, bytes]]:
    """The recorded session as raw-IP TCP packets (handshake, data at the relayed read times,
    segmented at `mss`, ACKs, FIN close), built with egress.testing.craft (no scapy)."""
    from egress.testing.craft import TcpSession

    t0 = result.chunks[0][0] if result.chunks else time.time()
    tcp = TcpSession(client, server, t0=t0 - 0.003, step=0.0001, mss=mss).handshake()
    offsets = [0, 0]
    for ts, direction, length in result.chunks:
        stream = result.to_server if direction == 0 else result.to_client
        data = stream[offsets[direction]:offsets[direction] + length]
        offsets[direction] += length
        if data:
            tcp.t = max(tcp.t, ts)
            tcp.send(direction == 0, data)
    tcp.close()
    return tcp.packets
