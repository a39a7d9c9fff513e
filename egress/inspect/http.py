"""HTTP/1.x request and response heads: method, target, Host, User-Agent, Upgrade, status.

Guarantees (egress.inspect.base contract): pure, never raises, port independent,
reads at most `max_bytes` per direction.

Facts: http.method, http.uri (the request target; for CONNECT the authority, also
in http.connect_target), http.host (Host header, lower case, port removed; the port
goes to http.host_port), http.user_agent, http.upgrade (lower case, e.g. "websocket",
with http.websocket_protocol for Sec-WebSocket-Protocol), http.version, and from the
server http.status (int). HTTP/2 prior knowledge ("PRI * HTTP/2.0") is reported as
app_proto "http2" without facts.

The facts come from the first request and response (the engine keeps the first value of
a fact); a later request of a keep-alive connection adds http.upgrade,
http.websocket_protocol and http.connect_target when the first did not set them. The
detector answers MATCH once no further request can come (see below), NEED_MORE with its
facts until then. A later request's Host is not a fact (http.host stays the first one):
a keep-alive connection that names another host later is not seen by host-based rules.

Keep-alive: every request and response of the connection within the byte budget is
inspected, not only the first exchange (`mining_http.exchange`; what that guarantees,
and what it does not, is in egress.inspect.mining_http's docstring).
"""
from __future__ import annotations

import re

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView, shared
from egress.inspect.mining_http import exchange, more_requests

MAX_BYTES = 8192
METHODS = (b"GET", b"POST", b"HEAD", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
           b"PROPFIND", b"PROPPATCH", b"MKCOL", b"COPY", b"MOVE", b"LOCK", b"UNLOCK", b"REPORT",
           b"SEARCH", b"MKCALENDAR", b"PURGE", b"LINK", b"UNLINK")
_METHOD_PREFIXES = tuple(m + b" " for m in METHODS)
# The proper prefixes of "METHOD ": first bytes that may still become a request line.
_METHOD_UNDECIDED = frozenset(p[:i] for p in _METHOD_PREFIXES for i in range(len(p)))
_REQUEST_LINE = re.compile(rb"([A-Z]{3,12}) ([\x21-\x7e]{1,4096}) HTTP/(1\.[01])\Z")
_STATUS_LINE = re.compile(rb"HTTP/(1\.[01]) (\d{3})(?: [\x20-\x7e\x80-\xff]*)?\Z")
_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
# Facts a later request of a keep-alive connection may add (when the first did not set them).
_LATER_FACTS = ("http.upgrade", "http.websocket_protocol", "http.connect_target")


_BYTES_WS = " \t\n\r\x0b\x0c"      # what bytes.strip() strips (ASCII whitespace only)


def parse_head(data: bytes) -> tuple[str, list[bytes], dict[str, str]]:
    """-> (state, [first line], headers) with state need | no | ok; header names lower case.

    The header block is decoded once (latin-1: one character per byte, so it splits
    where the bytes split) and cut as text; stripping and lower-casing do what the
    bytes methods do (ASCII whitespace, ASCII letters), so the answer is that of
    `parse_head_reference` (tests/inspect/test_http_parse_head.py)."""
    end = data.find(b"\r\n\r\n", 0, MAX_BYTES)
    sep = b"\r\n"
    if end < 0:
        alt = data.find(b"\n\n", 0, MAX_BYTES)   # bare-LF clients exist; accept them
        if alt >= 0:
            end, sep = alt, b"\n"
    if end < 0:
        return ("no" if len(data) >= MAX_BYTES else "need"), [], {}
    lines = data[:end].decode("latin-1").split(sep.decode("latin-1"))
    headers: dict[str, str] = {}
    for line in lines[1:100]:
        name, colon, value = line.partition(":")
        if not colon or not name or " " in name.strip("\r"):
            return "no", [], {}
        key = name.strip(_BYTES_WS)
        key = key.lower() if key.isascii() else key.encode("latin-1").lower().decode("latin-1")
        if key not in headers:
            headers[key] = value.strip(_BYTES_WS)[:1024]
    first_end = data.find(sep, 0, end)
    first = data[:first_end if first_end >= 0 else end]
    return "ok", [first.rstrip(b"\r")], headers


def parse_head_reference(data: bytes) -> tuple[str, list[bytes], dict[str, str]]:
    """The definition `parse_head` must equal: the header lines cut and decoded as bytes."""
    end = data.find(b"\r\n\r\n", 0, MAX_BYTES)
    sep = b"\r\n"
    if end < 0:
        alt = data.find(b"\n\n", 0, MAX_BYTES)
        if alt >= 0:
            end, sep = alt, b"\n"
    if end < 0:
        return ("no" if len(data) >= MAX_BYTES else "need"), [], {}
    lines = data[:end].split(sep)
    headers: dict[str, str] = {}
    for line in lines[1:100]:
        name, colon, value = line.partition(b":")
        if not colon or not name or b" " in name.strip(b"\r"):
            return "no", [], {}
        key = name.strip().lower().decode("latin-1")
        if key not in headers:
            headers[key] = value.strip().decode("latin-1")[:1024]
    return "ok", [lines[0].rstrip(b"\r")], headers


def _split_host(host: str) -> tuple[str, int | None]:
    host = host.strip().lower()
    if host.startswith("["):                  # [v6]:port
        close = host.find("]")
        port = host[close + 2:] if close > 0 and host[close + 1:close + 2] == ":" else ""
        return host[1:close] if close > 0 else host, int(port) if port.isdigit() else None
    name, _, port = host.rpartition(":") if host.count(":") == 1 else (host, "", "")
    return name.rstrip("."), int(port) if port.isdigit() and int(port) < 65536 else None


def request_facts(data: bytes) -> tuple[str, dict]:
    """Parse the request head at the start of `data` -> (need | no | ok, facts).

    Pure: detectors share one parse per view through `base.shared` (read-only)."""
    if not data:
        return "need", {}
    if not data.startswith(_METHOD_PREFIXES):
        if len(data) < 8 and data in _METHOD_UNDECIDED:
            return "need", {}
        return "no", {}
    state, first, headers = parse_head(data)
    if state != "ok":
        if state == "need":
            nl = data.find(b"\n")
            if nl >= 0 and not _REQUEST_LINE.match(data[:nl].rstrip(b"\r")):
                return "no", {}
        return state, {}
    m = _REQUEST_LINE.match(first[0])
    if not m:
        return "no", {}
    method, target, version = m.group(1, 2, 3)
    method, target, version = method.decode("latin-1"), target.decode("latin-1"), version.decode("latin-1")
    facts: dict = {"http.method": method, "http.uri": target[:2048], "http.version": version}
    host = headers.get("host")
    if method == "CONNECT":
        facts["http.connect_target"] = target[:512]
        host = host or target
    if host:
        name, port = _split_host(host)
        facts["http.host"] = name
        if port is not None:
            facts["http.host_port"] = port
    if "user-agent" in headers:
        facts["http.user_agent"] = headers["user-agent"][:512]
    if "upgrade" in headers:
        facts["http.upgrade"] = headers["upgrade"].lower()[:64]
    if "sec-websocket-protocol" in headers:
        facts["http.websocket_protocol"] = headers["sec-websocket-protocol"][:128]
    return "ok", facts


def response_status(data: bytes) -> tuple[str, int | None]:
    if not data:
        return "need", None
    if not data.startswith(b"HTTP/"[:len(data)]):
        return "no", None
    nl = data.find(b"\n")
    if nl < 0:
        return ("no" if len(data) > 512 else "need"), None
    m = _STATUS_LINE.match(data[:nl].rstrip(b"\r"))
    if not m:
        return "no", None
    return "ok", int(m.group(2))


class HttpDetector:
    name = "http"
    protocols = frozenset({6})
    max_bytes = MAX_BYTES

    def inspect(self, view: StreamView) -> InspectResult:
        if view.to_server.startswith(_H2_PREFACE[:len(view.to_server)]) and view.to_server:
            if len(view.to_server) >= len(_H2_PREFACE):
                return InspectResult(Status.MATCH, (), "http2", {})
            return NEED_MORE
        state, facts = shared(view, request_facts, view.to_server)
        if state == "no":
            return NO_MATCH
        if state == "need":
            if view.closed_to_server:
                return NO_MATCH
            return NEED_MORE
        rstate, status = response_status(view.to_client)
        if status is not None:
            facts = {**facts, "http.status": status}     # the parse is shared: never change it
        if rstate == "need" and not view.closed_to_client:
            return InspectResult(Status.NEED_MORE, (), "http", facts)
        if rstate == "no":
            return InspectResult(Status.MATCH, (), "http", facts)     # the server speaks no HTTP
        # Keep-alive: the later requests of the connection, until none can come.
        up, down = view.to_server, view.to_client
        requests, responses = exchange(view, up, down)
        for msg in requests.msgs[1:]:
            if msg.upgrade or msg.method == b"CONNECT":               # rare: parse that head
                later = request_facts(up[msg.start:msg.body_at])[1]
                fresh = {k: later[k] for k in _LATER_FACTS if k in later and k not in facts}
                if fresh:
                    facts = {**facts, **fresh}
        up_done = view.closed_to_server or len(up) >= MAX_BYTES
        down_done = view.closed_to_client or len(down) >= MAX_BYTES
        if more_requests(requests, responses, up_done, down_done):
            return InspectResult(Status.NEED_MORE, (), "http", facts)
        return InspectResult(Status.MATCH, (), "http", facts)
