"""Mining inside WebSocket: browser miners and Stratum/CryptoNote/eth-proxy proxied over WS.

After an HTTP/1.1 `Upgrade: websocket` handshake (request from the client, 101 from
the server; on a keep-alive connection any request may be the one that upgrades), the
frames of both directions are decoded (client frames unmasked, fragmented messages
joined, permessage-deflate inflated when negotiated) and each
text/binary message that holds JSON (one value, or several lines) is given to the
Stratum, CryptoNote/browser-miner (CoinHive-style {"type": "auth"|"job"|"submit"...})
and eth-proxy classifiers.

Guarantees: never raises; bounded (frames and messages per call, inflated size);
NO_MATCH when the stream is not HTTP, when the switch was not to WebSocket, when no
further request can come without an upgrade (see below), and after MAX_MESSAGES
messages without a mining message.

Keep-alive: every request and response of the connection within the byte budget is
inspected, not only the first exchange (`mining_http.exchange`; what that guarantees,
and what it does not, is in egress.inspect.mining_http's docstring). When the server's
side is closed or spent before the 101 (a big answer to an earlier request took the
server's budget: egress.inspect.stage), the client's frames after a last request that
asks for websocket are decoded alone; mining in them is a MATCH with "server_side":
"unseen" in the evidence.

SSH or other tunnels inside WebSocket are the protocols helper's business
(inspect/ssh.py), not this detector's.
"""
from __future__ import annotations

import zlib

from egress.inspect import ethminer, stratum, xmr
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.inspect.mining_http import METHODS, exchange, looks_like_http, more_requests, parse_head
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
        if is_http is False or (is_http and not up.startswith(METHODS)):
            return NO_MATCH
        if is_http is None:
            return self._wait(view)
        requests, responses = exchange(view, up, down)
        k = responses.switch
        if k < 0:
            if view.closed_to_client:
                found = self._client_frames_alone(up, requests)
                if found is not None:
                    return found
            # No protocol switch yet: a later request on the connection may still ask for one.
            # (No "websocket" anywhere, in any case: no request has asked yet; the walk's
            # Upgrade values are lower-cased as bytes.lower() does.)
            return self._wait(view, requests, responses)
        if k >= len(requests.msgs):
            return NO_MATCH
        req = requests.msgs[k]
        if req.method != b"GET" or b"websocket" not in req.upgrade or responses.msgs[-1].code != 101:
            return NO_MATCH               # another protocol (h2c, CONNECT...): not this detector's
        request = parse_head(up, req.start)
        response = parse_head(down, responses.msgs[-1].start)
        if not request or not response:
            return NO_MATCH
        req_headers, up_body = request[1], req.end
        status, resp_headers, down_body = response
        deflate = "permessage-deflate" in resp_headers.get("sec-websocket-extensions", "").lower()
        hits, count = _mining_messages(((0, up, up_body), (1, down, down_body)), deflate)
        if hits:
            return _match(hits, req_headers)
        if count >= MAX_MESSAGES:
            return NO_MATCH
        return self._wait(view)

    @staticmethod
    def _client_frames_alone(up: bytes, requests) -> InspectResult | None:
        """The server's side is closed or spent before its answer to an upgrade (a big
        answer to an earlier request of the connection took the server's budget, see
        egress.inspect.stage): the client's frames after its last request, a GET asking
        for websocket, are read alone. Client frames are masked, so only the decoded
        messages can show mining; a hit is a MATCH (evidence "server_side": "unseen"),
        anything else leaves the usual path to decide."""
        if not requests.msgs:
            return None
        req = requests.msgs[-1]
        if req.method != b"GET" or b"websocket" not in req.upgrade:
            return None
        request = parse_head(up, req.start)
        if not request:
            return None
        offered = "permessage-deflate" in request[1].get("sec-websocket-extensions", "").lower()
        hits, _ = _mining_messages(((0, up, req.end),), offered)
        if not hits:
            return None
        return _match(hits, request[1], server_side="unseen")

    def _wait(self, view: StreamView, requests=None, responses=None) -> InspectResult:
        done_up = view.closed_to_server or len(view.to_server) >= self.max_bytes
        done_down = view.closed_to_client or len(view.to_client) >= self.max_bytes
        if done_up and done_down:
            return NO_MATCH
        if requests is not None and not more_requests(requests, responses, done_up, done_down):
            return NO_MATCH
        return NEED_MORE


def _mining_messages(sources, deflate: bool) -> tuple[list[tuple[int, Hit]], int]:
    """(direction, hit) for each mining JSON object in the messages of `sources`
    ((direction, bytes, offset of the first frame) each), and how many messages there were."""
    hits: list[tuple[int, Hit]] = []
    count = 0
    for direction, data, pos in sources:
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
    return hits, count


def _match(hits: list[tuple[int, Hit]], req_headers: dict, **extra) -> InspectResult:
    best, evidence = summarize(hits)
    evidence = {"inner": best.signature, **evidence, **extra}
    if "host" in req_headers:
        evidence["host"] = req_headers["host"][:128]
    detection = Detection("mining", "mining.websocket", evidence, best.confidence)
    return InspectResult(Status.MATCH, (detection,), "websocket")
