"""Packet decoding: `decode(RawPacket) -> Packet`, pure struct, no scapy. Never raises.

Link layers (pcap LINKTYPE): 0 BSD loopback, 1 Ethernet (802.1Q/802.1ad tags,
stacked up to 4), 101/12/14 raw IP (the version nibble decides), 228 raw IPv4, 229
raw IPv6, 108 OpenBSD loopback, 113 Linux cooked v1, 276 Linux cooked v2. Network:
IPv4 (options skipped, fragments flagged), IPv6 (extension headers walked).
Transport: TCP, UDP, ICMP, ICMPv6; other protocols keep their raw payload.

What a caller can rely on:
- `proto == -1` means no usable IP header: the frame is not IP (anomaly "not-ip",
  counted but not an error: ARP, LLDP...) or it is broken (one of the names below).
- `payload` never holds link padding: it ends at the IP total length, or at the
  end of the capture (then `truncated` is True).
- `fragment` is True for every IP fragment; only the first fragment carries ports
  and flags, later ones have `sport == dport == 0` and the raw fragment bytes.
- `anomalies` is a tuple of the stable short names below, in the order found.

Anomaly names
-------------
Link layer (proto -1):
  not-ip            the frame carries something other than IPv4/IPv6 (not an error)
  unknown-linktype  a LINKTYPE this decoder does not know
  eth-truncated     Ethernet frame shorter than 14 bytes
  vlan-truncated    a VLAN tag cut off;   vlan-too-many  more than 4 stacked tags
  sll-truncated / sll2-truncated / null-truncated   cooked or loopback header cut off
  decode-error      an internal error (a decoder bug); the packet is kept, not raised
IP (proto -1 unless noted):
  ip-truncated      raw IP frame with no bytes;  ip-bad-version  version nibble not 4/6
  ipv4-truncated    fewer than 20 bytes of IPv4 header captured
  ipv4-bad-version  the link layer said IPv4, the header says otherwise
  ipv6-bad-version  the link layer said IPv6, the header says otherwise
  ipv4-bad-ihl      IHL below 5 or beyond the packet
  ipv4-bad-length   (proto kept) total length below the header or beyond a complete frame
  ipv6-truncated    fewer than 40 bytes, or (proto kept) an extension header cut by the capture
  ipv6-bad-length   (proto kept) payload length beyond a complete frame
  ipv6-bad-ext      (proto kept) an extension header runs past the payload length
  ipv6-too-many-ext (proto kept) more than 8 extension headers
Transport (proto kept):
  tcp-truncated     TCP header cut short;  tcp-bad-offset  data offset < 5 or past the segment
  udp-truncated     UDP header cut short;  udp-bad-length  UDP length disagrees with IP
  icmp-truncated    fewer than 4 bytes of ICMP/ICMPv6 header
"""
from __future__ import annotations

from egress.decode import ip as _ip
from egress.decode.link import PARSERS
from egress.types import Packet, RawPacket

__all__ = ["decode", "ANOMALIES", "NOT_IP"]

NOT_IP = "not-ip"

ANOMALIES = (
    "not-ip", "unknown-linktype", "eth-truncated", "vlan-truncated", "vlan-too-many",
    "sll-truncated", "sll2-truncated", "null-truncated", "decode-error",
    "ip-truncated", "ip-bad-version",
    "ipv4-truncated", "ipv4-bad-version", "ipv4-bad-ihl", "ipv4-bad-length",
    "ipv6-truncated", "ipv6-bad-version", "ipv6-bad-length", "ipv6-bad-ext", "ipv6-too-many-ext",
    "tcp-truncated", "tcp-bad-offset", "udp-truncated", "udp-bad-length", "icmp-truncated",
)

_ipv4 = _ip.ipv4
_ipv6 = _ip.ipv6
_by_version = _ip.by_version
_parsers_get = PARSERS.get


def _link_only(ts: float, anomaly: str) -> Packet:
    return Packet(ts, 0, b"", b"", -1, anomalies=(anomaly,))


def decode(raw: RawPacket) -> Packet:
    """Decode one captured frame. Never raises: problems become `anomalies`."""
    try:
        data = raw.data
        linktype = raw.linktype
        if linktype == 1 and len(data) >= 14:
            # The common case inline: untagged Ethernet carrying IP.
            etype = data[12] << 8 | data[13]
            if etype == 0x0800:
                return _ipv4(raw.ts, data, 14, raw.wire_len <= len(data))
            if etype == 0x86DD:
                return _ipv6(raw.ts, data, 14, raw.wire_len <= len(data))
        elif linktype == 101:
            # Raw IP (the live queue): by_version's choice inline, one call less a packet.
            if data:
                version = data[0] >> 4
                if version == 4:
                    return _ipv4(raw.ts, data, 0, raw.wire_len <= len(data))
                if version == 6:
                    return _ipv6(raw.ts, data, 0, raw.wire_len <= len(data))
            return _by_version(raw.ts, data, 0, raw.wire_len <= len(data))
        parser = _parsers_get(linktype)
        if parser is None:
            return _link_only(raw.ts, "unknown-linktype")
        off, kind = parser(data)
        complete = raw.wire_len <= len(data)
        if kind == 4:
            return _ipv4(raw.ts, data, off, complete)
        if kind == 6:
            return _ipv6(raw.ts, data, off, complete)
        if kind == 0:
            return _by_version(raw.ts, data, off, complete)
        return _link_only(raw.ts, kind)
    except Exception:  # noqa: BLE001 - the contract is "never raises"; count it instead
        try:
            ts = float(raw.ts)
        except Exception:  # noqa: BLE001
            ts = 0.0
        return _link_only(ts, "decode-error")
