"""Helpers for the mining detector tests: views, engine-like incremental feeding, WebSocket wrapping."""
from __future__ import annotations

import os
import random

from egress.inspect.base import InspectResult, Status, StreamView

C, S = 0, 1


def view(up: bytes = b"", down: bytes = b"", closed: bool = False, sizes=(), facts=None,
         app_proto=None) -> StreamView:
    return StreamView(6, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 3333, up, down,
                      closed_to_server=closed, closed_to_client=closed, facts=facts or {},
                      app_proto=app_proto, sizes=sizes)


def one_shot(detector, transcript, closed: bool = True) -> InspectResult:
    up = b"".join(d for k, d in transcript if k == C)
    down = b"".join(d for k, d in transcript if k == S)
    return detector.inspect(view(up, down, closed))


def grow(detector, transcript, step: int = 1, limit: int = 8192) -> tuple[InspectResult, int]:
    """Feed the transcript `step` bytes at a time, in order, calling the detector after each
    piece like the engine does, until it decides; then close both directions.
    Returns (final result, number of calls)."""
    streams = [b"", b""]
    calls = 0
    for direction, data in transcript:
        for i in range(0, len(data), step):
            streams[direction] += data[i:i + step]
            if len(streams[direction]) > limit:
                break
            calls += 1
            result = detector.inspect(view(streams[0], streams[1]))
            assert result.status in Status
            if result.status is not Status.NEED_MORE:
                return result, calls
    calls += 1
    return detector.inspect(view(streams[0], streams[1], closed=True)), calls


def signature(result: InspectResult) -> str | None:
    return result.detections[0].signature if result.detections else None


def ws_frame(payload: bytes, mask: bool, opcode: int = 1, fin: bool = True, rsv1: bool = False,
             rng: random.Random | None = None) -> bytes:
    head = bytes([(0x80 if fin else 0) | (0x40 if rsv1 else 0) | opcode])
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
    key = (rng or random.Random(n)).randbytes(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


WS_REQUEST = (b"GET /proxy HTTP/1.1\r\nHost: ws.example:443\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
              b"Origin: https://site.example\r\n\r\n")
WS_RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def ws_wrap(transcript, split_lines: bool = True) -> list[tuple[int, bytes]]:
    """The transcript as WebSocket traffic: handshake, then one frame per message (client masked)."""
    rng = random.Random(7)
    out = [(C, WS_REQUEST), (S, WS_RESPONSE)]
    for direction, data in transcript:
        parts = [p for p in data.split(b"\n") if p] if split_lines else [data]
        for part in parts:
            out.append((direction, ws_frame(part, mask=direction == C, rng=rng)))
    return out


def random_bytes(n: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(n) if seed is not None else os.urandom(n)
