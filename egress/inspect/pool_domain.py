"""Mining pool names in TLS SNI, DNS queries and HTTP Host headers (mining that hides in TLS).

This detector reads no bytes itself: it looks at the flow facts the TLS, QUIC, DNS
and HTTP detectors set ("tls.sni", "quic.sni", "dns.query" / "dns.queries",
"http.host", "http.connect_target" of a proxy CONNECT; a value may be a string or
a list of strings) and matches them against a `PoolDomains` list. It must therefore
run after those detectors (the registry puts it last). The list comes through the
constructor, so a reload builds a new detector (or calls `swap`) with the new list.

Tri-state: MATCH when a named host is a pool; NO_MATCH when a name was seen and is
not a pool, or when the flow is clearly not going to name one (another protocol was
recognised, or 4 KiB went by without any of those facts); NEED_MORE otherwise.
"""
from __future__ import annotations

from typing import Any

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.inspect.pools import DEFAULT_PATH, PoolDomains, PoolListError
from egress.types import Detection

FACT_KEYS = ("tls.sni", "quic.sni", "http.host", "http.connect_target", "dns.query", "dns.queries")
NAMING_PROTOCOLS = frozenset({None, "tls", "quic", "dns", "http", "http2", "websocket"})
CONFIDENCE = {"tls.sni": 0.9, "quic.sni": 0.9, "http.host": 0.9, "http.connect_target": 0.9,
              "dns.query": 0.8, "dns.queries": 0.8}


class PoolDomainDetector:
    """Pool names from other detectors' facts (TLS SNI, DNS, HTTP Host)."""
    name = "pool_domain"
    protocols = frozenset({6, 17})
    max_bytes = 4096

    def __init__(self, pools: PoolDomains | None = None):
        self.pools = pools if pools is not None else PoolDomains.load()

    def swap(self, pools: PoolDomains) -> None:
        """Point at a reloaded list (one reference assignment: atomic for the engine)."""
        self.pools = pools

    def inspect(self, view: StreamView) -> InspectResult:
        pools = self.pools
        facts = view.facts
        named = False
        for key in FACT_KEYS if facts else ():      # most flows have no facts yet: no loop
            for name in _names(facts.get(key)):
                named = True
                entry = pools.match(name)
                if entry is not None:
                    detection = Detection("mining", "mining.pool_domain",
                                          {"source": key, "name": name[:128], "pool": entry},
                                          CONFIDENCE[key])
                    return InspectResult(Status.MATCH, (detection,))
        if named:
            return NO_MATCH
        if view.app_proto not in NAMING_PROTOCOLS:
            return NO_MATCH
        if len(view.to_server) + len(view.to_client) >= self.max_bytes:
            return NO_MATCH
        if view.closed_to_server and view.closed_to_client:
            return NO_MATCH
        return NEED_MORE


def reload_pool_lists(detectors, path=DEFAULT_PATH) -> str | None:
    """SIGHUP helper: load `path` once and swap it into every PoolDomainDetector among
    `detectors` (e.g. engine.inspect.detectors). Returns None on success; on a bad file
    the old lists stay in place and the one-line error is returned."""
    try:
        pools = PoolDomains.load(path)
    except PoolListError as exc:
        return str(exc)
    for detector in detectors:
        if isinstance(detector, PoolDomainDetector):
            detector.swap(pools)
    return None


def _names(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value[:16] if isinstance(v, str)]
    return []
