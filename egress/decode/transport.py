"""Transport headers (TCP, UDP, ICMP/ICMPv6, anything else) -> a finished `Packet`.

Each builder gets the already-parsed IP fields plus `data[off:end]`, the transport
segment as far as the IP length and the capture allow, and returns the `Packet`.
Guarantees: never raises for any `off <= end <= len(data)`; the payload never
extends past `end` (so Ethernet padding never becomes payload); a header that does
not fit adds an anomaly name and yields an empty payload.

`truncated` tells the builder that `end` was cut short by the capture, not by the
IP length: then a header running past `end` is "<proto>-truncated" rather than a
lying length field.
"""
from __future__ import annotations

import struct

from egress.types import Packet

_TCP = struct.Struct("!HHIIBBH")        # ports, seq, ack, data offset, flags, window
_UDP = struct.Struct("!HHH")            # ports, length
_PORTS = struct.Struct("!HH")


def tcp(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated, anomalies):
    if end - off < 20:
        sport = dport = 0
        if end - off >= 4:
            sport, dport = _PORTS.unpack_from(data, off)
        return Packet(ts, version, src, dst, 6, sport, dport, 0, 0, 0, 0, b"", ip_len, ttl,
                      fragment, truncated, anomalies + ("tcp-truncated",))
    sport, dport, seq, ack, doff, flags, window = _TCP.unpack_from(data, off)
    hl = (doff >> 4) << 2
    if hl < 20:
        return Packet(ts, version, src, dst, 6, sport, dport, flags, seq, ack, window, b"", ip_len,
                      ttl, fragment, truncated, anomalies + ("tcp-bad-offset",))
    if off + hl > end:
        name = "tcp-truncated" if truncated else "tcp-bad-offset"
        return Packet(ts, version, src, dst, 6, sport, dport, flags, seq, ack, window, b"", ip_len,
                      ttl, fragment, truncated, anomalies + (name,))
    options = data[off + 20:off + hl] if hl > 20 else b""
    return Packet(ts, version, src, dst, 6, sport, dport, flags, seq, ack, window,
                  data[off + hl:end], ip_len, ttl, fragment, truncated, anomalies, -1, -1, options)


def udp(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated, anomalies):
    avail = end - off
    if avail < 8:
        sport = dport = 0
        if avail >= 4:
            sport, dport = _PORTS.unpack_from(data, off)
        return Packet(ts, version, src, dst, 17, sport, dport, 0, 0, 0, 0, b"", ip_len, ttl,
                      fragment, truncated, anomalies + ("udp-truncated",))
    sport, dport, ulen = _UDP.unpack_from(data, off)
    if ulen > avail:
        # A first fragment or a snaplen cut legitimately holds less than the UDP length.
        if not (fragment or truncated):
            anomalies = anomalies + ("udp-bad-length",)
        payload = data[off + 8:end]
    elif ulen < 8:
        # Length 0 is legal only for IPv6 jumbograms; anything else below 8 is a lie.
        anomalies = anomalies + ("udp-bad-length",)
        payload = data[off + 8:end]
    else:
        payload = data[off + 8:off + ulen]
    return Packet(ts, version, src, dst, 17, sport, dport, 0, 0, 0, 0, payload, ip_len, ttl,
                  fragment, truncated, anomalies)


def icmp(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated, anomalies,
         proto=1):
    """ICMP and ICMPv6 share the layout: type, code, checksum, 4 bytes of rest-of-header."""
    avail = end - off
    if avail < 4:
        return Packet(ts, version, src, dst, proto, 0, 0, 0, 0, 0, 0, b"", ip_len, ttl, fragment,
                      truncated, anomalies + ("icmp-truncated",))
    payload = data[off + 8:end] if avail > 8 else b""
    return Packet(ts, version, src, dst, proto, 0, 0, 0, 0, 0, 0, payload, ip_len, ttl, fragment,
                  truncated, anomalies, data[off], data[off + 1])


def icmpv6(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated, anomalies):
    return icmp(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated,
                anomalies, 58)


def other(ts, version, src, dst, ttl, ip_len, data, off, end, fragment, truncated, anomalies,
          proto):
    """Protocols we do not parse (GRE, ESP, SCTP, a non-first fragment...): raw payload."""
    return Packet(ts, version, src, dst, proto, 0, 0, 0, 0, 0, 0, data[off:end], ip_len, ttl,
                  fragment, truncated, anomalies)


# proto number -> builder; anything missing goes to `other`.
BUILDERS = {6: tcp, 17: udp, 1: icmp, 58: icmpv6}
