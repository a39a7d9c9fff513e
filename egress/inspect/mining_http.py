"""A small HTTP/1.x message splitter for the mining detectors (getwork, WebSocket upgrade).

Not a general HTTP parser (the protocols helper's http.py is that): it cuts a stream
prefix into at most a few messages (start line, lower-cased headers, body) so that
JSON-RPC bodies and mining headers can be checked. Guarantees: never raises, bounded
(header block <= MAX_HEAD bytes, <= max_messages messages), Content-Length and chunked
bodies, a body cut by the prefix is reported as incomplete.
"""
from __future__ import annotations

MAX_HEAD = 8192
METHODS = (b"GET ", b"POST ", b"PUT ", b"HEAD ", b"OPTIONS ", b"PATCH ", b"DELETE ", b"CONNECT ")


class HttpMessage:
    __slots__ = ("start", "headers", "body", "complete", "end")

    def __init__(self, start: str, headers: dict[str, str], body: bytes, complete: bool, end: int):
        self.start = start            # request or status line
        self.headers = headers        # lower-case name -> value (last one wins)
        self.body = body
        self.complete = complete      # the whole body is inside the prefix
        self.end = end                # offset just past this message (when complete)

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("HTTP/")


_PROBES = (b"HTTP/1.",) + METHODS
# Every proper prefix of a probe (b"" included): the first bytes that cannot decide yet.
_UNDECIDED = frozenset(p[:i] for p in _PROBES for i in range(len(p)))


def looks_like_http(data: bytes) -> bool | None:
    """True/False once the first bytes decide it, None while too short to tell."""
    head = data[:8]
    if head.startswith(_PROBES):
        return True
    if len(head) >= 8:
        return False
    return None if head in _UNDECIDED else False


def head_end(data: bytes, pos: int = 0) -> tuple[int, int]:
    """(offset of the blank line ending the header block at `pos`, its length), or
    (-1, 2) while there is none within MAX_HEAD bytes."""
    end = data.find(b"\r\n\r\n", pos, pos + MAX_HEAD)
    if end >= 0:
        return end, 4
    return data.find(b"\n\n", pos, pos + MAX_HEAD), 2


def parse_head(data: bytes, pos: int = 0):
    """(start line, headers, body offset), or None while the header block is incomplete,
    or False when it is not an HTTP header block (too long, bad bytes)."""
    end, sep = head_end(data, pos)
    if end < 0:
        return False if len(data) - pos >= MAX_HEAD else None
    try:
        text = data[pos:end].decode("latin-1")
    except Exception:
        return False
    lines = text.replace("\r\n", "\n").split("\n")
    headers: dict[str, str] = {}
    for line in lines[1:64]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return lines[0], headers, end + sep


def messages(data: bytes, max_messages: int = 4) -> list[HttpMessage]:
    """The first HTTP messages of one direction (the last one may be incomplete)."""
    out: list[HttpMessage] = []
    pos = 0
    while pos < len(data) and len(out) < max_messages:
        head = parse_head(data, pos)
        if not head:
            break
        start, headers, body_at = head
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body, complete, end = _dechunk(data, body_at)
        else:
            try:
                length = int(headers.get("content-length", "0") or 0)
            except ValueError:
                length = 0
            if start.startswith("HTTP/") and "content-length" not in headers:
                length = len(data) - body_at          # read-until-close response
            length = max(0, min(length, 1 << 20))
            body = data[body_at:body_at + length]
            complete = len(body) == length
            end = body_at + len(body)
        out.append(HttpMessage(start, headers, body, complete, end))
        if not complete:
            break
        pos = end
    return out


def framing(data: bytes, max_messages: int = 4) -> tuple[int, bool]:
    """(len(messages(data)), whether its last message is complete), without header dicts.

    A head that names no body length (neither Content-Length nor Transfer-Encoding
    anywhere in it, in any case: parse_head lower-cases latin-1 text, whose only
    letters that lower-case to ASCII are A-Z, which bytes.lower() lower-cases too) is
    framed as `messages` frames it: a request
    has no body, a response runs to the end of the data. Any other head hands the
    whole direction to `messages`, so the answer is always `messages`'s."""
    count, pos, n = 0, 0, len(data)
    while pos < n and count < max_messages:
        end, sep = head_end(data, pos)
        if end < 0:
            break
        head = data[pos:end].lower()
        if b"content-length" in head or b"transfer-encoding" in head:
            msgs = messages(data, max_messages)
            return len(msgs), bool(msgs) and msgs[-1].complete
        body_at = end + sep
        count += 1
        if data.startswith(b"HTTP/", pos):
            pos = body_at + min(n - body_at, 1 << 20)     # read-until-close response
        else:
            pos = body_at
    return count, count > 0


def _dechunk(data: bytes, pos: int) -> tuple[bytes, bool, int]:
    body = bytearray()
    for _ in range(64):
        eol = data.find(b"\r\n", pos, pos + 32)
        if eol < 0:
            return bytes(body), False, len(data)
        try:
            size = int(data[pos:eol].split(b";")[0], 16)
        except ValueError:
            return bytes(body), True, len(data)
        pos = eol + 2
        if size == 0:
            return bytes(body), True, min(len(data), pos + 2)
        chunk = data[pos:pos + size]
        body += chunk
        if len(chunk) < size:
            return bytes(body), False, len(data)
        pos += size + 2
    return bytes(body), False, len(data)
