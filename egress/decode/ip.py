"""IPv4 and IPv6 headers -> the transport builder (egress.decode.transport).

Guarantees:
- Never raises for any `0 <= off <= len(data)`.
- The transport segment ends at the IP total length (Ethernet padding and trailers
  are cut off) or at the end of the capture, whichever comes first; in the second
  case `Packet.truncated` is True.
- `complete` says the link layer saw the whole frame (wire length == captured
  length). A frame that is complete yet shorter than its IP length lies about its
  length ("ipv4-bad-length"/"ipv6-bad-length"); an incomplete one was merely cut by
  the snap length (truncated, no anomaly).
- A header that cannot be used at all (too short, wrong version, bad IHL) gives
  `proto == -1`, with the addresses filled in when they were readable.
- Fragments: `fragment` is True for every fragment; only the first one (offset 0)
  has its transport header parsed. Later fragments carry `proto`, no ports, and the
  fragment's bytes as payload.
- IPv6 extension headers (hop-by-hop, routing, fragment, destination options, AH,
  mobility) are walked, at most MAX_EXT_HEADERS of them.
- `ipv4()`/`ipv6()` first try a fast path for the common packet (no options or
  extension headers, not a fragment, TCP or UDP with sane lengths, all captured) that
  unpacks IP and transport header in one struct call; anything else goes to the
  general decoders `ipv4_general()`/`ipv6_general()`. Both give identical results
  (tests/decode/test_decode_fuzz.py checks this).
"""
from __future__ import annotations

import struct

from egress.decode.transport import BUILDERS, other
from egress.types import Packet

_IPV4 = struct.Struct("!BxHxxHBB2x4s4s")     # ver/ihl, total length, frag, ttl, proto, src, dst
_IPV6 = struct.Struct("!4xHBB16s16s")         # payload length, next header, hop limit, src, dst
_H = struct.Struct("!H")
# IP + transport header in one call for the fast paths.
_V4TCP = struct.Struct("!BxHxxHBB2x4s4sHHIIBBH").unpack_from
_V4UDP = struct.Struct("!BxHxxHBB2x4s4sHHH").unpack_from
_V6TCP = struct.Struct("!4xHBB16s16sHHIIBBH").unpack_from
_V6UDP = struct.Struct("!4xHBB16s16sHHH").unpack_from

MAX_EXT_HEADERS = 8
# Extension headers laid out as (next header, length in 8-octet units - 1, ...).
_EXT_GENERIC = frozenset((0, 43, 60, 135, 139, 140))
_EXT_FRAGMENT = 44
_EXT_AH = 51
_EXT_ALL = _EXT_GENERIC | {_EXT_FRAGMENT, _EXT_AH}

_EMPTY = b""


def _broken(ts, version, src, dst, anomaly, truncated=False, ttl=0, ip_len=0):
    return Packet(ts, version, src, dst, -1, 0, 0, 0, 0, 0, 0, _EMPTY, ip_len, ttl, False,
                  truncated, (anomaly,))


def ipv4(ts, data, off, complete):
    caplen = len(data) - off
    if caplen >= 28 and data[off] == 0x45:
        proto = data[off + 9]
        if proto == 6 and caplen >= 40:
            (vihl, total, frag, ttl, proto, src, dst, sport, dport, seq, ack, doff, flags,
             window) = _V4TCP(data, off)
            if not frag & 0x3fff and total <= caplen:
                thl = (doff >> 4) << 2
                if 20 <= thl <= total - 20:
                    t = off + 20
                    return Packet(ts, 4, src, dst, 6, sport, dport, flags, seq, ack, window,
                                  data[t + thl:off + total], total, ttl, False, False, (), -1, -1,
                                  data[t + 20:t + thl] if thl > 20 else _EMPTY)
        elif proto == 17:
            vihl, total, frag, ttl, proto, src, dst, sport, dport, ulen = _V4UDP(data, off)
            if not frag & 0x3fff and total <= caplen and 8 <= ulen <= total - 20:
                return Packet(ts, 4, src, dst, 17, sport, dport, 0, 0, 0, 0,
                              data[off + 28:off + 20 + ulen], total, ttl, False, False, ())
    return ipv4_general(ts, data, off, complete)


def ipv4_general(ts, data, off, complete):
    caplen = len(data) - off
    if caplen < 20:
        return _broken(ts, 4, _EMPTY, _EMPTY, "ipv4-truncated", not complete)
    vihl, total, frag, ttl, proto, src, dst = _IPV4.unpack_from(data, off)
    if vihl >> 4 != 4:
        return _broken(ts, vihl >> 4, _EMPTY, _EMPTY, "ipv4-bad-version")
    hl = (vihl & 15) << 2
    if hl < 20:
        return _broken(ts, 4, src, dst, "ipv4-bad-ihl", ttl=ttl, ip_len=total)
    anomalies = ()
    truncated = False
    if total > caplen:
        end = off + caplen
        truncated = True
        if complete:
            anomalies = ("ipv4-bad-length",)
    elif total < hl:
        # Zero is what segmentation offload leaves in locally captured packets: use the capture.
        end = off + caplen
        anomalies = ("ipv4-bad-length",)
    else:
        end = off + total
    if off + hl > end:
        if truncated and total >= hl:
            return _broken(ts, 4, src, dst, "ipv4-truncated", True, ttl, total)
        return _broken(ts, 4, src, dst, "ipv4-bad-ihl", truncated, ttl, total)
    if frag & 0x3fff:                          # MF set or a non-zero offset
        if frag & 0x1fff:
            return other(ts, 4, src, dst, ttl, total, data, off + hl, end, True, truncated,
                         anomalies, proto)
        fragment = True
    else:
        fragment = False
    builder = BUILDERS.get(proto)
    if builder is None:
        return other(ts, 4, src, dst, ttl, total, data, off + hl, end, fragment, truncated,
                     anomalies, proto)
    return builder(ts, 4, src, dst, ttl, total, data, off + hl, end, fragment, truncated, anomalies)


def ipv6(ts, data, off, complete):
    caplen = len(data) - off
    if caplen >= 48 and data[off] >> 4 == 6:
        nxt = data[off + 6]
        if nxt == 6 and caplen >= 60:
            plen, nxt, hlim, src, dst, sport, dport, seq, ack, doff, flags, window = _V6TCP(data, off)
            thl = (doff >> 4) << 2
            if plen + 40 <= caplen and 20 <= thl <= plen:
                t = off + 40
                return Packet(ts, 6, src, dst, 6, sport, dport, flags, seq, ack, window,
                              data[t + thl:t + plen], plen + 40, hlim, False, False, (), -1, -1,
                              data[t + 20:t + thl] if thl > 20 else _EMPTY)
        elif nxt == 17:
            plen, nxt, hlim, src, dst, sport, dport, ulen = _V6UDP(data, off)
            if plen + 40 <= caplen and 8 <= ulen <= plen:
                return Packet(ts, 6, src, dst, 17, sport, dport, 0, 0, 0, 0,
                              data[off + 48:off + 40 + ulen], plen + 40, hlim, False, False, ())
    return ipv6_general(ts, data, off, complete)


def ipv6_general(ts, data, off, complete):
    caplen = len(data) - off
    if caplen < 40:
        return _broken(ts, 6, _EMPTY, _EMPTY, "ipv6-truncated", not complete)
    if data[off] >> 4 != 6:
        return _broken(ts, data[off] >> 4, _EMPTY, _EMPTY, "ipv6-bad-version")
    plen, nxt, hlim, src, dst = _IPV6.unpack_from(data, off)
    total = plen + 40
    anomalies = ()
    truncated = False
    if total > caplen:
        end = off + caplen
        truncated = True
        if complete:
            anomalies = ("ipv6-bad-length",)
    else:
        end = off + total
    p = off + 40
    fragment = False
    if nxt in _EXT_ALL:
        walked = 0
        while nxt in _EXT_ALL:
            if walked == MAX_EXT_HEADERS:
                return Packet(ts, 6, src, dst, nxt, 0, 0, 0, 0, 0, 0, _EMPTY, total, hlim, fragment,
                              truncated, anomalies + ("ipv6-too-many-ext",))
            walked += 1
            if p + 8 > end:
                name = "ipv6-truncated" if truncated else "ipv6-bad-ext"
                return Packet(ts, 6, src, dst, nxt, 0, 0, 0, 0, 0, 0, _EMPTY, total, hlim,
                              fragment, truncated, anomalies + (name,))
            if nxt == _EXT_FRAGMENT:
                (fo,) = _H.unpack_from(data, p + 2)
                fragment = True
                nxt = data[p]
                p += 8
                if fo & 0xfff8:                # non-first fragment: no transport header here
                    return other(ts, 6, src, dst, hlim, total, data, p, end, True, truncated,
                                 anomalies, nxt)
                continue
            hl = (data[p + 1] + 2) << 2 if nxt == _EXT_AH else (data[p + 1] + 1) << 3
            if p + hl > end:
                name = "ipv6-truncated" if truncated else "ipv6-bad-ext"
                return Packet(ts, 6, src, dst, nxt, 0, 0, 0, 0, 0, 0, _EMPTY, total, hlim,
                              fragment, truncated, anomalies + (name,))
            nxt = data[p]
            p += hl
    builder = BUILDERS.get(nxt)
    if builder is None:
        return other(ts, 6, src, dst, hlim, total, data, p, end, fragment, truncated, anomalies, nxt)
    return builder(ts, 6, src, dst, hlim, total, data, p, end, fragment, truncated, anomalies)


def by_version(ts, data, off, complete):
    """Raw IP link types: the version nibble picks the decoder."""
    if off >= len(data):
        return _broken(ts, 0, _EMPTY, _EMPTY, "ip-truncated", not complete)
    v = data[off] >> 4
    if v == 4:
        return ipv4(ts, data, off, complete)
    if v == 6:
        return ipv6(ts, data, off, complete)
    return _broken(ts, v, _EMPTY, _EMPTY, "ip-bad-version")
