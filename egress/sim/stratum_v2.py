"""Stratum v2 SHAPE emulator: the sizes and timing of an encrypted Stratum v2 session, not its crypto.

NOT protocol-faithful: real Stratum v2 runs a Noise NX handshake with secp256k1
ElligatorSwift keys, which this project does not implement. What is faithful is what
an observer of the ciphertext sees, and what egress.inspect.stratum_v2 looks at:
- the miner's first write is 64 random bytes (its ephemeral key), the pool answers
  with exactly 234 random bytes (ephemeral key, encrypted static key, signature);
- then Noise transport frames: an encrypted 6-byte header (22 bytes with its MAC)
  followed by the encrypted payload plus a 16-byte MAC, with Stratum v2 message sizes:
  SetupConnection / OpenStandardMiningChannel from the miner, NewMiningJob /
  SetNewPrevHash from the pool every job_interval, SubmitSharesStandard at
  share_interval.

API as the other emulators (egress.sim.base parameters; tls/websocket are ignored):
    pool = StratumV2ShapePool("127.0.0.1", 0, job_interval=0.5, duration=5)
    client = StratumV2ShapeClient(host, port, share_interval=0.3, duration=3)
    await pool.start(); summary = await client.run(); pool.stop(); await pool.wait()
    pool.record.methods("in") -> ["handshake", "SetupConnection", "OpenStandardMiningChannel",
                                  "SubmitSharesStandard", ...]   (by frame order)
CLI: python -m egress.sim.stratum_v2 pool --listen 127.0.0.1:34255 | client --connect HOST:PORT
"""
from __future__ import annotations

import asyncio
import ssl
import sys
from typing import Any

from egress.sim.base import MinerClient, PoolServer, Session, cli

VARIANTS = ("shape",)
INITIATOR = 64
RESPONDER = 234
MAC = 16
HEADER = 6 + MAC
# Stratum v2 plaintext payload sizes (typical, from the spec's field layouts).
CLIENT_MESSAGES = [("SetupConnection", 82), ("OpenStandardMiningChannel", 58)]
SHARE = ("SubmitSharesStandard", 24)
POOL_MESSAGES = [("SetupConnectionSuccess", 6), ("OpenStandardMiningChannelSuccess", 58)]
JOB = [("NewMiningJob", 49), ("SetNewPrevHash", 76)]


def frame(rng, size: int) -> bytes:
    """One encrypted transport frame carrying `size` payload bytes (random ciphertext)."""
    return rng.randbytes(HEADER + size + MAC)


async def read_frame(reader: asyncio.StreamReader) -> int | None:
    """Read one frame; the payload size is not readable (encrypted), so both sides of this
    emulator announce it in the clear inside the first 2 header bytes - an emulator-only
    shortcut that keeps the byte counts of the real protocol."""
    try:
        head = await reader.readexactly(HEADER)
        size = int.from_bytes(head[:2], "big") & 0x3FFF
        await reader.readexactly(size + MAC)
        return size
    except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
        return None


def framed(rng, size: int) -> bytes:
    data = bytearray(frame(rng, size))
    data[:2] = (size | (rng.getrandbits(2) << 14)).to_bytes(2, "big")
    return bytes(data)


def _name(table: list[tuple[str, int]], size: int, default: str) -> str:
    for name, n in table:
        if n == size:
            return name
    return default


class StratumV2ShapePool(PoolServer):
    protocol = "stratum-v2-shape"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, variant: str = "shape", **kwargs: Any):
        kwargs["tls"] = False
        kwargs["websocket"] = False
        super().__init__(host, port, **kwargs)
        self.variant = variant

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        peer_text = "%s:%s" % (peer[0], peer[1]) if peer else "?"
        if self._done.is_set():
            writer.close()
            return
        try:
            await reader.readexactly(INITIATOR)
            self.record.add("in", peer_text, {"method": "handshake", "bytes": INITIATOR})
            writer.write(self.rng.randbytes(RESPONDER))
            await writer.drain()
            pusher = asyncio.ensure_future(self._push(writer, peer_text))
            try:
                while not self._done.is_set():
                    size = await read_frame(reader)
                    if size is None:
                        break
                    self.received_count += 1
                    name = _name(CLIENT_MESSAGES + [SHARE], size, "frame")
                    self.record.add("in", peer_text, {"method": name, "bytes": size})
                    if name == "SetupConnection":
                        await self._send(writer, peer_text, POOL_MESSAGES[0])
                    elif name == "OpenStandardMiningChannel":
                        await self._send(writer, peer_text, POOL_MESSAGES[1])
                    elif name == SHARE[0]:
                        await self._send(writer, peer_text, ("SubmitSharesSuccess", 20))
                    if self.received_count >= self.max_messages:
                        self.stop()
            finally:
                pusher.cancel()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    async def _send(self, writer: asyncio.StreamWriter, peer: str, message: tuple[str, int]) -> None:
        writer.write(framed(self.rng, message[1]))
        self.record.add("out", peer, {"method": message[0], "bytes": message[1]})
        await writer.drain()

    async def _push(self, writer: asyncio.StreamWriter, peer: str) -> None:
        try:
            while not self._done.is_set():
                await asyncio.sleep(self.job_interval)
                for message in JOB:
                    await self._send(writer, peer, message)
        except (ConnectionError, OSError, asyncio.CancelledError):
            return

    async def on_message(self, session: Session, obj: Any) -> None:     # not used: frames, not JSON
        return None


class StratumV2ShapeClient(MinerClient):
    def __init__(self, host: str = "127.0.0.1", port: int = 34255, *, variant: str = "shape", **kwargs: Any):
        kwargs["tls"] = False
        kwargs["websocket"] = False
        super().__init__(host, port, **kwargs)
        self.variant = variant

    async def run(self) -> dict:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.duration
        peer = "%s:%d" % (self.host, self.port)
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port),
                                                    self.connect_timeout)
        except (OSError, asyncio.TimeoutError) as exc:
            self.error = "connect to %s failed: %s" % (peer, exc.__class__.__name__)
            self.record.close()
            return self.summary()
        reading = None
        try:
            writer.write(self.rng.randbytes(INITIATOR))
            self.record.add("out", peer, {"method": "handshake", "bytes": INITIATOR})
            await writer.drain()
            await asyncio.wait_for(reader.readexactly(RESPONDER), max(0.1, deadline - loop.time()))
            self.record.add("in", peer, {"method": "handshake", "bytes": RESPONDER})
            reading = asyncio.ensure_future(self._read(reader, peer))
            for name, size in CLIENT_MESSAGES:
                await self._send(writer, peer, name, size)
            while loop.time() < deadline and self.sent_count < self.max_messages:
                await asyncio.sleep(min(self._interval(self.share_interval), max(0.0, deadline - loop.time())))
                if loop.time() >= deadline:
                    break
                await self._send(writer, peer, *SHARE)
                self.shares += 1
        except (asyncio.IncompleteReadError, asyncio.TimeoutError) as exc:
            self.error = "pool did not answer the handshake: %s" % exc.__class__.__name__
        except (ConnectionError, OSError) as exc:
            self.error = "connection lost: %s" % exc.__class__.__name__
        finally:
            if reading is not None:
                reading.cancel()
            writer.close()
            self.record.close()
        return self.summary()

    async def _send(self, writer: asyncio.StreamWriter, peer: str, name: str, size: int) -> None:
        self.sent_count += 1
        writer.write(framed(self.rng, size))
        self.record.add("out", peer, {"method": name, "bytes": size})
        await writer.drain()

    async def _read(self, reader: asyncio.StreamReader, peer: str) -> None:
        table = POOL_MESSAGES + JOB + [("SubmitSharesSuccess", 20)]
        try:
            while True:
                size = await read_frame(reader)
                if size is None:
                    return
                self.record.add("in", peer, {"method": _name(table, size, "frame"), "bytes": size})
        except asyncio.CancelledError:
            return


def main(argv: list[str] | None = None) -> int:
    return cli(StratumV2ShapePool, StratumV2ShapeClient, argv, 34255, VARIANTS, "egress.sim.stratum_v2")


if __name__ == "__main__":
    sys.exit(main())
