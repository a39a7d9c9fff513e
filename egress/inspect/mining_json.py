"""Newline-delimited JSON scanning shared by the mining detectors (Stratum, CryptoNote, eth-proxy).

Mining pools speak JSON-RPC as one JSON value per line. `scan_lines` reads a
stream prefix and returns the parsed messages plus what the stream looks like so
far; every detector then applies its own message classifier. Guarantees:

- never raises: bad UTF-8, broken or deeply nested JSON, binary data are counted
  as "bad lines", never propagated;
- a real parse (`json.loads`) backs every message: a text that merely mentions
  "mining.subscribe" is not a message;
- bounded: at most `max_messages` parsed values and lines of at most MAX_LINE bytes;
  lines that cannot matter to the caller (no `needles` inside) are only shape-checked
  (starts with '{' or '[', ends with '}' or ']'), not parsed, to keep the cost low;
- tolerant of a mid-session start: the first line may be the tail of a message
  whose start was not captured, so it is allowed to be bad; a partial last line
  is "maybe more", and a complete JSON value without its newline is accepted.
"""
from __future__ import annotations

import json
import re
from typing import Any, Callable, Iterable

from egress.inspect import mining_proxy
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, shared
from egress.types import Detection

MAX_LINE = 16384
# JSON text never holds raw control characters (RFC 8259 requires them escaped), so
# one of these near the start of a stream means "binary protocol, not JSON lines".
_CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_JSON_OPEN = (0x7B, 0x5B)    # '{' '['
_JSON_CLOSE = (0x7D, 0x5D)   # '}' ']'

# Direction states.
JSON = "json"     # at least one JSON value per line seen
MAYBE = "maybe"   # nothing decisive yet (empty, partial first message, ...)
NOT = "not"       # this is not newline-delimited JSON


def loads(raw: bytes) -> Any:
    """json.loads that never raises (bad UTF-8, recursion, anything): None on failure."""
    try:
        return json.loads(raw)
    except Exception:        # ValueError, UnicodeDecodeError, RecursionError
        return None


def scan_lines(data: bytes, needles: Iterable[bytes] | None = (), max_messages: int = 48,
               visit: Callable[[Any], bool] | None = None) -> tuple[list[Any], str, int]:
    """Parse JSON lines from a stream prefix.

    Returns (messages, state, json_lines): the parsed values of the lines that
    contain one of `needles` (all lines when `needles` is empty, none when it is
    None), the direction state (JSON / MAYBE / NOT) and how many lines looked like
    JSON values.
    `visit(value)`, when given, sees each parsed value as it is found; returning True
    stops the scan there (the caller has what it needs).
    """
    messages: list[Any] = []
    if not data:
        return messages, MAYBE, 0
    if _CONTROL.search(data, 0, 256):
        return messages, NOT, 0
    if needles is not None:
        needles = tuple(needles)
    good = bad = 0
    pos, n, index = 0, len(data), 0
    while pos < n and len(messages) < max_messages:
        nl = data.find(b"\n", pos)
        end = n if nl < 0 else nl
        if end - pos > MAX_LINE:
            if good == 0:
                return messages, NOT, 0
            break
        line = data[pos:end].strip()
        if nl < 0:                                   # partial last line
            if line and line[0] in _JSON_OPEN and line[-1] in _JSON_CLOSE:
                value = loads(line) if _wanted(line, needles) else None
                if isinstance(value, (dict, list)):  # a complete value without its newline
                    messages.append(value)
                    good += 1
                    if visit is not None:
                        visit(value)
            elif line and line[0] not in _JSON_OPEN and index > 0:
                bad += 1                             # text that cannot become JSON
            break
        if line:
            if line[0] in _JSON_OPEN and line[-1] in _JSON_CLOSE and not _CONTROL.search(line):
                if _wanted(line, needles):
                    value = loads(line)
                    if isinstance(value, (dict, list)):
                        messages.append(value)
                        good += 1
                        if visit is not None and visit(value):
                            break
                    elif index > 0:
                        bad += 1
                else:
                    good += 1
            elif index > 0:                          # line 0 may be a mid-session tail
                bad += 1
        index += 1
        pos = nl + 1
    if good:
        return messages, JSON, good
    if bad >= 2 or (bad and index > 2):
        return messages, NOT, 0
    if data[:1] not in (b"{", b"[", b" ", b"\t", b"\r", b"\n") and index == 0 and n > 4096:
        return messages, NOT, 0                      # one long non-JSON line
    return messages, MAYBE, 0


def line_shape(data: bytes) -> tuple[str, int]:
    """(state, json_lines) of `scan_lines(data, needles)` for data that holds none of the
    needles: then no line is parsed, so the answer is the same for every detector and
    one scan per view serves them all (through `base.shared`)."""
    _, state, count = scan_lines(data, None)
    return state, count


def has_needle(data: bytes, needles: tuple[bytes, ...]) -> bool:
    """Whether any needle occurs in `data` (else no line of it is worth parsing).

    One regular-expression search for all of them (an alternation of the escaped
    needles, compiled once per needles tuple): several times faster than one
    substring search per needle, on short and long data alike."""
    if not needles:
        return False
    return _needle_re(needles).search(data) is not None


def _needle_re(needles: tuple[bytes, ...]) -> re.Pattern:
    """The alternation of the escaped needles (non-empty), compiled once per tuple."""
    entry = _NEEDLE_RES.get(id(needles))
    if entry is None or entry[0] is not needles:
        if len(_NEEDLE_RES) >= 64:              # callers pass module constants; stay bounded anyway
            _NEEDLE_RES.clear()
        entry = (needles, re.compile(b"|".join(re.escape(n) for n in needles)))
        _NEEDLE_RES[id(needles)] = entry        # entry[0] keeps the tuple (and its id) alive
    return entry[1]


_NEEDLE_RES: dict[int, tuple[tuple[bytes, ...], re.Pattern]] = {}


def _wanted(line: bytes, needles: tuple[bytes, ...] | None) -> bool:
    if needles is None:
        return False
    if not needles:
        return True
    for needle in needles:
        if needle in line:
            return True
    return False


def iter_objects(messages: Iterable[Any]):
    """Flatten JSON-RPC batches: yields each dict of a list, and dicts as they are."""
    for value in messages:
        if isinstance(value, dict):
            yield value
        elif isinstance(value, list):
            for item in value[:16]:
                if isinstance(item, dict):
                    yield item


_HEX = re.compile(r"(0x)?[0-9a-fA-F]+\Z")


def is_hex(value: Any, min_len: int = 1, max_len: int = 1 << 16) -> bool:
    """A string of hex digits (optional 0x) whose digit count is within bounds."""
    if not isinstance(value, str):
        return False
    digits = len(value) - (2 if value[:2] in ("0x", "0X") else 0)
    return min_len <= digits <= max_len and _HEX.match(value) is not None


def redact_login(login: Any, keep: int = 8) -> str:
    """A login with wallets and payment ids shortened to a prefix, worker names kept (short).

    "t1fAhZF5aUJdY7CikGULHmeYk7id8qmvbAd.rig4" -> "t1fAhZF5….rig4": every part between
    separators (. / + :) longer than 16 characters is cut to `keep` characters, an
    e-mail address loses its domain. Logins that are not strings give "".
    """
    if not isinstance(login, str):
        return ""
    parts = re.split(r"([./+:])", login[:256])
    out = []
    for part in parts:
        if "@" in part:
            part = part[:part.find("@")] + "@\u2026"
        if len(part) > 16:
            part = part[:keep] + "\u2026"
        out.append(part)
    return "".join(out)[:64]


def short(value: Any, limit: int = 64) -> str:
    """A printable, bounded rendering of an agent string or similar."""
    if not isinstance(value, str):
        return ""
    return value[:limit]


class Hit:
    """One mining message recognised by a classifier.

    `priority` orders hits of one flow (a login beats a share submit as the headline
    signature); `evidence` holds the small fields worth reporting (worker, agent...).
    """
    __slots__ = ("signature", "method", "confidence", "priority", "evidence")

    def __init__(self, signature: str, method: str, confidence: float = 1.0, priority: int = 0,
                 **evidence: Any):
        self.signature = signature
        self.method = method
        self.confidence = confidence
        self.priority = priority
        self.evidence = {k: v for k, v in evidence.items() if v not in (None, "")}

    def __repr__(self) -> str:
        return "Hit(%s, %s)" % (self.signature, self.method)


DIRECTION_NAMES = ("to_server", "to_client")
NO_HIT_LIMIT = 32   # JSON lines without any mining message: an ordinary JSON-RPC API
EVIDENCE_HITS = 4   # mining messages per direction worth parsing for evidence; then stop


def _scan_hits(data: bytes, needles: tuple[bytes, ...], classify, direction: int,
               hits: list[tuple[int, Hit]]) -> tuple[str, int]:
    """Scan one direction, appending its classified hits to `hits`; -> (state, json_lines)."""
    found: list[Hit] = []

    def visit(value: Any) -> bool:
        for obj in iter_objects((value,)):
            hit = classify(obj)
            if hit is not None:
                found.append(hit)
        return len(found) >= EVIDENCE_HITS      # enough to name the flow: stop parsing

    _, state, count = scan_lines(data, needles, visit=visit)
    hits.extend((direction, hit) for hit in found)
    return state, count


def summarize(hits: list[tuple[int, Hit]]) -> tuple[Hit, dict]:
    """The headline hit and the evidence of the whole flow (methods, directions, worker, agent)."""
    best_dir, best = max(hits, key=lambda dh: (dh[1].confidence, dh[1].priority, -dh[0]))
    evidence: dict[str, Any] = {"method": best.method, "direction": DIRECTION_NAMES[best_dir]}
    methods: list[str] = []
    directions: set[int] = set()
    for direction, hit in hits:
        directions.add(direction)
        if hit.method not in methods and len(methods) < 8:
            methods.append(hit.method)
        for key, value in hit.evidence.items():
            evidence.setdefault(key, value)
    for key, value in best.evidence.items():
        evidence[key] = value
    if len(methods) > 1:
        evidence["methods"] = methods
    if len(directions) == 2:
        evidence["direction"] = "both"
    return best, evidence


def inspect_lines(view: Any, classify, needles: tuple[bytes, ...], max_bytes: int, app_proto: str,
                  category: str = "mining"):
    """The common driver of the JSON-lines mining detectors.

    Scans both directions, classifies every parsed object with `classify(obj) ->
    Hit | None` (messages may come from either side: the client/server roles of the
    flow are not trusted) and returns MATCH with one Detection, NO_MATCH when one
    direction is not JSON lines, when both are complete or full, after NO_HIT_LIMIT
    JSON lines without a hit, or when another detector already named the flow's
    protocol (`view.app_proto`), else NEED_MORE. A SOCKS4/5 or HTTP CONNECT
    handshake in front of the JSON is skipped (and reported as evidence "via").

    When neither direction holds one of `needles`, no message can be classified, and
    the answer (NO_MATCH or NEED_MORE) depends only on the view and `max_bytes`: the
    JSON-lines detectors of one round share it (`view.memo`, keyed by what else it
    depends on: the budget, whether a protocol is named, the closed flags).
    """
    up, down = view.to_server[:max_bytes], view.to_client[:max_bytes]
    entry = _NEEDLE_RES.get(id(needles))        # _needle_re, inlined: this runs on every call
    search = (entry[1].search if entry is not None and entry[0] is needles else
              _needle_re(needles).search) if needles else None
    if search is not None and search(up) is None and search(down) is None:
        key = (inspect_lines, max_bytes, view.app_proto is None, view.closed_to_server, view.closed_to_client)
        entry = view.memo.get(key)
        if entry is not None and entry[0] is up and entry[1] is down:
            return entry[2]
        result = _inspect_lines(view, up, down, None, needles, max_bytes, app_proto, category)
        view.memo[key] = (up, down, result)
        return result
    return _inspect_lines(view, up, down, classify, needles, max_bytes, app_proto, category)


def _inspect_lines(view: Any, up: bytes, down: bytes, classify, needles: tuple[bytes, ...], max_bytes: int,
                   app_proto: str, category: str):
    """inspect_lines on the cut directions; `classify` None: no direction holds a needle."""
    preamble = mining_proxy.strip(up, down)
    if preamble is mining_proxy.INCOMPLETE:
        both_closed = view.closed_to_server and view.closed_to_client
        return NO_MATCH if both_closed else NEED_MORE
    if preamble is not None:
        # A SOCKS or HTTP CONNECT handshake first (miners support proxies): skip it.
        up, down = up[preamble.up:], down[preamble.down:]
    elif view.app_proto is not None:
        # Another detector already named the protocol (another mining dialect, TLS, SSH...):
        # a flow speaks one protocol, so there is nothing left for this one to find.
        return NO_MATCH
    hits: list[tuple[int, Hit]] = []
    done = 0
    json_lines = 0
    binary = False
    for direction, data, closed in ((0, up, view.closed_to_server), (1, down, view.closed_to_client)):
        if classify is not None and (not needles or has_needle(data, needles)):
            state, count = _scan_hits(data, needles, classify, direction, hits)
        else:
            # Nothing to parse: only the shape of the lines counts, and the other
            # JSON-lines detectors need the same answer for these bytes.
            state, count = shared(view, line_shape, data)
        json_lines += count
        if state == NOT:
            binary = True
        if state == NOT or closed or len(data) >= max_bytes:
            done += 1
    if hits:
        best, evidence = summarize(hits)
        if preamble is not None:
            evidence["via"] = preamble.via
            evidence["proxy_target"] = preamble.target[:128]
        detection = Detection(category, best.signature, evidence, best.confidence)
        return InspectResult(Status.MATCH, (detection,), app_proto)
    # One side that is not JSON lines is enough: these protocols are JSON both ways.
    if binary or done == 2 or json_lines >= NO_HIT_LIMIT:
        return NO_MATCH
    return NEED_MORE
