"""decode(): every link type and protocol, padding, fragments, extension headers, and one
case per anomaly name (each must come out as that anomaly, never as an exception)."""
from __future__ import annotations

import struct

import pytest

from egress.decode import ANOMALIES, decode
from egress.testing import craft as c
from egress.types import ACK, FIN, PSH, RST, SYN, RawPacket

V4C, V4S = "10.0.0.1", "10.0.0.2"
V6C, V6S = "fd00::1", "fd00::2"


def dec(data: bytes, linktype: int = 1, wire_len: int | None = None, ts: float = 1.5):
    return decode(RawPacket(ts, data, linktype, wire_len))


def packed(a: str) -> bytes:
    return c.addr(a)


# --- the happy paths ---------------------------------------------------------------------------

def test_ethernet_ipv4_tcp_all_fields():
    mss = struct.pack("!BBH", 2, 4, 1460)
    ip = c.tcp(V4C, V4S, 40000, 3333, "PA", seq=123456789, ack=987654321, payload=b"hello",
               window=512, options=mss, ttl=57)
    p = dec(c.ether(ip), ts=42.25)
    assert (p.ts, p.version, p.proto) == (42.25, 4, 6)
    assert (p.src, p.dst, p.sport, p.dport) == (packed(V4C), packed(V4S), 40000, 3333)
    assert p.flags == PSH | ACK
    assert (p.seq, p.ack, p.window, p.ttl) == (123456789, 987654321, 512, 57)
    assert p.tcp_options == mss
    assert p.payload == b"hello"
    assert p.ip_len == len(ip)
    assert (p.fragment, p.truncated, p.anomalies) == (False, False, ())
    assert (p.icmp_type, p.icmp_code) == (-1, -1)


def test_ethernet_padding_never_becomes_payload():
    syn = c.ether(c.tcp(V4C, V4S, 1, 2, "S"))
    assert len(syn) == 60                              # 54 bytes padded by the "NIC"
    p = dec(syn)
    assert p.payload == b"" and p.anomalies == () and not p.truncated
    small_udp = c.ether(c.udp(V4C, V4S, 1, 53, b"ab"))
    assert dec(small_udp).payload == b"ab"
    # An FCS or trailer after the IP packet is cut the same way.
    assert dec(c.ether(c.udp(V4C, V4S, 1, 53, b"x" * 100)) + b"\xde\xad\xbe\xef").payload == b"x" * 100


def test_ipv6_udp_over_ethernet():
    p = dec(c.ether(c.udp(V6C, V6S, 5353, 53, b"query", hop_limit=9)))
    assert (p.version, p.proto, p.src, p.dst) == (6, 17, packed(V6C), packed(V6S))
    assert (p.sport, p.dport, p.payload, p.ttl, p.ip_len) == (5353, 53, b"query", 9, 40 + 8 + 5)
    assert p.anomalies == ()


@pytest.mark.parametrize("vlans", [[10], [c.vlan_tag(100, 0x88A8), 20], [c.vlan_tag(7, 0x9100)],
                                   [1, 2, 3, 4]])
def test_vlan_tags_single_and_stacked(vlans):
    for ip in (c.tcp(V4C, V4S, 1000, 22, "S"), c.tcp(V6C, V6S, 1000, 22, "S")):
        p = dec(c.ether(ip, vlans=vlans))
        assert (p.proto, p.sport, p.dport, p.flags, p.anomalies) == (6, 1000, 22, SYN, ())


@pytest.mark.parametrize("linktype", [101, 12, 14])
def test_raw_ip_version_nibble_decides(linktype):
    assert dec(c.tcp(V4C, V4S, 1, 2, "S"), linktype).version == 4
    assert dec(c.tcp(V6C, V6S, 1, 2, "S"), linktype).version == 6


def test_raw_ipv4_and_ipv6_linktypes():
    assert dec(c.udp(V4C, V4S, 1, 2, b"a"), 228).payload == b"a"
    assert dec(c.udp(V6C, V6S, 1, 2, b"b"), 229).payload == b"b"
    # The link type said IPv4 but the header is IPv6: an anomaly, not a misparse.
    assert dec(c.udp(V6C, V6S, 1, 2, b"b"), 228).anomalies == ("ipv4-bad-version",)


@pytest.mark.parametrize("wrap,linktype", [(c.sll, 113), (c.sll2, 276)])
def test_linux_cooked(wrap, linktype):
    for ip, version in ((c.tcp(V4C, V4S, 5, 6, "SA"), 4), (c.tcp(V6C, V6S, 5, 6, "SA"), 6)):
        p = dec(wrap(ip), linktype)
        assert (p.version, p.sport, p.dport, p.flags, p.anomalies) == (version, 5, 6, SYN | ACK, ())


@pytest.mark.parametrize("family,byteorder,version", [(2, "little", 4), (2, "big", 4),
                                                      (24, "little", 6), (28, "big", 6),
                                                      (30, "little", 6)])
def test_bsd_null_loopback(family, byteorder, version):
    ip = c.udp(V4C, V4S, 1, 2, b"z") if version == 4 else c.udp(V6C, V6S, 1, 2, b"z")
    p = dec(c.null(ip, family, byteorder), 0)
    assert (p.version, p.payload, p.anomalies) == (version, b"z", ())


def test_openbsd_loop_is_big_endian():
    p = dec(c.null(c.udp(V4C, V4S, 1, 2, b"z"), 2, "big"), 108)
    assert (p.version, p.payload) == (4, b"z")


def test_ipv4_options_are_skipped():
    ip = c.tcp(V4C, V4S, 1, 2, "PA", payload=b"data", ip_options=b"\x94\x04\x00\x00")  # router alert
    assert ip[0] & 15 == 6
    p = dec(ip, 101)
    assert (p.sport, p.dport, p.payload, p.anomalies) == (1, 2, b"data", ())


def test_ipv4_fragments_flagged_only_first_parsed():
    whole = c.udp(V4C, V4S, 1111, 2222, bytes(range(256)) * 2, ident=77)
    frags = c.fragment_ipv4(whole, 128)
    assert len(frags) > 2
    first = dec(frags[0], 101)
    assert (first.fragment, first.proto, first.sport, first.dport) == (True, 17, 1111, 2222)
    assert first.anomalies == ()                     # UDP length > fragment is expected
    assert first.payload == (bytes(range(256)) * 2)[:120]
    for raw in frags[1:]:
        p = dec(raw, 101)
        assert (p.fragment, p.proto, p.sport, p.dport, p.flags) == (True, 17, 0, 0, 0)
        assert p.payload == raw[20:]
    assert not dec(whole, 101).fragment


def test_ipv6_extension_headers_walked():
    ext = c.ipv6_ext(43, b"\0" * 6) + c.ipv6_ext(60, b"\0" * 14) + c.ipv6_ext(6)   # HBH, routing, dest
    ip = c.tcp(V6C, V6S, 443, 50000, "SA", seq=9, ack=10, ext=ext, ext_first=0)
    p = dec(ip, 101)
    assert (p.proto, p.sport, p.dport, p.seq, p.ack, p.flags) == (6, 443, 50000, 9, 10, SYN | ACK)
    assert p.anomalies == ()


def test_ipv6_authentication_header_length_in_4_octet_units():
    ah = c.ipv6_ext(17, b"\0" * 10 + b"\x01" * 12, ah=True)   # SPI, seq, 12-byte ICV
    assert len(ah) == 24 and ah[1] == 4
    p = dec(c.udp(V6C, V6S, 7, 8, b"esp-less", ext=ah, ext_first=51), 101)
    assert (p.proto, p.sport, p.dport, p.payload) == (17, 7, 8, b"esp-less")


def test_ipv6_fragment_header_first_and_later():
    first = c.udp(V6C, V6S, 7, 8, b"a" * 16, ext=c.ipv6_fragment_header(17, 0, more=True),
                  ext_first=44)
    p = dec(first, 101)
    assert (p.fragment, p.proto, p.sport, p.dport) == (True, 17, 7, 8)
    later = c.ipv6(V6C, V6S, 44, b"tail-bytes", ext=c.ipv6_fragment_header(17, 64))
    p = dec(later, 101)
    assert (p.fragment, p.proto, p.sport, p.payload) == (True, 17, 0, b"tail-bytes")


def test_ipv6_no_next_header():
    p = dec(c.ipv6(V6C, V6S, 59, b""), 101)
    assert (p.proto, p.anomalies) == (59, ())


def test_icmp_and_icmpv6_type_code():
    p = dec(c.ether(c.icmp(V4C, V4S, 8, 0, b"ping-data")))
    assert (p.proto, p.icmp_type, p.icmp_code, p.payload) == (1, 8, 0, b"ping-data")
    p = dec(c.ether(c.icmp(V4C, V4S, 3, 3, b"")))
    assert (p.icmp_type, p.icmp_code) == (3, 3)
    p = dec(c.ether(c.icmp(V6C, V6S, 128, 0, b"v6ping")))
    assert (p.proto, p.icmp_type, p.icmp_code, p.payload) == (58, 128, 0, b"v6ping")


def test_other_protocols_keep_raw_payload():
    p = dec(c.ipv4(V4C, V4S, 47, b"\x00\x00\x08\x00gre-body"), 101)
    assert (p.proto, p.payload, p.sport, p.anomalies) == (47, b"\x00\x00\x08\x00gre-body", 0, ())


@pytest.mark.parametrize("flags,bits", [("S", SYN), ("SA", SYN | ACK), ("A", ACK),
                                        ("PA", PSH | ACK), ("FA", FIN | ACK), ("R", RST)])
def test_tcp_flags(flags, bits):
    assert dec(c.tcp(V4C, V4S, 1, 2, flags), 101).flags == bits


def test_non_ip_frame_is_counted_not_error():
    arp = c.ether(b"\x00\x01\x08\x00\x06\x04\x00\x01" + bytes(20), ethertype=0x0806)
    p = dec(arp)
    assert (p.proto, p.anomalies) == (-1, ("not-ip",))
    assert dec(c.sll(b"\0" * 28, ethertype=0x0806), 113).anomalies == ("not-ip",)
    assert dec(c.null(b"\0" * 28, family=7), 0).anomalies == ("not-ip",)


def test_snaplen_cut_is_truncated_not_anomaly():
    frame = c.ether(c.tcp(V4C, V4S, 1, 2, "PA", payload=b"x" * 1000))
    p = dec(frame[:200], wire_len=len(frame))
    assert p.truncated and p.anomalies == ()
    assert p.payload == b"x" * (200 - 54)
    assert p.ip_len == len(frame) - 14


def test_nfqueue_style_raw_ip_with_full_copy():
    ip = c.tcp(V4C, V4S, 1, 2, "PA", payload=b"q" * 10)
    p = decode(RawPacket(0.0, ip))                    # default link type is raw IP
    assert (p.payload, p.anomalies) == (b"q" * 10, ())


# --- malformed input: one case per anomaly -------------------------------------------------------

def _with_byte(data: bytes, index: int, value: int) -> bytes:
    return data[:index] + bytes((value,)) + data[index + 1:]


_TCP4 = c.tcp(V4C, V4S, 1, 2, "PA", payload=b"payload!")
_UDP4 = c.udp(V4C, V4S, 1, 2, b"payload!")
_ICMP4 = c.icmp(V4C, V4S, 8, 0, b"x")
_TCP6 = c.tcp(V6C, V6S, 1, 2, "PA", payload=b"payload!")

MALFORMED = [
    # (expected anomaly, frame, linktype, wire_len or None)
    ("unknown-linktype", _TCP4, 9999, None),
    ("eth-truncated", b"\x02" * 13, 1, None),
    ("vlan-truncated", c.ether(b"", vlans=[5], pad=False)[:16], 1, None),
    ("vlan-too-many", c.ether(_TCP4, vlans=[1, 2, 3, 4, 5]), 1, None),
    ("sll-truncated", c.sll(_TCP4)[:15], 113, None),
    ("sll2-truncated", c.sll2(_TCP4)[:19], 276, None),
    ("null-truncated", b"\x02\x00", 0, None),
    ("ip-truncated", b"", 101, None),
    ("ip-bad-version", b"\x50" + _TCP4[1:], 101, None),
    ("ipv4-truncated", _TCP4[:19], 101, None),
    ("ipv4-bad-version", c.ether(_TCP6, ethertype=0x0800), 1, None),
    ("ipv6-bad-version", c.ether(_TCP4, ethertype=0x86DD, pad=False) + bytes(40), 1, None),
    ("ipv4-bad-ihl", _with_byte(_TCP4, 0, 0x44), 101, None),
    ("ipv4-bad-ihl", _with_byte(_TCP4, 0, 0x4F), 101, None),       # 60 > total length 56
    ("ipv4-bad-length", c.ipv4(V4C, V4S, 17, _UDP4[20:], total_length=10), 101, None),
    ("ipv4-bad-length", c.ipv4(V4C, V4S, 17, _UDP4[20:], total_length=500), 101, None),
    ("ipv6-truncated", _TCP6[:39], 101, None),
    ("ipv6-truncated", c.ipv6(V6C, V6S, 0, c.ipv6_ext(6, b"\0" * 14))[:50], 101, 80),
    ("ipv6-bad-length", c.ipv6(V6C, V6S, 17, _UDP4[20:], payload_length=400), 101, None),
    ("ipv6-bad-ext", c.ipv6(V6C, V6S, 0, b"\x06\x05" + bytes(10)), 101, None),
    ("ipv6-too-many-ext", c.ipv6(V6C, V6S, 60, c.ipv6_ext(60) * 9 + c.ipv6_ext(59)), 101, None),
    ("tcp-truncated", _TCP4[:30], 101, len(_TCP4)),
    ("tcp-truncated", c.ipv4(V4C, V4S, 6, _TCP4[20:35]), 101, None),
    ("tcp-bad-offset", c.tcp(V4C, V4S, 1, 2, "A", data_offset=4), 101, None),
    ("tcp-bad-offset", c.tcp(V4C, V4S, 1, 2, "A", data_offset=15), 101, None),
    ("udp-truncated", c.ipv4(V4C, V4S, 17, _UDP4[20:26]), 101, None),
    ("udp-bad-length", c.udp(V4C, V4S, 1, 2, b"abc", length=4), 101, None),
    ("udp-bad-length", c.udp(V4C, V4S, 1, 2, b"abc", length=300), 101, None),
    ("icmp-truncated", c.ipv4(V4C, V4S, 1, _ICMP4[20:23]), 101, None),
]


@pytest.mark.parametrize("anomaly,frame,linktype,wire_len", MALFORMED,
                         ids=[m[0] + "-%d" % i for i, m in enumerate(MALFORMED)])
def test_malformed_gives_its_anomaly(anomaly, frame, linktype, wire_len):
    p = dec(frame, linktype, wire_len)
    assert anomaly in p.anomalies, p.anomalies
    assert len(p.payload) <= len(frame)


def test_every_documented_anomaly_has_a_case():
    covered = {m[0] for m in MALFORMED} | {"not-ip", "decode-error"}
    assert set(ANOMALIES) == covered
    import egress.decode as mod
    for name in ANOMALIES:
        assert name in mod.__doc__


def test_lying_ports_still_readable_when_tcp_truncated():
    p = dec(c.ipv4(V4C, V4S, 6, _TCP4[20:30]), 101)
    assert (p.sport, p.dport, p.payload) == (1, 2, b"")


def test_udp_bad_length_payload_bounded_by_ip():
    p = dec(c.udp(V4C, V4S, 1, 2, b"abc", length=300), 101)
    assert p.payload == b"abc"
    p = dec(c.ether(c.udp(V4C, V4S, 1, 2, b"abc", length=4)), 1)
    assert p.payload == b"abc"                          # never the Ethernet padding


def test_internal_error_is_contained():
    p = decode(RawPacket(3.0, None, 1, 0))                  # not bytes at all
    assert (p.proto, p.anomalies, p.ts) == (-1, ("decode-error",), 3.0)


# --- agreement with an independent decoder (scapy, tests only) -----------------------------------

def _scapy_cases():
    yield c.ether(c.tcp(V4C, V4S, 40000, 443, "PA", 11, 22, b"GET / HTTP/1.1\r\n\r\n",
                        options=b"\x01\x01\x08\x0a" + bytes(8)))
    yield c.ether(c.tcp(V6C, V6S, 40001, 22, "SA", 33, 44, b"SSH-2.0-x\r\n"), vlans=[42])
    yield c.ether(c.udp(V4C, V4S, 40000, 9999, b"\x12\x34" + bytes(10)))
    yield c.ether(c.udp(V6C, V6S, 40000, 9999, b"dns?"))
    yield c.ether(c.icmp(V4C, V4S, 0, 0, b"pong"))
    yield c.ether(c.icmp(V6C, V6S, 129, 0, b"pong6"))
    yield c.ether(c.tcp(V4C, V4S, 1, 2, "FA", 5, 6, ip_options=b"\x94\x04\x00\x00", ttl=3))


@pytest.mark.parametrize("frame", list(_scapy_cases()))
def test_agrees_with_scapy(frame):
    scapy = pytest.importorskip("scapy.all")
    ref = scapy.Ether(frame)
    p = dec(frame)
    raw_load = ref[scapy.Raw].load if scapy.Raw in ref else b""    # scapy keeps padding apart
    ipl = ref[scapy.IP] if scapy.IP in ref else ref[scapy.IPv6]
    assert p.src == c.addr(ipl.src) and p.dst == c.addr(ipl.dst)
    if scapy.TCP in ref:
        t = ref[scapy.TCP]
        assert (p.sport, p.dport, p.seq, p.ack, p.window, p.flags) == \
            (t.sport, t.dport, t.seq, t.ack, t.window, int(t.flags))
        assert p.payload == raw_load
    elif scapy.UDP in ref:
        u = ref[scapy.UDP]
        assert (p.sport, p.dport, p.payload) == (u.sport, u.dport, raw_load)
    elif scapy.ICMP in ref:
        assert (p.icmp_type, p.icmp_code) == (ref[scapy.ICMP].type, ref[scapy.ICMP].code)
    else:
        layer = ref[scapy.IPv6].payload
        assert (p.proto, p.icmp_type, p.icmp_code) == (58, layer.type, layer.code)


# --- real captures: an independent flow listing -----------------------------------------------

def test_shared_flows_tsv_packet_and_byte_counts(shared_pcaps):
    """Every TCP flow ../shared/pcaps/FLOWS.tsv lists (computed upstream, not by us) has
    exactly its packet and byte counts among the packets we decode from its file."""
    import collections
    import csv

    from egress.drivers.pcap import read_capture
    from egress.types import ip_text

    def endpoint(text):
        host, _, port = text.rpartition(":")
        return host.strip("[]"), int(port)

    with open(shared_pcaps / "FLOWS.tsv", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    assert rows
    by_file = collections.defaultdict(list)
    for row in rows:
        by_file[row["file"]].append(row)
    for name, listed in by_file.items():
        pkts, nbytes = collections.Counter(), collections.Counter()
        for raw in read_capture(shared_pcaps / name):
            p = decode(raw)
            if p.proto == 6:
                key = frozenset(((ip_text(p.src), p.sport), (ip_text(p.dst), p.dport)))
                pkts[key] += 1
                nbytes[key] += raw.wire_len
        for row in listed:
            key = frozenset((endpoint(row["client"]), endpoint(row["server"])))
            assert (pkts[key], nbytes[key]) == (int(row["pkts"]), int(row["bytes"])), (name, row)
