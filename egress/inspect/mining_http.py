"""A small HTTP/1.x message splitter for the mining detectors (getwork, WebSocket upgrade).

Not a general HTTP parser (the protocols helper's http.py is that): it cuts a stream
prefix into at most a few messages (start line, lower-cased headers, body) so that
JSON-RPC bodies and mining headers can be checked. Guarantees: never raises, bounded
(header block <= MAX_HEAD bytes, <= max_messages messages), Content-Length and chunked
bodies, a body cut by the prefix is reported as incomplete.

`exchange` walks every message of a keep-alive connection (both directions, responses
paired with their requests) and `more_requests` says whether another request can still
come: the HTTP detectors (http, ethminer, ws_mining, ssh's unwrapping) share one walk per
view (`base.shared`). Bounded: at most MAX_WALK messages per direction, each head within
MAX_HEAD bytes, linear in the bytes given.

Keep-alive (a harmless request first must not hide a later one on the connection):
every request and response that lies within the byte budget is walked
(`exchange`: Content-Length, chunked, 1xx/204/304 and HEAD answers without a
body, a response without a length running until the close), and the HTTP detectors keep
answering NEED_MORE while another request can still come: until the client's direction
is closed or its budget spent, a request or response declared the connection ends
(`Connection: close`, HTTP/1.0 without keep-alive) and it is answered, the server
switched protocols, or its first bytes are not HTTP at all.

Guaranteed: every message within the first `max_bytes` of each direction (the
reassembly budget), also after framing the walk cannot follow (a request line further on
is found again). Not guaranteed: bytes beyond the reassembly budget, or
after the stage's `max_inspect_packets`, are never inspected (the limit of every stream
inspector; the classifier covers the rest of the flow); peers that announce the close
and then do not close (a pool and its miner cooperate) end inspection all the same;
bodies with a Content-Encoding are not decoded.
"""
from __future__ import annotations

import re

from egress.inspect.base import shared

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


# -- keep-alive: every message of a connection -----------------------------------------
#
# A connection may carry many requests (HTTP/1.1 keep-alive, pipelining), and a client
# that wants its mining request unseen sends a harmless one first. `exchange` walks every
# message of both directions that lies inside the bytes it is given, so the detectors see
# all of them, and tells them whether another request can still come. It is a framing
# walk, not a header parse: per message it finds the end of the head and reads the few
# headers that frame the stream (Content-Length, Transfer-Encoding, Connection, Upgrade)
# from the lower-cased head; the detectors parse the headers of the messages they need.

MAX_WALK = 1024          # messages per direction: more than an 8 KiB prefix can hold
_REQUEST_LINE = re.compile(rb"([A-Z][A-Z_-]{0,19}) [\x21-\x7e]{1,8192} HTTP/1\.([01])\r?\n")
_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([0-9]{3})[^\n]{0,1024}\n")
# A prefix that may still become a request line (no newline yet).
_REQUEST_PREFIX = re.compile(rb"[A-Z][A-Z_-]{0,19}(?: [\x21-\x7e]{0,8192}(?: H?T?T?P?/?1?\.?[01]?\r?)?)?\Z")
# The headers that frame a stream, in a lower-cased head: one pass for all of them.
_FRAMING = re.compile(rb"\n(content-length|transfer-encoding|connection|proxy-connection|upgrade)[ \t]*:"
                      rb"([^\r\n]*)")
_RESYNC = (b" HTTP/1.0\r\n", b" HTTP/1.1\r\n", b" HTTP/1.0\n", b" HTTP/1.1\n")


class Msg:
    """One message of a walk: offsets into the direction's bytes and what frames it."""
    __slots__ = ("start", "body_at", "end", "method", "code", "close", "upgrade")

    def __init__(self, start: int, body_at: int, end: int, method: bytes, code: int, close: bool,
                 upgrade: bytes):
        self.start = start        # offset of the start line
        self.body_at = body_at    # offset of the body (just past the blank line)
        self.end = end            # offset just past the message
        self.method = method      # request method (b"" for a response)
        self.code = code          # response status (0 for a request)
        self.close = close        # the connection ends after this message (close, HTTP/1.0)
        self.upgrade = upgrade    # Upgrade header value, lower case (b"" without one)


class Walk:
    """The messages of one direction (see `exchange`).

    `msgs` are the complete messages in order; `partial` says a message (or a start line)
    is still arriving at the end; `close` that a message declared the connection ends
    after it (Connection: close, HTTP/1.0 without keep-alive); `switch` is the index of the
    request (in the requests' walk) whose response switched protocols (101, or 2xx to
    CONNECT; the walk stops there and `end` is where the new protocol starts), -1 without
    one; `end` is
    the offset just past the last message walked, where the bytes the walk could not read
    as HTTP start when `rest` is true (a tunnel, another protocol, garbage); `skipped` that
    the walk had to resynchronise on a later start line (bytes in between were not HTTP).
    `answers` counts the complete final responses (not 1xx, but 101): response number i
    answers request number i."""
    __slots__ = ("msgs", "partial", "close", "switch", "end", "rest", "skipped", "answers")

    def __init__(self):
        self.msgs: list[Msg] = []
        self.partial = False
        self.close = False
        self.switch = -1
        self.end = 0
        self.rest = False
        self.skipped = -1         # offset of the first byte skipped when resynchronising
        self.answers = 0


def _framing_headers(head: bytes) -> tuple[int | None, bool, bytes, bytes]:
    """(Content-Length, chunked, Connection, Upgrade) of a lower-cased head. The length is
    None without the header, -1 when it is not one number (invalid, or several different
    values: framing a peer may read otherwise than we do); the first Connection and
    Upgrade values count (both Connection headers are read)."""
    raw: bytes | None = None
    ambiguous = chunked = False
    conn = upgrade = b""
    for name, value in _FRAMING.findall(head):
        if name == b"content-length":
            value = value.strip()
            if b"," in value:                              # "5, 5" is one length
                parts = {part.strip() for part in value.split(b",")}
                value = parts.pop() if len(parts) == 1 else b"-"
            if raw is None:
                raw = value
            elif value != raw:
                ambiguous = True
        elif name == b"transfer-encoding":
            chunked = chunked or b"chunked" in value
        elif name == b"upgrade":
            upgrade = upgrade or value.strip()
        else:
            conn += value
    length: int | None = None
    if raw is not None:
        length = int(raw) if not ambiguous and raw.isdigit() and len(raw) <= 12 else -1
    return length, chunked, conn, upgrade


def _chunked_end(data: bytes, pos: int) -> int:
    """The offset just past a chunked body at `pos`; -1 while incomplete; -2 when it is not
    chunked framing."""
    n = len(data)
    for _ in range(4096):
        eol = data.find(b"\n", pos, pos + 1024)
        if eol < 0:
            return -1 if n - pos < 1024 else -2
        size = data[pos:eol].split(b";")[0].strip()
        try:
            length = int(size, 16)
        except ValueError:
            return -2
        pos = eol + 1
        if length == 0:                            # trailers, then the blank line
            if data.startswith(b"\r\n", pos) or data.startswith(b"\n", pos):
                return pos + (2 if data[pos] == 13 else 1)
            end, sep = head_end(data, pos - 2 if data[pos - 2:pos] == b"\r\n" else pos - 1)
            return end + sep if end >= 0 else -1
        pos += length
        if pos > n:
            return -1
        if data.startswith(b"\r\n", pos):
            pos += 2
        elif data.startswith(b"\n", pos):
            pos += 1
        elif n - pos < 2:
            return -1
        else:
            return -2
    return -2


def _resync(data: bytes, pos: int, request: bool) -> int:
    """The offset of the next start line after `pos`, or -1: where a peer that frames the
    stream otherwise than we do would find its next message."""
    if not request:
        return data.find(b"HTTP/1.", pos)
    best = -1
    for marker in _RESYNC:
        at = data.find(marker, pos)
        if at >= 0 and (best < 0 or at < best):
            best = at
    if best < 0:
        return -1
    sp = data.rfind(b" ", pos, best)           # "METHOD target HTTP/1.x": the target's start
    if sp < 0:
        return -1
    start = sp
    while start > pos and 65 <= data[start - 1] <= 90:     # the method: the run of A-Z before it
        start -= 1
    return start if start < sp else _resync(data, best + 8, request)


def walk(data: bytes, methods: tuple[bytes, ...] | None = None) -> Walk:
    """Every message of one direction: requests when `methods` is None, else responses,
    paired with the requests' `methods` in order (a HEAD's response has no body, a 2xx to
    CONNECT switches protocols). Never raises; at most MAX_WALK messages."""
    w = Walk()
    msgs = w.msgs
    request = methods is None
    pos, n = 0, len(data)
    while pos < n and len(msgs) < MAX_WALK:
        if request:
            m = _REQUEST_LINE.match(data, pos, pos + 8224)
        else:
            m = _STATUS_LINE.match(data, pos, pos + 1040)
        if m is None:
            rest = data[pos:pos + 8224]
            if b"\n" not in rest and (_REQUEST_PREFIX.match(rest) if request else
                                      (rest[:7] == b"HTTP/1."[:len(rest)] or
                                       (rest.startswith(b"HTTP/1.") and len(rest) < 1040))):
                w.partial = True                   # a start line still arriving
                break
            at = _resync(data, pos + 1, request)
            if at < 0:
                w.rest = True
                break
            if w.skipped < 0:
                w.skipped = pos
            pos = at
            continue
        end, sep = head_end(data, pos)
        if end < 0:
            if n - pos >= MAX_HEAD:                # no end of head within reach: not HTTP
                w.rest = True
            else:
                w.partial = True
            break
        body_at = end + sep
        head = data[pos:end].lower()
        minor = m.group(2) if request else m.group(1)
        code = 0 if request else int(m.group(2))
        length, chunked, conn, upgrade = _framing_headers(head)
        close = b"close" in conn or (minor == b"0" and b"keep-alive" not in conn)
        method = m.group(1) if request else b""
        index = w.answers
        switch = False
        if request:
            bodiless = False
        else:
            asked = methods[index] if index < len(methods) else b""
            bodiless = 100 <= code < 200 or code in (204, 304) or asked == b"HEAD"
            switch = code == 101 or (asked == b"CONNECT" and 200 <= code < 300)
        if switch:
            msgs.append(Msg(pos, body_at, body_at, method, code, close, upgrade))
            w.switch = index
            w.answers += 1
            pos = body_at
            break
        if bodiless:
            stop = body_at
        elif chunked:
            stop = _chunked_end(data, body_at)
            if stop == -1:
                w.partial = True
                break
            if stop == -2:                         # not chunked after all: find the next message
                stop = body_at
                if w.skipped < 0:
                    w.skipped = body_at
        elif length is not None and length >= 0:
            stop = body_at + length
            if stop > n:
                w.partial = True
                break
        elif length == -1:                         # ambiguous length: the next start line decides
            stop = body_at
            if w.skipped < 0:
                w.skipped = body_at
        elif request:
            stop = body_at
        else:                                      # a response that runs until the close
            w.partial = True
            break
        msgs.append(Msg(pos, body_at, stop, method, code, close, upgrade))
        if code >= 200:
            w.answers += 1
        if close:
            w.close = True
        pos = stop
    w.end = pos
    return w


def walk_requests(data: bytes) -> Walk:
    """`walk` of a client direction (a pure function of `data`, for `base.shared`)."""
    return walk(data)


def exchange(view, up: bytes, down: bytes) -> tuple[Walk, Walk]:
    """(requests of `up`, responses of `down`), computed once per view and pair of bytes.

    The response walk depends on the requests (their methods), so its memo entry holds
    both byte objects and is used only while both are the ones given. The last answer
    is also kept on the view itself (`StreamView.walked`, with both byte objects), where
    the HTTP detectors of one round find it without the memo's two lookups."""
    try:
        walked = view.walked
    except AttributeError:                      # a view of another kind: the memo only
        walked = None
    if walked is not None and walked[0] is up and walked[1] is down:
        return walked[2]
    answer = _exchange(view, up, down)
    try:
        view.walked = (up, down, answer)
    except AttributeError:
        pass
    return answer


def _exchange(view, up: bytes, down: bytes) -> tuple[Walk, Walk]:
    """exchange() through the view's memo."""
    requests = shared(view, walk_requests, up)
    key = (exchange, id(down))
    entry = view.memo.get(key)
    if entry is not None and entry[0] is down and entry[1] is up:
        return requests, entry[2]
    methods = tuple(msg.method for msg in requests.msgs)
    responses = walk(down, methods)
    view.memo[key] = (down, up, responses)
    return requests, responses


def more_requests(requests: Walk, responses: Walk, up_done: bool, down_done: bool) -> bool:
    """Whether the connection can still carry a request (or the answer to one) worth
    waiting for. False when: the client's direction is done (closed, or its budget spent)
    and every request it sent is answered or the server's direction is done too; a request
    said the connection closes after it, or the client went on with bytes that are not
    HTTP, and it is answered; the server said the connection closes, or switched protocols,
    and no request is half-way; the server's first bytes are not HTTP at all. `up_done` /
    `down_done`: the direction is closed or full.

    Both peers may break their word (a pool and its miner cooperate): a `Connection:
    close` or HTTP/1.0 that is not followed by the close ends inspection all the same."""
    if responses.rest and not responses.msgs and not requests.partial:
        return False              # the server does not speak HTTP: no exchange to frame
    answered = responses.answers >= len(requests.msgs)
    if up_done or requests.close or requests.rest:
        if answered or down_done or responses.close or responses.switch >= 0 or responses.rest:
            return False
        return True
    if (responses.close or responses.switch >= 0) and not requests.partial:
        return False
    return True
