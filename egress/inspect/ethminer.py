"""Ethereum-family and getwork mining detector: eth-proxy lines, getwork/GBT over HTTP, mining headers.

Recognises:
- eth-proxy ("Stratum" of ethminer/Claymore/Phoenix to a pool, one JSON per line):
  eth_submitLogin (eth_login), eth_getWork, eth_submitWork, eth_submitHashrate, and
  the getWork answer (an array of >= 3 hex strings, the first two of 32 bytes);
- the same methods in HTTP POST bodies (solo mining against a node's getwork API);
- Bitcoin-style getwork, getblocktemplate and submitblock JSON-RPC (raw or in HTTP),
  and the getwork answer {"data", "target"};
- HTTP headers only mining software sends: X-Stratum, X-Mining-Extensions,
  X-Mining-Hashrate, X-Roll-NTime, X-Long-Polling (requests or responses).

Decisions (documented because they are judgement calls):
- Ethereum node JSON-RPC (web3_clientVersion, eth_blockNumber, eth_getBalance,
  eth_call, eth_subscribe...) is NOT mining: only the four work methods above are.
  eth_getWork/eth_submitWork/eth_submitHashrate sent to a node are mining (that is
  what solo miners do), so they count in HTTP bodies too.
- getwork, getblocktemplate and submitblock ARE mining-related: a sandbox has no
  business asking a node for block templates or submitting blocks. getwork is
  unambiguous (confidence 1.0); getblocktemplate and submitblock are also used by pool
  operators and node tooling, so they carry confidence 0.9. Other bitcoind calls
  (getblockcount, getmininginfo, getnetworkhashps...) are ordinary API use, not mining.

Over HTTP, every message of the connection counts, not only the first exchange; bytes
the HTTP walk cannot read as messages (after a protocol switch, a CONNECT, framing a
peer reads otherwise) are scanned as JSON lines.

Keep-alive: every request and response of the connection within the byte budget is
inspected, not only the first exchange (`mining_http.exchange`; what that guarantees,
and what it does not, is in egress.inspect.mining_http's docstring).
"""
from __future__ import annotations

from typing import Any

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView, shared
from egress.inspect.mining_http import _dechunk, exchange, looks_like_http, more_requests, parse_head
from egress.inspect.mining_json import (NOT, Hit, _scan_hits, has_needle, inspect_lines, is_hex, iter_objects,
                                        line_shape, loads, redact_login, short, summarize)
from egress.types import Detection

NEEDLES = (b"eth_", b'"0x', b"getwork", b"getblocktemplate", b"submitblock", b'"data"')
MINING_HEADERS = {
    "x-stratum": "getwork.x_stratum",
    "x-mining-extensions": "getwork.x_mining_extensions",
    "x-mining-hashrate": "getwork.x_mining_hashrate",
    "x-roll-ntime": "getwork.x_roll_ntime",
    "x-long-polling": "getwork.x_long_polling",
}


def _maybe_mining(data: bytes) -> bool:
    """Whether an HTTP direction could hold a hit: a JSON body needs '{' or '[', and every
    mining header name starts with "x-" (mining_http lower-cases latin-1 header names;
    bytes.lower() lower-cases the same letters). Substring tests only: "x-" is in
    data.lower() exactly when "x-" or "X-" is in data (only the x has a case), so no
    lower-cased copy is made; much cheaper than a case-insensitive regular expression."""
    return b"{" in data or b"[" in data or b"x-" in data or b"X-" in data


def classify(obj: dict, http: bool = False) -> Hit | None:
    """One JSON object -> an eth-proxy / getwork Hit, or None."""
    method = obj.get("method")
    params = obj.get("params", [])
    if isinstance(method, str):
        return _call(method, params, obj, http)
    result = obj.get("result")
    if "id" in obj and isinstance(result, list) and len(result) >= 3 and len(result) <= 8 \
            and is_hex(result[0], 64, 64) and is_hex(result[1], 64, 64) and is_hex(result[2], 1, 64):
        return Hit("ethproxy.getWork" + (".http" if http else ""), "eth_getWork(result)", 1.0, 6)
    if "id" in obj and isinstance(result, dict):
        if is_hex(result.get("data"), 128, 512) and is_hex(result.get("target"), 8, 64):
            return Hit("getwork.http" if http else "getwork.rpc", "getwork(result)", 1.0, 7)
        if "coinbasevalue" in result and "previousblockhash" in result and "transactions" in result:
            return Hit("getblocktemplate" + (".http" if http else ".rpc"), "getblocktemplate(result)", 0.9, 7)
    return None


def _call(method: str, params: Any, obj: dict, http: bool) -> Hit | None:
    suffix = ".http" if http else ""
    if method in ("eth_submitLogin", "eth_login"):
        if isinstance(params, list) and params and isinstance(params[0], str):
            return Hit("ethproxy.submitLogin" + suffix, method, 1.0, 9, worker=redact_login(params[0]),
                       rig=short(obj.get("worker"), 32))
        return None
    if method == "eth_getWork":
        if params is None or isinstance(params, list):
            return Hit("ethproxy.getWork" + suffix, method, 1.0, 6)
        return None
    if method == "eth_submitWork":
        if isinstance(params, list) and len(params) >= 3 and is_hex(params[0], 8, 16) \
                and is_hex(params[1], 64, 64) and is_hex(params[2], 64, 64):
            return Hit("ethproxy.submitWork" + suffix, method, 1.0, 5)
        return None
    if method == "eth_submitHashrate":
        if isinstance(params, list) and len(params) >= 2 and is_hex(params[0], 1, 64) and is_hex(params[1], 1, 64):
            return Hit("ethproxy.submitHashrate" + suffix, method, 1.0, 4)
        return None
    transport = ".http" if http else ".rpc"
    if method == "getwork" and (params is None or isinstance(params, list)):
        return Hit("getwork" + transport, method, 1.0, 8)
    if method == "getblocktemplate" and (params is None or isinstance(params, list)):
        return Hit("getblocktemplate" + transport, method, 0.9, 7)
    if method == "submitblock" and isinstance(params, list) and params and is_hex(params[0], 160):
        return Hit("submitblock" + transport, method, 0.9, 6)
    return None


def _classify_lines(obj: dict) -> Hit | None:
    return classify(obj, False)


class EthMinerDetector:
    """eth-proxy and getwork mining, raw or inside HTTP, any port."""
    name = "ethminer"
    protocols = frozenset({6})
    max_bytes = 8192

    def inspect(self, view: StreamView) -> InspectResult:
        to_server = view.to_server[:self.max_bytes]
        to_client = view.to_client[:self.max_bytes]
        if to_server[:8] == b"CONNECT ":          # a proxy tunnel: the JSON lines come after it
            return inspect_lines(view, _classify_lines, NEEDLES, self.max_bytes, "stratum")
        http_s = looks_like_http(to_server)
        http_c = looks_like_http(to_client)
        if http_s or (not to_server and http_c):
            return self._inspect_http(to_server, to_client, view)
        if to_server and http_s is None and not view.closed_to_server:
            return NEED_MORE            # "POS" could still become "POST "
        return inspect_lines(view, _classify_lines, NEEDLES, self.max_bytes, "stratum")

    def _inspect_http(self, to_server: bytes, to_client: bytes, view: StreamView) -> InspectResult:
        requests, responses = exchange(view, to_server, to_client)
        hits: list[tuple[int, Hit]] = []
        tails_open = 0            # directions whose bytes past the HTTP messages may still matter
        for direction, data, w, closed in ((0, to_server, requests, view.closed_to_server),
                                           (1, to_client, responses, view.closed_to_client)):
            if _maybe_mining(data):   # else no mining header name, no JSON: only the framing matters
                for msg in w.msgs:
                    _message_hits(data, msg, direction, hits)
            # Bytes the walk could not read as HTTP (skipped, or after the last message: a
            # tunnel, raw JSON lines after a request, framing a peer reads otherwise) are
            # scanned as JSON lines, so that a request hidden there is still found; while
            # they may still become JSON lines, the detector waits for them.
            tail = w.skipped if w.skipped >= 0 else (w.end if w.rest or w.switch >= 0 else -1)
            if tail >= 0 and tail < len(data):
                rest = data[tail:]
                if has_needle(rest, NEEDLES):
                    state, _ = _scan_hits(rest, NEEDLES, _classify_lines, direction, hits)
                else:
                    state, _ = shared(view, line_shape, rest)     # (the same bytes object when tail is 0)
                if state != NOT and not closed and len(data) < self.max_bytes:
                    tails_open += 1
        if hits:
            best, evidence = summarize(hits)
            detection = Detection("mining", best.signature, evidence, best.confidence)
            return InspectResult(Status.MATCH, (detection,), "http")
        up_done = view.closed_to_server or len(to_server) >= self.max_bytes
        down_done = view.closed_to_client or len(to_client) >= self.max_bytes
        if tails_open or more_requests(requests, responses, up_done, down_done):
            return NEED_MORE
        return NO_MATCH


def _message_hits(data: bytes, msg, direction: int, hits: list) -> None:
    """The mining headers and JSON-RPC body of one complete HTTP message."""
    headers = None
    # b"x-" in data[msg.start:msg.body_at].lower(), without the copies (see _maybe_mining)
    if data.find(b"x-", msg.start, msg.body_at) >= 0 or data.find(b"X-", msg.start, msg.body_at) >= 0:
        head = parse_head(data, msg.start)
        headers = head[1] if head else {}
        if not MINING_HEADERS.keys().isdisjoint(headers):          # rare: look at which, in order
            for header, signature in MINING_HEADERS.items():
                if header in headers:
                    hits.append((direction, Hit(signature, "http", 1.0, 7, header=header,
                                                value=short(headers[header]))))
    body = data[msg.body_at:msg.end]
    if msg.end > msg.body_at and b"chunked" in data[msg.start:msg.body_at].lower():
        body = _dechunk(data, msg.body_at)[0]
    body = body.strip()
    if body[:1] not in (b"{", b"["):
        return
    for obj in iter_objects([loads(body)]):
        hit = classify(obj, True)
        if hit is not None:
            if headers is None:
                head = parse_head(data, msg.start)
                headers = head[1] if head else {}
            agent = headers.get("user-agent")
            if agent:
                hit.evidence.setdefault("agent", short(agent))
            hits.append((direction, hit))
