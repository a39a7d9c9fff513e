"""Mining inside WebSocket: browser miners and Stratum/CryptoNote/eth-proxy proxied over WS.

After an HTTP/1.1 `Upgrade: websocket` handshake (request from the client, 101 from
the server), the frames of both directions are decoded (client frames unmasked,
fragmented messages joined, permessage-deflate inflated when negotiated) and each
text/binary message that holds JSON (one value, or several lines) is given to the
Stratum, CryptoNote/browser-miner (CoinHive-style {"type": "auth"|"job"|"submit"...})
and eth-proxy classifiers.

Guarantees: never raises; bounded (frames and messages per call, inflated size);
NO_MATCH as soon as the stream is not a WebSocket upgrade, and after MAX_MESSAGES
messages without a mining message. SSH or other tunnels inside WebSocket are the
protocols helper's business (inspect/ssh.py), not this detector's.
"""
from __future__ import annotations

import zlib

from egress.inspect import ethminer, stratum, xmr
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView, shared
from egress.inspect.mining_http import MAX_HEAD, head_end, looks_like_http, parse_head
from egress.inspect.mining_json import Hit, iter_objects, loads, summarize
from egress.types import Detection

MAX_FRAMES = 64
MAX_MESSAGES = 16
MAX_INFLATE = 65536


def classify(obj: dict) -> Hit | None:
    """Any mining classifier's hit for one JSON object (Stratum first, then CryptoNote, eth-proxy)."""
    return stratum.classify(obj) or xmr.classify(obj) or ethminer.classify(obj, False)


def unmask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    if not n:
        return payload
    mask = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(n, "big")


def frames(data: bytes, pos: int = 0, max_frames: int = MAX_FRAMES):
    """(fin, rsv1, opcode, payload) for each complete frame from `pos` (stops at a partial one)."""
    out = []
    n = len(data)
    while pos + 2 <= n and len(out) < max_frames:
        b0, b1 = data[pos], data[pos + 1]
        length = b1 & 0x7F
        at = pos + 2
        if length == 126:
            if at + 2 > n:
                break
            length = int.from_bytes(data[at:at + 2], "big")
            at += 2
        elif length == 127:
            if at + 8 > n:
                break
            length = int.from_bytes(data[at:at + 8], "big")
            at += 8
        key = b""
        if b1 & 0x80:
            if at + 4 > n:
                break
            key = data[at:at + 4]
            at += 4
        if at + length > n:
            break
        payload = data[at:at + length]
        if key:
            payload = unmask(payload, key)
        out.append((bool(b0 & 0x80), bool(b0 & 0x40), b0 & 0x0F, payload))
        pos = at + length
    return out


def ws_messages(data: bytes, pos: int, deflate: bool) -> list[bytes]:
    """Whole messages (text or binary) of one direction, inflated when compressed."""
    out: list[bytes] = []
    parts: list[bytes] = []
    compressed = False
    inflater = zlib.decompressobj(-15) if deflate else None
    for fin, rsv1, opcode, payload in frames(data, pos):
        if opcode >= 8:                      # close / ping / pong
            continue
        if opcode in (1, 2):
            parts = [payload]
            compressed = rsv1
        elif opcode == 0 and parts:
            parts.append(payload)
        else:
            continue
        if not fin:
            continue
        message = b"".join(parts)
        parts = []
        if compressed and inflater is not None:
            try:
                message = inflater.decompress(message + b"\x00\x00\xff\xff", MAX_INFLATE)
            except zlib.error:
                try:                         # no context takeover: a fresh window per message
                    inflater = zlib.decompressobj(-15)
                    message = inflater.decompress(message + b"\x00\x00\xff\xff", MAX_INFLATE)
                except zlib.error:
                    continue
        out.append(message)
        if len(out) >= MAX_MESSAGES:
            break
    return out


class WebSocketMiningDetector:
    """Mining JSON inside WebSocket frames, any port."""
    name = "ws_mining"
    protocols = frozenset({6})
    max_bytes = 8192

    def inspect(self, view: StreamView) -> InspectResult:
        up = view.to_server[:self.max_bytes]
        down = view.to_client[:self.max_bytes]
        is_http = looks_like_http(up)
        if is_http is False or (is_http and not up.startswith(b"GET ")):
            return NO_MATCH
        if is_http is None:
            return self._wait(view)
        if b"websocket" not in up[:MAX_HEAD].lower():
            # No "websocket" in any case within the head's reach (parse_head lower-cases
            # latin-1 text, whose only letters that lower-case to ASCII are A-Z, as
            # bytes.lower() does): the head cannot ask for the upgrade, so a complete (or
            # impossible) head is a NO_MATCH.
            end, _ = head_end(up)
            return self._wait(view) if end < 0 and len(up) < MAX_HEAD else NO_MATCH
        request = shared(view, parse_head, up)
        if request is False:
            return NO_MATCH
        if request is None:
            return self._wait(view)
        _, req_headers, up_body = request
        if "websocket" not in req_headers.get("upgrade", "").lower():
            return NO_MATCH
        response = shared(view, parse_head, down) if down else None
        if response is False:
            return NO_MATCH
        if response is None:
            return self._wait(view)
        status, resp_headers, down_body = response
        if " 101" not in status[:16]:
            return NO_MATCH
        deflate = "permessage-deflate" in resp_headers.get("sec-websocket-extensions", "").lower()
        hits: list[tuple[int, Hit]] = []
        count = 0
        for direction, data, pos in ((0, up, up_body), (1, down, down_body)):
            for message in ws_messages(data, pos, deflate):
                count += 1
                for line in message.split(b"\n")[:8]:
                    line = line.strip()
                    if line[:1] not in (b"{", b"["):
                        continue
                    for obj in iter_objects([loads(line)]):
                        hit = classify(obj)
                        if hit is not None:
                            hits.append((direction, hit))
        if hits:
            best, evidence = summarize(hits)
            evidence = {"inner": best.signature, **evidence}
            if "host" in req_headers:
                evidence["host"] = req_headers["host"][:128]
            detection = Detection("mining", "mining.websocket", evidence, best.confidence)
            return InspectResult(Status.MATCH, (detection,), "websocket")
        if count >= MAX_MESSAGES:
            return NO_MATCH
        return self._wait(view)

    def _wait(self, view: StreamView) -> InspectResult:
        done_up = view.closed_to_server or len(view.to_server) >= self.max_bytes
        done_down = view.closed_to_client or len(view.to_client) >= self.max_bytes
        return NO_MATCH if done_up and done_down else NEED_MORE
