"""What the sandboxes' DNS answers said: name -> addresses (and CNAMEs), with TTLs.

Guarantees:
- Time is an input (packet time); nothing reads a clock. A record learned at `now`
  with TTL t is valid for `now - CLOCK_SLACK <= at <= now + clamp(t, min_ttl, max_ttl)`:
  a question about an earlier time (a replay whose next file is older) does not see it.
- Bounded: at most `max_entries` records (A/AAAA/CNAME); inserting past the bound
  evicts the least recently refreshed record and counts it (`counters["evicted"]`).
  Expired records are purged at most every `purge_interval` seconds of packet time,
  but kept `linger` seconds past expiry so that a late question about a flow that
  started while the record was valid (`at = flow.start`) still gets the right answer.
- CNAME chains are followed both ways (name -> addresses, address -> names), at most
  `MAX_CHAIN` hops, loops are harmless.
- Answers are facts from the DNS detector: {"name", "type", "data", "ttl"}; type may be
  "A"/"AAAA"/"CNAME" or 1/28/5. Anything malformed is skipped and counted, never raised.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Iterable

from egress.policy.match import normalize_name, packed_address

MAX_CHAIN = 8
CLOCK_SLACK = 5.0      # seconds a record may be "known" before it was learned (capture jitter)
_TYPES = {1: "A", 28: "AAAA", 5: "CNAME", "A": "A", "AAAA": "AAAA", "CNAME": "CNAME"}


class DnsCache:
    def __init__(self, min_ttl: int = 30, max_ttl: int = 86400, max_entries: int = 65536,
                 linger: float = 300.0, purge_interval: float = 30.0):
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.max_entries = max_entries
        self.linger = linger
        self.purge_interval = purge_interval
        # (kind, owner, value) -> (learned, expiry); insertion/refresh order = eviction order
        self._order: OrderedDict[tuple[str, str, Any], tuple[float, float]] = OrderedDict()
        self._addr: dict[str, dict[bytes, tuple]] = {}       # name -> {address: (learned, expiry)}
        self._rev_addr: dict[bytes, dict[str, tuple]] = {}   # address -> {name: (learned, expiry)}
        self._cname: dict[str, dict[str, tuple]] = {}        # name -> {target: (learned, expiry)}
        self._rev_cname: dict[str, dict[str, tuple]] = {}    # target -> {name: (learned, expiry)}
        self._last_purge = float("-inf")
        self.counters = {"learned": 0, "refreshed": 0, "evicted": 0, "expired": 0, "malformed": 0}

    def __len__(self) -> int:
        return len(self._order)

    # -- learning ----------------------------------------------------------------------

    def learn(self, answers: Iterable[Any], now: float) -> int:
        """Remember A/AAAA/CNAME answers; returns how many records were new or refreshed."""
        self._maybe_purge(now)
        n = 0
        try:
            items = list(answers)
        except TypeError:
            self.counters["malformed"] += 1
            return 0
        for ans in items:
            if not isinstance(ans, dict):
                self.counters["malformed"] += 1
                continue
            rtype = ans.get("type")
            kind = _TYPES.get(rtype) if isinstance(rtype, (str, int)) and not isinstance(rtype, bool) else None
            if kind is None:
                continue                                   # MX, TXT, ...: not about addresses
            name = normalize_name(ans.get("name"))
            if not name:
                self.counters["malformed"] += 1
                continue
            ttl = ans.get("ttl")
            ttl = ttl if isinstance(ttl, (int, float)) and not isinstance(ttl, bool) and ttl >= 0 else self.min_ttl
            expiry = now + min(max(ttl, self.min_ttl), self.max_ttl)
            if kind == "CNAME":
                target = normalize_name(ans.get("data"))
                if not target:
                    self.counters["malformed"] += 1
                    continue
                self._put(("C", name, target), (now, expiry), self._cname, self._rev_cname, name, target)
            else:
                addr = packed_address(ans.get("data")) if isinstance(ans.get("data"), str) else None
                if addr is None or (kind == "A") != (len(addr) == 4):
                    self.counters["malformed"] += 1
                    continue
                self._put(("A", name, addr), (now, expiry), self._addr, self._rev_addr, name, addr)
            n += 1
        return n

    def _put(self, key, span, fwd, rev, owner, value) -> None:
        old = self._order.get(key)
        if old is not None:
            span = (min(span[0], old[0]), max(span[1], old[1]))
            self._order.move_to_end(key)
            self.counters["refreshed"] += 1
        else:
            self.counters["learned"] += 1
        self._order[key] = span
        fwd.setdefault(owner, {})[value] = span
        rev.setdefault(value, {})[owner] = span
        while len(self._order) > self.max_entries:
            old_key, _ = self._order.popitem(last=False)
            self._drop(old_key)
            self.counters["evicted"] += 1

    def _drop(self, key) -> None:
        kind, owner, value = key
        fwd, rev = (self._addr, self._rev_addr) if kind == "A" else (self._cname, self._rev_cname)
        for table, a, b in ((fwd, owner, value), (rev, value, owner)):
            inner = table.get(a)
            if inner is not None:
                inner.pop(b, None)
                if not inner:
                    del table[a]

    def _maybe_purge(self, now: float) -> None:
        if now - self._last_purge < self.purge_interval:
            return
        self._last_purge = now
        dead = [k for k, span in self._order.items() if span[1] + self.linger < now]
        for k in dead:
            del self._order[k]
            self._drop(k)
        self.counters["expired"] += len(dead)

    # -- questions ---------------------------------------------------------------------

    def seen(self, name: str, at: float) -> bool:
        """Was any (still valid at `at`) record learned for this name?"""
        return any(_valid(s, at) for s in self._addr.get(name, {}).values()) or \
            any(_valid(s, at) for s in self._cname.get(name, {}).values())

    def addresses(self, name: str, at: float) -> set[bytes] | None:
        """Addresses the name (or its CNAME chain) resolved to, valid at `at`; None: no DNS seen."""
        if not self.seen(name, at):
            return None
        out: set[bytes] = set()
        todo, done = [name], set()
        for _ in range(MAX_CHAIN + 1):
            nxt = []
            for n in todo:
                if n in done:
                    continue
                done.add(n)
                out.update(a for a, s in self._addr.get(n, {}).items() if _valid(s, at))
                nxt.extend(t for t, s in self._cname.get(n, {}).items() if _valid(s, at))
            if not nxt:
                break
            todo = nxt
        return out

    def resolves_to(self, name: str, addr: bytes, at: float) -> bool | None:
        """`addr in addresses(name, at)`, None when no DNS was seen for the name; cheaper
        in the common case of a direct A/AAAA record for exactly this address."""
        span = self._addr.get(name, {}).get(addr)
        if span is not None and _valid(span, at):
            return True                 # a valid record: the name was seen, and goes there
        addrs = self.addresses(name, at)
        return None if addrs is None else addr in addrs

    def names(self, addr: bytes, at: float) -> set[str]:
        """Names that resolved (directly or via CNAMEs) to this address, valid at `at`."""
        out = {n for n, s in self._rev_addr.get(addr, {}).items() if _valid(s, at)}
        todo = list(out)
        for _ in range(MAX_CHAIN):
            nxt = []
            for n in todo:
                for alias, s in self._rev_cname.get(n, {}).items():
                    if _valid(s, at) and alias not in out:
                        out.add(alias)
                        nxt.append(alias)
            if not nxt:
                break
            todo = nxt
        return out

    # -- reload ------------------------------------------------------------------------

    def reconfigured(self, min_ttl: int, max_ttl: int, max_entries: int) -> "DnsCache":
        """This cache with new bounds (self when unchanged); records carry over, newest kept."""
        if (min_ttl, max_ttl, max_entries) == (self.min_ttl, self.max_ttl, self.max_entries):
            return self
        new = DnsCache(min_ttl, max_ttl, max_entries, self.linger, self.purge_interval)
        for key, span in self._order.items():
            kind, owner, value = key
            if kind == "A":
                new._put(key, span, new._addr, new._rev_addr, owner, value)
            else:
                new._put(key, span, new._cname, new._rev_cname, owner, value)
        new.counters = dict(self.counters, evicted=self.counters["evicted"] + new.counters["evicted"])
        new._last_purge = self._last_purge
        return new


def _valid(span: tuple[float, float], at: float) -> bool:
    return span[0] - CLOCK_SLACK <= at <= span[1]
