"""DNS detector: real captured exchanges, compression (and loops), TCP framing, answers for the
policy, tunnelling indicators (and none on real benign traffic), fuzz."""
from __future__ import annotations

import base64
import hashlib
import struct

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.dns import DnsDetector, DnsError, entropy, parse_message, read_name

try:
    from protocols_pcap import SHARED_PCAPS, read_flows
except ImportError:
    from tests.inspect.protocols_pcap import SHARED_PCAPS, read_flows

DET = DnsDetector()
V4 = b"\x0a\x00\x00\x01"

# joy/test/pcaps/sample.pcap: www.orwell.ru A query and its answer (A + NS + glue, compressed)
Q_ORWELL = bytes.fromhex("0b560100000100000000000003777777066f7277656c6c0272750000010001")
R_ORWELL = bytes.fromhex(
    "0b568180000100010003000303777777066f7277656c6c0272750000010001c00c0001000100000dfb0004b9546c0bc010"
    "00020001000545eb0010036e7332096d616a6f72646f6d6fc017c01000020001000545eb0006036e7333c03fc0100002"
    "0001000545eb0005026e73c03fc06900010001000545eb00044e6c5050c03b00010001000545eb00044e6c59fcc05700"
    "0100010004caed00044e6c505a")


def udp(*dgrams) -> StreamView:
    return StreamView(17, V4, 40000, b"\x0a\x00\x00\x02", 53, datagrams=tuple(dgrams))


def tcp(c: bytes, s: bytes, closed=True) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 53, c, s, closed_to_server=closed, closed_to_client=closed)


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"
    return struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack(">HH", qtype, 1)


def test_real_query_and_answer():
    r = DET.inspect(udp((0, Q_ORWELL), (1, R_ORWELL)))
    assert r.app_proto == "dns"
    assert r.facts["dns.query"] == "www.orwell.ru" and r.facts["dns.qtype"] == "A"
    assert {"name": "www.orwell.ru", "type": "A", "data": "185.84.108.11", "ttl": 3579} in r.facts["dns.answers"]
    assert r.facts["dns.rcode"] == 0
    assert not r.detections


def test_answer_first_and_query_alone():
    r = DET.inspect(udp((0, R_ORWELL)))
    assert r.facts["dns.query"] == "www.orwell.ru" and r.facts["dns.answers"]
    r = DET.inspect(udp((0, Q_ORWELL)))
    assert r.status is Status.NEED_MORE and r.facts["dns.query"] == "www.orwell.ru"


def test_cname_and_aaaa_answers_with_compression():
    msg = bytearray(struct.pack(">HHHHHH", 7, 0x8180, 1, 2, 0, 0))
    msg += b"\x03www\x07example\x03com\x00" + struct.pack(">HH", 28, 1)
    msg += b"\xc0\x0c" + struct.pack(">HHIH", 5, 1, 60, 6) + b"\x03cdn\xc0\x10"     # CNAME cdn.example.com
    at = len(msg) - 6
    msg += bytes([0xC0, at]) + struct.pack(">HHIH", 28, 1, 30, 16) + bytes.fromhex("20010db8000000000000000000000001")
    p = parse_message(bytes(msg))
    assert p["answers"] == [
        {"name": "www.example.com", "type": "CNAME", "data": "cdn.example.com", "ttl": 60},
        {"name": "cdn.example.com", "type": "AAAA", "data": "2001:db8::1", "ttl": 30}]


@pytest.mark.parametrize("name_bytes", [
    b"\xc0\x0c",                       # points at itself
    b"\x01a\xc0\x0c",                  # a label, then back to its own start
    b"\xc0\x20",                       # points forward
    b"\x3fabc",                        # label past the end
    b"\x80abc",                        # reserved label type
    b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x3f" + b"a" * 63 + b"\x00",   # > 255
])
def test_hostile_names_are_rejected_not_looped(name_bytes):
    msg = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + name_bytes + b"\x00\x01\x00\x01" + b"\x00" * 40
    with pytest.raises(DnsError):
        read_name(msg, 12)
    assert DET.inspect(udp((0, msg))).status is Status.NO_MATCH


def test_dns_over_tcp_with_length_prefix_and_segmentation():
    c = struct.pack(">H", len(Q_ORWELL)) + Q_ORWELL
    s = struct.pack(">H", len(R_ORWELL)) + R_ORWELL
    full = DET.inspect(tcp(c, s))
    assert full.status is Status.MATCH and full.facts["dns.answers"]
    for cut in range(1, len(s)):
        r = DET.inspect(tcp(c, s[:cut], closed=False))
        assert r.status is Status.NEED_MORE
        assert r.facts.get("dns.query") == "www.orwell.ru"
        assert "dns.answers" not in r.facts


def test_not_dns():
    assert DET.inspect(udp((0, b"SEARCH BSDP/0.1\nDEVICE=0\nSERVICE=1\n"))).status is Status.NO_MATCH
    assert DET.inspect(tcp(b"GET / HTTP/1.1\r\n\r\n", b"")).status is Status.NO_MATCH


def test_entropy():
    assert entropy("aaaa") == 0
    assert abs(entropy("abcd") - 2.0) < 1e-9


def test_tunnel_long_high_entropy_label():
    label = hashlib.sha256(b"encrypted payload").hexdigest()[:63]   # what dnscat2 sends: hex of ciphertext
    r = DET.inspect(udp((0, query(label + ".t.example.net", 16))))
    assert [(d.category, d.signature) for d in r.detections] == [("tunnel", "dns.tunnel_suspected")]
    assert r.detections[0].confidence < 1


def test_tunnel_repeated_data_labels_and_txt_volume():
    # iodine/dnstt style: base32 of ciphertext, 40 characters a label, one domain
    chunks = [base64.b32encode(hashlib.sha256(b"%d" % i).digest()).decode().lower()[:40] for i in range(3)]
    names = ["%s.x.tun.example.org" % c for c in chunks]
    r = DET.inspect(udp(*[(0, query(n, 1, i)) for i, n in enumerate(names)]))
    assert r.detections and r.detections[0].evidence["rule"] == "repeated_data_labels"
    txt = DET.inspect(udp(*[(0, query("s%d.c.example.org" % i, 16, i)) for i in range(6)]))
    assert txt.detections and txt.detections[0].evidence["rule"] == "txt_volume"


def test_ordinary_names_are_not_tunnels():
    names = ["www.google.com", "e7.whatsapp.net", "238.219.58.216.in-addr.arpa", "_ipps._tcp.local",
             "d2x4ws6w2s4k1d.cloudfront.net", "selector1._domainkey.example.com",
             "r3---sn-4g5e6nsz.googlevideo.com"]
    r = DET.inspect(udp(*[(0, query(n, 1, i)) for i, n in enumerate(names)]))
    assert not r.detections


def test_no_tunnel_on_any_real_capture():
    if not SHARED_PCAPS.is_dir():
        pytest.skip("../shared/pcaps not present")
    seen = 0
    for path in sorted(SHARED_PCAPS.glob("*.pcap*")):
        for f in read_flows(path):
            if f.proto == 17:
                r = DET.inspect(f.view())
                seen += r.app_proto == "dns"
                assert not r.detections, (path.name, f.client, r.facts.get("dns.queries"))
    assert seen >= 10


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.binary(max_size=300)), max_size=5))
def test_fuzz_udp_never_raises(dgrams):
    assert DET.inspect(udp(*dgrams)).status in set(Status)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(R_ORWELL) - 1), st.integers(0, 255), st.integers(1, len(R_ORWELL)))
def test_fuzz_mutated_answer_never_raises(pos, byte, cut):
    msg = (R_ORWELL[:pos] + bytes([byte]) + R_ORWELL[pos + 1:])[:cut]
    r = DET.inspect(udp((0, Q_ORWELL), (1, msg)))
    assert r.status in set(Status)
    assert DET.inspect(tcp(struct.pack(">H", len(msg)) + msg, msg)).status in set(Status)
