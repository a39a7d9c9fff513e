"""Compiled matchers for rule conditions: address sets, port sets, domain patterns.

Guarantees:
- Every matcher is immutable and built once at policy load; matching takes packed
  addresses (4 or 16 bytes, as the flow stores them) and never parses text per packet.
- `CidrSet.lookup` is a longest-prefix match (one dict probe per distinct prefix length
  present), so the answer does not depend on the order the networks were written in.
- Domain names are compared lower-case without a trailing dot. A pattern is either an
  exact name ("github.com") or "*." followed by a name, which matches every name
  strictly below it at any depth ("*.githubusercontent.com" matches
  "raw.githubusercontent.com" and "a.b.githubusercontent.com", not the apex).
"""
from __future__ import annotations

import ipaddress
import re
import socket
from typing import Any, Iterable

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


def normalize_name(name: Any) -> str:
    """Lower-case, no trailing dot, no port; '' when it is not a usable name."""
    if not isinstance(name, str):
        return ""
    name = name.strip().lower()
    if name.startswith("["):                    # "[v6]:port" is an address, not a name
        return ""
    if name.count(":") == 1:                    # "host:port"
        name = name.split(":", 1)[0]
    name = name.rstrip(".")
    if not name or ":" in name or len(name) > 253:
        return ""
    return name


def is_ip_literal(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def valid_domain_pattern(pattern: str) -> str | None:
    """None when the pattern is valid, else why not."""
    if not isinstance(pattern, str) or not pattern:
        return "a domain must be a non-empty string"
    body = pattern[2:] if pattern.startswith("*.") else pattern
    if "*" in body:
        return "wildcard '*' is only allowed as the whole first label ('*.example.com')"
    body = body.rstrip(".").lower()
    if is_ip_literal(body):
        return "'%s' is an address: use dest: for addresses" % pattern
    labels = body.split(".")
    if len(labels) < 1 or not all(_LABEL.match(label) for label in labels):
        return "'%s' is not a valid domain name" % pattern
    return None


class DomainSet:
    """Exact names and '*.suffix' patterns; `match(name)` returns the pattern that matched
    (for wildcards, the most specific one: the longest suffix)."""
    __slots__ = ("exact", "suffixes", "patterns", "_by_suffix")

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(p.lower().rstrip(".") for p in patterns)
        self.exact = frozenset(p for p in self.patterns if not p.startswith("*."))
        # ".example.com" -> pattern text, longest first so the reported pattern is the most specific
        self.suffixes = tuple(sorted(((p[1:], p) for p in self.patterns if p.startswith("*.")),
                                     key=lambda sp: -len(sp[0])))
        self._by_suffix = dict(self.suffixes)

    def match(self, name: str) -> str | None:
        if name in self.exact:
            return name
        by_suffix = self._by_suffix
        if by_suffix:
            # The name's own suffixes from each '.', longest first: a few dict probes
            # instead of one endswith() per pattern; the same answer as `suffixes` in order.
            i = name.find(".")
            while i >= 0:
                pattern = by_suffix.get(name[i:])
                if pattern is not None:
                    return pattern
                i = name.find(".", i + 1)
        return None


class CidrSet:
    """IPv4 and IPv6 networks; `lookup(packed)` -> the most specific network text or None."""
    __slots__ = ("_tables", "networks")

    def __init__(self, networks: Iterable[ipaddress.IPv4Network | ipaddress.IPv6Network]):
        self.networks = tuple(networks)
        tables: dict[int, dict[int, dict[int, str]]] = {4: {}, 6: {}}
        for net in self.networks:
            bits = net.max_prefixlen
            mask = ((1 << bits) - 1) ^ ((1 << (bits - net.prefixlen)) - 1)
            table = tables[net.version].setdefault(net.prefixlen, {})
            table.setdefault(int(net.network_address) & mask, str(net))
        # per version: [(prefixlen, mask, {masked int: text})], longest prefix first
        self._tables = {}
        for version, by_len in tables.items():
            bits = 32 if version == 4 else 128
            self._tables[version] = [
                (plen, ((1 << bits) - 1) ^ ((1 << (bits - plen)) - 1), table)
                for plen, table in sorted(by_len.items(), reverse=True)]

    def lookup(self, packed: bytes) -> str | None:
        n = len(packed)
        tables = self._tables[4] if n == 4 else self._tables[6] if n == 16 else ()
        if not tables:
            return None
        value = int.from_bytes(packed, "big")
        for _plen, mask, table in tables:
            hit = table.get(value & mask)
            if hit is not None:
                return hit
        return None

    def __contains__(self, packed: bytes) -> bool:
        return self.lookup(packed) is not None

    def __bool__(self) -> bool:
        return bool(self.networks)


class PortSet:
    """Inclusive port ranges; `match(port)` -> the range text that matched or None."""
    __slots__ = ("ranges",)

    def __init__(self, ranges: Iterable[tuple[int, int]]):
        self.ranges = tuple(sorted(set(ranges)))

    def match(self, port: int) -> str | None:
        for lo, hi in self.ranges:
            if lo <= port <= hi:
                return str(lo) if lo == hi else "%d-%d" % (lo, hi)
        return None


def parse_network(text: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """'10.0.0.0/8', '10.1.2.3' (a /32), '2001:db8::/32'; ValueError with a reason otherwise."""
    if not isinstance(text, str) or isinstance(text, bool):
        raise ValueError("expected an address or CIDR string, got %s" % type(text).__name__)
    try:
        return ipaddress.ip_network(text.strip(), strict=True)
    except ValueError as e:
        if "has host bits set" in str(e):
            raise ValueError("'%s' has host bits set (did you mean '%s'?)"
                             % (text, ipaddress.ip_network(text.strip(), strict=False))) from None
        raise ValueError("'%s' is not a valid address or CIDR" % text) from None


def packed_address(text: str) -> bytes | None:
    """The address's 4 or 16 bytes, None when `text` is not an address."""
    if not isinstance(text, str):
        try:
            return ipaddress.ip_address(text.strip()).packed
        except (ValueError, AttributeError, TypeError):
            return None
    text = text.strip()
    # Fast path: text the C parser reads AND writes back unchanged is in canonical form,
    # which ipaddress reads to the same bytes; anything else goes to ipaddress.
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    try:
        packed = socket.inet_pton(family, text)
        if socket.inet_ntop(family, packed) == text:
            return packed
    except (OSError, ValueError):
        pass
    try:
        return ipaddress.ip_address(text).packed
    except ValueError:
        return None
