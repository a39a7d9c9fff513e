"""Packet crafting and capture writing for tests, golden captures and benchmarks. No scapy.

Guarantees:
- Every builder returns wire bytes with correct IPv4 header, TCP, UDP, ICMP and
  ICMPv6 checksums (scapy and tcpdump agree; see tests/testing/test_craft.py).
  Addresses are text ("10.0.0.1", "fd00::1") or packed bytes; the IP version
  follows the address.
- `tcp()`, `udp()`, `icmp()` return a complete IP packet (link type 101, raw IP);
  `ether()`, `sll()`, `sll2()`, `null()` wrap one in a link layer.
- `TcpSession` writes a realistic conversation (handshake, data with ACKs, FIN or
  RST close) with consistent sequence numbers and a clock advancing per packet.
- `write_pcap()` / `write_pcapng()` take (ts, bytes) pairs; `generate_bulk_capture()`
  writes a large interleaved many-flow capture quickly (about 1M packets in ~10-20 s).
"""
from __future__ import annotations

import functools
import ipaddress
import random
import struct
from pathlib import Path
from typing import Iterable, Iterator, Sequence

__all__ = [
    "addr", "checksum", "ipv4", "ipv6", "tcp", "udp", "icmp", "ether", "vlan_tag", "sll", "sll2",
    "null", "ipv6_ext", "ipv6_fragment_header", "fragment_ipv4", "TcpSession", "UdpExchange",
    "write_pcap", "write_pcapng", "generate_bulk_capture", "FLAG_BITS",
]

FLAG_BITS = {"F": 0x01, "S": 0x02, "R": 0x04, "P": 0x08, "A": 0x10, "U": 0x20, "E": 0x40, "C": 0x80}


@functools.lru_cache(maxsize=4096)
def _packed(a: str) -> bytes:
    return ipaddress.ip_address(a).packed


def addr(a: str | bytes) -> bytes:
    """Text or packed address -> packed bytes (4 or 16)."""
    if isinstance(a, (bytes, bytearray)):
        if len(a) not in (4, 16):
            raise ValueError("packed address must be 4 or 16 bytes")
        return bytes(a)
    return _packed(a)


def checksum(data: bytes) -> int:
    """Internet checksum (RFC 1071). Sum of 16-bit words == the big integer mod 65535."""
    if len(data) & 1:
        data += b"\0"
    n = int.from_bytes(data, "big")
    s = n % 0xFFFF
    if s == 0 and n:
        s = 0xFFFF
    return ~s & 0xFFFF


def _flags(flags: str | int) -> int:
    if isinstance(flags, int):
        return flags
    bits = 0
    for ch in flags.upper():
        bits |= FLAG_BITS[ch]
    return bits


def _pseudo(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!IxxxB", length, proto)


_IPV4_HDR = struct.Struct("!BBHHHBBH4s4s")


def ipv4(src, dst, proto: int, payload: bytes, ttl: int = 64, ident: int = 0, df: bool = True,
         mf: bool = False, frag_offset: int = 0, options: bytes = b"", tos: int = 0,
         total_length: int | None = None) -> bytes:
    """An IPv4 packet. `frag_offset` in bytes (multiple of 8); `total_length` may lie."""
    src, dst = addr(src), addr(dst)
    if len(options) % 4:
        options += b"\0" * (4 - len(options) % 4)
    hl = 20 + len(options)
    total = hl + len(payload) if total_length is None else total_length
    frag = (0x4000 if df else 0) | (0x2000 if mf else 0) | (frag_offset >> 3)
    hdr = _IPV4_HDR.pack(0x40 | (hl >> 2), tos, total & 0xFFFF, ident, frag, ttl, proto, 0, src, dst)
    hdr += options
    return hdr[:10] + struct.pack("!H", checksum(hdr)) + hdr[12:] + payload


def ipv6(src, dst, next_header: int, payload: bytes, hop_limit: int = 64, flow_label: int = 0,
         ext: bytes = b"", payload_length: int | None = None) -> bytes:
    """An IPv6 packet. `ext` is a chain of extension headers already linked by `ipv6_ext`;
    `next_header` is then the first extension header's type."""
    src, dst = addr(src), addr(dst)
    plen = len(ext) + len(payload) if payload_length is None else payload_length
    return struct.pack("!IHBB", 0x60000000 | (flow_label & 0xFFFFF), plen & 0xFFFF, next_header,
                       hop_limit) + src + dst + ext + payload


def ipv6_ext(next_header: int, body: bytes = b"", ah: bool = False) -> bytes:
    """One generic extension header (hop-by-hop 0, routing 43, dest options 60, AH 51).

    `next_header` is the type of what FOLLOWS this header; this header's own type is
    given by whatever precedes it (ipv6(next_header=...)/tcp(ext_first=...) or the
    previous extension header). E.g. hop-by-hop then TCP:
    `tcp(..., ext=ipv6_ext(6), ext_first=0)`. `body` is padded so the header is a
    multiple of 8 bytes (AH: of 4)."""
    size = 2 + len(body)
    unit = 4 if ah else 8
    if size < 8:
        size = 8
    size = -(-size // unit) * unit
    body = body + b"\0" * (size - 2 - len(body))
    length = size // 4 - 2 if ah else size // 8 - 1
    return bytes((next_header, length)) + body


def ipv6_fragment_header(next_header: int, offset: int = 0, more: bool = False,
                         ident: int = 1) -> bytes:
    return struct.pack("!BxHI", next_header, (offset & ~7) | (1 if more else 0), ident)


def _l4(src, dst, proto: int, segment: bytes, csum_at: int, ip_kwargs: dict, ext: bytes = b"",
        ext_first: int | None = None) -> bytes:
    s, d = addr(src), addr(dst)
    if "ip_options" in ip_kwargs:
        ip_kwargs["options"] = ip_kwargs.pop("ip_options")
    c = checksum(_pseudo(s, d, proto, len(segment)) + segment)
    if proto == 17 and c == 0:
        c = 0xFFFF
    segment = segment[:csum_at] + struct.pack("!H", c) + segment[csum_at + 2:]
    if len(s) == 4:
        return ipv4(s, d, proto, segment, **ip_kwargs)
    return ipv6(s, d, proto if ext_first is None else ext_first, segment, ext=ext, **ip_kwargs)


_TCP_HDR = struct.Struct("!HHIIBBHHH")


def tcp(src, dst, sport: int, dport: int, flags: str | int = "S", seq: int = 0, ack: int = 0,
        payload: bytes = b"", window: int = 65535, options: bytes = b"", urgent: int = 0,
        data_offset: int | None = None, **ip_kwargs) -> bytes:
    """A TCP segment in IPv4/IPv6. `data_offset` (in 32-bit words) may lie; `ip_kwargs` go to
    ipv4()/ipv6() (ttl, ident, df, ip_options; hop_limit, ext, ext_first...)."""
    if len(options) % 4:
        options += b"\1" * (4 - len(options) % 4)      # NOP padding
    doff = (20 + len(options)) // 4 if data_offset is None else data_offset
    seg = _TCP_HDR.pack(sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, (doff & 15) << 4,
                        _flags(flags), window, 0, urgent) + options + payload
    ext = ip_kwargs.pop("ext", b"")
    first = ip_kwargs.pop("ext_first", None)
    return _l4(src, dst, 6, seg, 16, ip_kwargs, ext, first)


def udp(src, dst, sport: int, dport: int, payload: bytes = b"", length: int | None = None,
        **ip_kwargs) -> bytes:
    """A UDP datagram in IPv4/IPv6; `length` may lie."""
    ulen = 8 + len(payload) if length is None else length
    seg = struct.pack("!HHHH", sport, dport, ulen & 0xFFFF, 0) + payload
    ext = ip_kwargs.pop("ext", b"")
    first = ip_kwargs.pop("ext_first", None)
    return _l4(src, dst, 17, seg, 6, ip_kwargs, ext, first)


def icmp(src, dst, type: int = 8, code: int = 0, payload: bytes = b"", ident: int = 1,
         seq: int = 1, **ip_kwargs) -> bytes:
    """ICMP (IPv4) or ICMPv6 (IPv6: type 128/129 are echo). Rest-of-header = ident, seq."""
    s = addr(src)
    body = struct.pack("!BBHHH", type, code, 0, ident, seq) + payload
    if len(s) == 4:
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        if "ip_options" in ip_kwargs:
            ip_kwargs["options"] = ip_kwargs.pop("ip_options")
        return ipv4(s, dst, 1, body, **ip_kwargs)
    ext = ip_kwargs.pop("ext", b"")
    first = ip_kwargs.pop("ext_first", None)
    return _l4(s, dst, 58, body, 2, ip_kwargs, ext, first)


def fragment_ipv4(packet: bytes, size: int) -> list[bytes]:
    """Split an IPv4 packet (no options) into fragments of `size` payload bytes (multiple of 8)."""
    if size % 8 or size <= 0:
        raise ValueError("fragment size must be a positive multiple of 8")
    hl = (packet[0] & 15) * 4
    header, body = packet[:hl], packet[hl:]
    ident = struct.unpack_from("!H", packet, 4)[0]
    proto, ttl = packet[9], packet[8]
    out = []
    for off in range(0, len(body), size):
        chunk = body[off:off + size]
        more = off + size < len(body)
        out.append(ipv4(header[12:16], header[16:20], proto, chunk, ttl=ttl, ident=ident, df=False,
                        mf=more, frag_offset=off))
    return out


# --- link layers -----------------------------------------------------------------------------

def _ethertype(packet: bytes) -> int:
    return 0x86DD if packet and packet[0] >> 4 == 6 else 0x0800


def vlan_tag(vid: int, tpid: int = 0x8100, pcp: int = 0) -> tuple[int, int]:
    return (tpid, (pcp << 13) | (vid & 0xFFF))


def ether(packet: bytes, src: bytes = b"\x02\0\0\0\0\x01", dst: bytes = b"\x02\0\0\0\0\x02",
          vlans: Sequence[int | tuple[int, int]] = (), ethertype: int | None = None,
          pad: bool = True) -> bytes:
    """Ethernet II frame; `vlans` outermost first (an int is an 802.1Q VID, or a
    (tpid, tci) pair from vlan_tag()); padded to the 60-byte minimum like a real NIC."""
    etype = _ethertype(packet) if ethertype is None else ethertype
    tags = b""
    for v in vlans:
        tpid, tci = vlan_tag(v) if isinstance(v, int) else v
        tags += struct.pack("!HH", tpid, tci)
    frame = dst + src + tags + struct.pack("!H", etype) + packet
    if pad and len(frame) < 60:
        frame += b"\0" * (60 - len(frame))
    return frame


def sll(packet: bytes, pkttype: int = 4, ethertype: int | None = None) -> bytes:
    """Linux cooked v1 (LINKTYPE 113); pkttype 4 = outgoing."""
    etype = _ethertype(packet) if ethertype is None else ethertype
    return struct.pack("!HHH8sH", pkttype, 1, 6, b"\x02\0\0\0\0\x01", etype) + packet


def sll2(packet: bytes, pkttype: int = 4, ifindex: int = 2, ethertype: int | None = None) -> bytes:
    """Linux cooked v2 (LINKTYPE 276)."""
    etype = _ethertype(packet) if ethertype is None else ethertype
    return struct.pack("!HHIHBB8s", etype, 0, ifindex, 1, pkttype, 6, b"\x02\0\0\0\0\x01") + packet


def null(packet: bytes, family: int | None = None, byteorder: str = "little") -> bytes:
    """BSD loopback (LINKTYPE 0): address family in the writer's byte order."""
    fam = (2 if packet and packet[0] >> 4 == 4 else 30) if family is None else family
    return fam.to_bytes(4, byteorder) + packet


# --- conversations ---------------------------------------------------------------------------

class TcpSession:
    """A TCP conversation with consistent sequence numbers and a clock.

    >>> s = TcpSession(("10.0.0.1", 40000), ("10.0.0.2", 3333))
    >>> s.handshake(); s.send(True, b"hello\\n"); s.send(False, b"hi\\n"); s.close()
    >>> s.packets   # [(ts, ip_bytes), ...]; link type 101 unless `link` wraps them
    """

    def __init__(self, client: tuple, server: tuple, t0: float = 1_700_000_000.0,
                 step: float = 0.001, client_isn: int = 1000, server_isn: int = 5000,
                 link=None, mss: int = 1460, window: int = 64240):
        self.client, self.server = client, server
        self.t = t0
        self.step = step
        self.link = link                 # e.g. craft.ether, to write LINKTYPE 1
        self.mss = mss
        self.window = window
        self.next_seq = {True: client_isn, False: server_isn}   # keyed by from_client
        self.packets: list[tuple[float, bytes]] = []

    def _emit(self, from_client: bool, flags: str, payload: bytes = b"", options: bytes = b"",
              seq: int | None = None) -> bytes:
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        s = self.next_seq[from_client] if seq is None else seq
        a = self.next_seq[not from_client] if "A" in flags else 0
        pkt = tcp(src[0], dst[0], src[1], dst[1], flags, s, a, payload, self.window, options)
        if self.link is not None:
            pkt = self.link(pkt)
        self.packets.append((self.t, pkt))
        self.t += self.step
        return pkt

    def handshake(self) -> "TcpSession":
        mss = struct.pack("!BBH", 2, 4, self.mss)
        self._emit(True, "S", options=mss)
        self.next_seq[True] += 1
        self._emit(False, "SA", options=mss)
        self.next_seq[False] += 1
        self._emit(True, "A")
        return self

    def send(self, from_client: bool, data: bytes, segment_size: int | None = None,
             ack: bool = True) -> "TcpSession":
        """`data` in segments of at most `segment_size` (default: the MSS), each PSH/ACK,
        followed by a pure ACK from the peer when `ack`."""
        size = segment_size or self.mss
        for i in range(0, max(len(data), 1), size):
            chunk = data[i:i + size]
            self._emit(from_client, "PA", chunk)
            self.next_seq[from_client] += len(chunk)
        if ack:
            self._emit(not from_client, "A")
        return self

    def segment(self, from_client: bool, data: bytes, seq_offset: int = 0,
                flags: str = "PA") -> "TcpSession":
        """One raw segment at next_seq + seq_offset, without advancing the sequence: for
        retransmissions, out-of-order and overlapping segments in reassembly tests."""
        self._emit(from_client, flags, data, seq=self.next_seq[from_client] + seq_offset)
        return self

    def advance(self, from_client: bool, nbytes: int) -> "TcpSession":
        self.next_seq[from_client] += nbytes
        return self

    def close(self, from_client: bool = True) -> "TcpSession":
        self._emit(from_client, "FA")
        self.next_seq[from_client] += 1
        self._emit(not from_client, "A")
        self._emit(not from_client, "FA")
        self.next_seq[not from_client] += 1
        self._emit(from_client, "A")
        return self

    def reset(self, from_client: bool = True) -> "TcpSession":
        self._emit(from_client, "RA")
        return self

    def wait(self, seconds: float) -> "TcpSession":
        self.t += seconds
        return self


class UdpExchange:
    """Request/response datagrams between a client and a server, with a clock."""

    def __init__(self, client: tuple, server: tuple, t0: float = 1_700_000_000.0,
                 step: float = 0.001, link=None):
        self.client, self.server = client, server
        self.t, self.step, self.link = t0, step, link
        self.packets: list[tuple[float, bytes]] = []

    def send(self, from_client: bool, data: bytes) -> "UdpExchange":
        src, dst = (self.client, self.server) if from_client else (self.server, self.client)
        pkt = udp(src[0], dst[0], src[1], dst[1], data)
        if self.link is not None:
            pkt = self.link(pkt)
        self.packets.append((self.t, pkt))
        self.t += self.step
        return self


# --- capture writers ------------------------------------------------------------------------

def _ts_parts(ts: float, nanosecond: bool) -> tuple[int, int]:
    sec = int(ts)
    frac = round((ts - sec) * (1e9 if nanosecond else 1e6))
    limit = 1_000_000_000 if nanosecond else 1_000_000
    if frac >= limit:
        sec, frac = sec + 1, frac - limit
    return sec, frac


def pcap_header(linktype: int = 1, nanosecond: bool = False, snaplen: int = 262144,
                byteorder: str = "<") -> bytes:
    magic = 0xA1B23C4D if nanosecond else 0xA1B2C3D4
    return struct.pack(byteorder + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)


def pcap_record(ts: float, data: bytes, nanosecond: bool = False, wire_len: int | None = None,
                byteorder: str = "<") -> bytes:
    sec, frac = _ts_parts(ts, nanosecond)
    orig = len(data) if wire_len is None else wire_len
    return struct.pack(byteorder + "IIII", sec, frac, len(data), orig) + data


def write_pcap(path, packets: Iterable, linktype: int = 1, nanosecond: bool = False,
               byteorder: str = "<", snaplen: int = 262144) -> int:
    """Classic pcap. `packets`: (ts, bytes) or (ts, bytes, wire_len). Returns the count."""
    n = 0
    with open(path, "wb") as f:
        f.write(pcap_header(linktype, nanosecond, snaplen, byteorder))
        chunk = []
        for p in packets:
            chunk.append(pcap_record(p[0], p[1], nanosecond, p[2] if len(p) > 2 else None, byteorder))
            n += 1
            if len(chunk) >= 4096:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return n


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def _block(btype: int, body: bytes, bo: str = "<") -> bytes:
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(bo + "II", btype, total) + body + struct.pack(bo + "I", total)


def _option(code: int, value: bytes, bo: str = "<") -> bytes:
    return struct.pack(bo + "HH", code, len(value)) + _pad4(value)


def pcapng_shb(bo: str = "<") -> bytes:
    return _block(0x0A0D0D0A, struct.pack(bo + "IHHq", 0x1A2B3C4D, 1, 0, -1), bo)


def pcapng_idb(linktype: int = 1, tsresol: int | None = None, snaplen: int = 0,
               bo: str = "<", tsoffset: int | None = None) -> bytes:
    opts = b""
    if tsresol is not None:
        opts += _option(9, bytes((tsresol,)), bo)
    if tsoffset is not None:
        opts += _option(14, struct.pack(bo + "q", tsoffset), bo)
    if opts:
        opts += _option(0, b"", bo)
    return _block(1, struct.pack(bo + "HHI", linktype, 0, snaplen) + opts, bo)


def _tsres_units(tsresol: int | None) -> int:
    if tsresol is None:
        return 1_000_000
    return 1 << (tsresol & 0x7F) if tsresol & 0x80 else 10 ** tsresol


def pcapng_epb(ts: float, data: bytes, interface: int = 0, tsresol: int | None = None,
               wire_len: int | None = None, bo: str = "<") -> bytes:
    units = round(ts * _tsres_units(tsresol))
    orig = len(data) if wire_len is None else wire_len
    return _block(6, struct.pack(bo + "IIIII", interface, units >> 32, units & 0xFFFFFFFF,
                                 len(data), orig) + _pad4(data), bo)


def pcapng_spb(data: bytes, wire_len: int | None = None, bo: str = "<") -> bytes:
    orig = len(data) if wire_len is None else wire_len
    return _block(3, struct.pack(bo + "I", orig) + _pad4(data), bo)


def write_pcapng(path, packets: Iterable, linktype: int = 1, tsresol: int | None = None,
                 byteorder: str = "<") -> int:
    """pcapng with one section and one interface. `packets`: (ts, bytes) or
    (ts, bytes, wire_len). Returns the count. (Multi-interface files: concatenate
    pcapng_shb()/pcapng_idb()/pcapng_epb() yourself.)"""
    n = 0
    with open(path, "wb") as f:
        f.write(pcapng_shb(byteorder) + pcapng_idb(linktype, tsresol, bo=byteorder))
        chunk = []
        for p in packets:
            chunk.append(pcapng_epb(p[0], p[1], 0, tsresol, p[2] if len(p) > 2 else None, byteorder))
            n += 1
            if len(chunk) >= 4096:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return n


# --- bulk generation for benchmarks ---------------------------------------------------------

_BULK_TCP_PORTS = (443, 80, 22, 3333, 8080, 5432, 6379, 993)
_BULK_UDP_PORTS = (53, 123, 443, 5353, 51820)


def _bulk_flow(rng: random.Random, i: int, n: int, blob: bytes) -> Iterator[tuple[bool, bytes]]:
    """Exactly `n` Ethernet frames of one flow (TCP 70%, UDP 30%; IPv6 25%), as
    (from_client, frame). Addresses and ports derive from `i` so flows are distinct."""
    v6 = rng.random() < 0.25
    if v6:
        c = "fd00:%x::%x" % ((i >> 16) & 0xFFFF, (i & 0xFFFF) + 1)
        s = "fd01::%x" % (rng.randrange(1, 4096))
    else:
        c = "10.%d.%d.%d" % ((i >> 16) & 0xFF, (i >> 8) & 0xFF, (i & 0xFF))
        s = "172.16.%d.%d" % (rng.randrange(0, 16), rng.randrange(1, 255))
    cport = 1024 + (i * 7919) % 60000
    if rng.random() < 0.3:
        sport = rng.choice(_BULK_UDP_PORTS)
        for k in range(n):
            from_client = k % 2 == 0
            size = rng.randrange(20, 200) if from_client else rng.randrange(40, 1200)
            off = rng.randrange(0, len(blob) - size)
            src, dst, sp, dp = (c, s, cport, sport) if from_client else (s, c, sport, cport)
            yield from_client, ether(udp(src, dst, sp, dp, blob[off:off + size]))
        return
    sport = rng.choice(_BULK_TCP_PORTS)
    seq = {True: rng.randrange(1 << 32), False: rng.randrange(1 << 32)}
    plan: list[tuple[bool, str, int]] = [(True, "S", 0), (False, "SA", 0), (True, "A", 0)]
    closing = [(True, "FA", 0), (False, "FA", 0), (True, "A", 0)] if n >= 6 else []
    middle = max(0, n - len(plan) - len(closing))
    for k in range(middle):
        from_client = (k // 2) % 2 == 0     # a request, its ACK, a response, its ACK...
        if k % 2 == 0:
            plan.append((from_client, "PA", rng.randrange(40, 1400)))
        else:
            plan.append((not from_client, "A", 0))
    plan += closing
    for from_client, flags, size in plan[:n]:
        src, dst, sp, dp = (c, s, cport, sport) if from_client else (s, c, sport, cport)
        off = rng.randrange(0, len(blob) - size) if size else 0
        payload = blob[off:off + size]
        ackn = seq[not from_client] if "A" in flags else 0
        yield from_client, ether(tcp(src, dst, sp, dp, flags, seq[from_client], ackn, payload))
        seq[from_client] = (seq[from_client] + size + (1 if ("S" in flags or "F" in flags) else 0)) \
            & 0xFFFFFFFF


def generate_bulk_capture(path, n_flows: int, pkts_per_flow: int, seed: int = 0,
                          concurrency: int = 2000, t0: float = 1_700_000_000.0,
                          nanosecond: bool = False) -> int:
    """Write an Ethernet pcap of `n_flows * pkts_per_flow` packets: up to `concurrency`
    flows open at once, their packets interleaved at random, time advancing ~20 us a
    packet. Deterministic for a given seed. Returns the packet count."""
    rng = random.Random(seed)
    blob = rng.randbytes(1 << 16)
    active: list[Iterator] = []
    started = 0
    t = t0
    written = 0
    with open(path, "wb") as f:
        f.write(pcap_header(1, nanosecond))
        chunk: list[bytes] = []
        while started < n_flows or active:
            while len(active) < concurrency and started < n_flows:
                active.append(_bulk_flow(rng, started, pkts_per_flow, blob))
                started += 1
            j = rng.randrange(len(active))
            item = next(active[j], None)
            if item is None:
                active[j] = active[-1]
                active.pop()
                continue
            chunk.append(pcap_record(t, item[1], nanosecond))
            written += 1
            t += rng.random() * 4e-5
            if len(chunk) >= 8192:
                f.write(b"".join(chunk))
                chunk.clear()
        f.write(b"".join(chunk))
    return written
