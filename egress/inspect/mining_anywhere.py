"""Mining JSON-RPC anywhere in the client's stream: the backstop behind the dialect detectors.

Why it exists: the JSON-lines mining detectors (stratum, xmr, ethminer) decide NO_MATCH
as soon as a stream does not open as their protocol, and once every detector has decided,
the live gateway hands the flow to the kernel fast path. The sandbox client and the pool
both belong to the attacker, so they can open with anything (an HTTP exchange, bytes that
look like TLS) and speak Stratum after it (tests/inspect/test_known_evasions.py).

Guarantees:
- Every line of the client's stream (to_server) within the first `max_bytes` that holds
  one of the dialects' needles is parsed as JSON and classified by that dialect's own
  `classify`: the same signatures and the same rules against false positives as the
  dialect's detector. A hit is a MATCH, with the evidence `"after": N`, the bytes of
  the stream before the mining line.
- Only the client's direction counts. A server that sends a page quoting the protocol
  (documentation, a test fixture) is not mining; a sandbox that sends a login is.
- NEED_MORE until the client's direction is closed (its FIN reached) or the budget is
  spent. That is the cost of the guarantee: a flow stays under inspection, and live its
  client's side stays in the queue, until its close, the client's first `max_bytes`,
  or the client's `max_inspect_packets` payload packets. A server that talks first
  and long (a pool's banner) no longer ends it (egress.inspect.stage, ONEWAY). Bounded work per call: one regular-expression scan per dialect,
  at most MAX_LINES lines parsed per dialect, and none of it again while the client's
  bytes have not grown (memoised per view).
- Not seen: bytes beyond the reassembly budget (the depth limit of every stream
  inspector; the classifier watches the rest of the flow), a JSON message split across
  lines, anything inside real encryption.
"""
from __future__ import annotations

import re

from egress.inspect import ethminer, stratum, xmr
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView, shared
from egress.inspect.mining_json import _needle_re, iter_objects, loads
from egress.types import Detection

MAX_BYTES = 8192
MAX_LINES = 16

# (needles, classify) of each JSON-lines dialect, in the order their hits are preferred.
_DIALECTS = ((stratum.NEEDLES, stratum.classify), (xmr.NEEDLES, xmr.classify),
             (ethminer.NEEDLES, ethminer.classify))


# Every dialect's needles in one alternation: most streams hold none of them, and one
# scan says so where a scan per dialect would take three.
_ANY_NEEDLE = re.compile(b"|".join(re.escape(n) for needles, _ in _DIALECTS for n in needles))


def first_hit(data: bytes):
    """(hit, offset of its line) for the first mining message in `data`, else None."""
    if _ANY_NEEDLE.search(data) is None:
        return None                 # no dialect's needle: none of the scans below finds a line
    best = None
    for needles, classify in _DIALECTS:
        search = _needle_re(needles).finditer
        lines_seen = 0
        last_line = -1
        for match in search(data):
            start = data.rfind(b"\n", 0, match.start()) + 1
            if start == last_line:
                continue
            end = data.find(b"\n", match.end())
            if end < 0:
                break                                   # the line is still arriving
            last_line = start
            lines_seen += 1
            if lines_seen > MAX_LINES or (best is not None and start >= best[1]):
                break
            line = data[start:end].strip()
            brace = line.find(b"{")
            value = loads(line[brace:]) if brace >= 0 else None
            if value is None:
                continue
            hit = next((h for h in map(classify, iter_objects([value])) if h is not None), None)
            if hit is not None:
                best = (hit, start)
                break
    return best


class MiningAnywhereDetector:
    name = "mining_anywhere"
    protocols = frozenset({6})
    max_bytes = MAX_BYTES
    # Reads view.to_server and view.closed_to_server only and waits with the NEED_MORE
    # constant (egress.inspect.base): the server's bytes alone do not make it run again.
    client_side_only = True

    def inspect(self, view: StreamView) -> InspectResult:
        up = view.to_server[:self.max_bytes]
        found = shared(view, first_hit, up)
        if found is not None:
            hit, offset = found
            evidence = {"method": hit.method, "direction": "to_server", "after": offset, **hit.evidence}
            return InspectResult(Status.MATCH, (Detection("mining", hit.signature, evidence, hit.confidence),))
        if view.closed_to_server or len(up) >= self.max_bytes:
            return NO_MATCH
        return NEED_MORE
