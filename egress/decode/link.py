"""Link layers by pcap LINKTYPE -> where the IP header starts and which IP version.

Each parser takes the frame bytes and returns `(offset, kind)`: `kind` is 4 or 6
(the link layer said which IP version), 0 (raw IP: the version nibble decides), or
a string, the anomaly name of a frame that carries no IP ("not-ip") or is broken
("eth-truncated", ...). Parsers never raise.
"""
from __future__ import annotations

import struct

_H = struct.Struct("!H")

ETH_IPV4 = 0x0800
ETH_IPV6 = 0x86DD
# 802.1Q, 802.1ad (QinQ) and the pre-standard QinQ tag.
_VLAN_TPIDS = frozenset((0x8100, 0x88A8, 0x9100))
MAX_VLAN_TAGS = 4

_KIND_BY_ETHERTYPE = {ETH_IPV4: 4, ETH_IPV6: 6}


def ethernet(data):
    n = len(data)
    if n < 14:
        return 0, "eth-truncated"
    (etype,) = _H.unpack_from(data, 12)
    off = 14
    tags = 0
    while etype in _VLAN_TPIDS:
        if tags == MAX_VLAN_TAGS:
            return off, "vlan-too-many"
        if off + 4 > n:
            return off, "vlan-truncated"
        (etype,) = _H.unpack_from(data, off + 2)
        off += 4
        tags += 1
    kind = _KIND_BY_ETHERTYPE.get(etype)
    return (off, kind) if kind else (off, "not-ip")


def raw_ip(data):
    return 0, 0


def raw_ipv4(data):
    return 0, 4


def raw_ipv6(data):
    return 0, 6


def sll(data):
    """Linux cooked v1: 16 bytes, protocol (an EtherType) in the last two."""
    if len(data) < 16:
        return 0, "sll-truncated"
    (etype,) = _H.unpack_from(data, 14)
    kind = _KIND_BY_ETHERTYPE.get(etype)
    return (16, kind) if kind else (16, "not-ip")


def sll2(data):
    """Linux cooked v2: 20 bytes, protocol (an EtherType) in the first two."""
    if len(data) < 20:
        return 0, "sll2-truncated"
    (etype,) = _H.unpack_from(data, 0)
    kind = _KIND_BY_ETHERTYPE.get(etype)
    return (20, kind) if kind else (20, "not-ip")


# BSD loopback address families: AF_INET is 2 everywhere, AF_INET6 differs by OS.
_NULL_FAMILIES = {2: 4, 24: 6, 28: 6, 30: 6}


def null(data):
    """BSD loopback (DLT_NULL): a 4-byte address family in the writer's byte order."""
    if len(data) < 4:
        return 0, "null-truncated"
    # Families are small numbers, so the non-zero end tells the byte order.
    family = data[0] if data[0] else data[3]
    kind = _NULL_FAMILIES.get(family)
    return (4, kind) if kind else (4, "not-ip")


def loop(data):
    """OpenBSD loopback (DLT_LOOP): the family is always big-endian."""
    if len(data) < 4:
        return 0, "null-truncated"
    kind = _NULL_FAMILIES.get(data[3])
    return (4, kind) if kind else (4, "not-ip")


PARSERS = {
    0: null,
    1: ethernet,
    12: raw_ip,        # DLT_RAW on some BSDs (pcap files written there keep it)
    14: raw_ip,        # DLT_RAW on OpenBSD
    101: raw_ip,
    108: loop,
    113: sll,
    228: raw_ipv4,
    229: raw_ipv6,
    276: sll2,
}
