"""Property-based fuzzing of decode(): random bytes and mutated valid frames (bit flips,
truncation, lying length fields) for every link type. The decoder's own code must handle all
of it: the catch-all "decode-error" (an internal bug contained) must never appear, and the
result must respect the documented invariants."""
from __future__ import annotations

import struct

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress.decode import ANOMALIES, decode
from egress.decode import ip as ip_mod
from egress.decode.link import PARSERS
from egress.testing import craft as c
from egress.types import Packet, RawPacket

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LINKTYPES = sorted(PARSERS) + [147, 65535]

_IPS = [
    c.tcp("10.0.0.1", "10.0.0.2", 1000, 80, "PA", 1, 2, b"GET / HTTP/1.1\r\n", options=b"\x02\x04\x05\xb4"),
    c.udp("10.0.0.1", "10.0.0.2", 53000, 53, b"\x00\x01query"),
    c.icmp("10.0.0.1", "10.0.0.2", 8, 0, b"ping"),
    c.tcp("fd00::1", "fd00::2", 1000, 22, "S", ext=c.ipv6_ext(60) + c.ipv6_ext(6), ext_first=0),
    c.udp("fd00::1", "fd00::2", 1, 2, b"frag", ext=c.ipv6_fragment_header(17, 0, True), ext_first=44),
    c.icmp("fd00::1", "fd00::2", 128, 0, b"ping6"),
    c.tcp("10.0.0.1", "10.0.0.2", 5, 6, "A", ip_options=b"\x01\x01\x01\x00"),
    c.fragment_ipv4(c.udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(64)), 16)[1],
]


def _frames():
    for ip in _IPS:
        yield 101, ip
        yield 228 if ip[0] >> 4 == 4 else 229, ip
        yield 1, c.ether(ip)
        yield 1, c.ether(ip, vlans=[c.vlan_tag(1, 0x88A8), 2])
        yield 113, c.sll(ip)
        yield 276, c.sll2(ip)
        yield 0, c.null(ip)


FRAMES = list(_frames())
_KNOWN = frozenset(ANOMALIES)


def check(raw: RawPacket) -> Packet:
    p = decode(raw)
    assert isinstance(p, Packet)
    assert "decode-error" not in p.anomalies, (raw.linktype, raw.data.hex())
    assert set(p.anomalies) <= _KNOWN
    assert isinstance(p.payload, bytes) and len(p.payload) <= len(raw.data)
    if p.proto == -1:
        assert p.anomalies, "an undecodable frame must say why"
    else:
        assert p.version in (4, 6) and len(p.src) == len(p.dst) == (4 if p.version == 4 else 16)
        assert 0 <= p.sport < 65536 and 0 <= p.dport < 65536
    return p


@SETTINGS
@given(st.sampled_from(LINKTYPES), st.binary(max_size=200), st.integers(0, 400))
def test_random_bytes_never_break_the_decoder(linktype, data, wire_len):
    check(RawPacket(0.0, data, linktype, wire_len))


@SETTINGS
@given(st.sampled_from(FRAMES), st.data())
def test_bit_flips(frame, data):
    linktype, raw = frame
    buf = bytearray(raw)
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(buf) - 1))
        buf[i] ^= 1 << data.draw(st.integers(0, 7))
    check(RawPacket(1.0, bytes(buf), linktype))


@SETTINGS
@given(st.sampled_from(FRAMES), st.data())
def test_truncation_anywhere(frame, data):
    linktype, raw = frame
    cut = data.draw(st.integers(0, len(raw)))
    snapped = data.draw(st.booleans())
    p = check(RawPacket(1.0, raw[:cut], linktype, len(raw) if snapped else cut))
    if snapped and cut < len(raw) and p.proto != -1:
        # Either the cut is reported, or it only removed link padding after the IP packet.
        full = decode(RawPacket(1.0, raw, linktype))
        assert p.truncated or p.anomalies or (p.payload, p.ip_len) == (full.payload, full.ip_len)


# Where the length-like fields of the inner IP packet sit: (offset in the IP packet, size).
_IPV4_FIELDS = [(0, 1), (2, 2), (6, 2), (20 + 12, 1), (20 + 4, 2)]     # ver/IHL, total, frag, TCP doff / UDP len
_IPV6_FIELDS = [(4, 2), (6, 1), (40, 1), (41, 1), (48 + 12, 1)]        # plen, next hdr, ext next/len, TCP doff


@SETTINGS
@given(st.sampled_from(FRAMES), st.data())
def test_length_fields_that_lie(frame, data):
    linktype, raw = frame
    ip_start = next(i for i in range(len(raw)) if raw[i:i + 20] in (ip[:20] for ip in _IPS))
    fields = _IPV4_FIELDS if raw[ip_start] >> 4 == 4 else _IPV6_FIELDS
    buf = bytearray(raw)
    for off, size in data.draw(st.lists(st.sampled_from(fields), min_size=1, max_size=3)):
        pos = ip_start + off
        if pos + size <= len(buf):
            buf[pos:pos + size] = data.draw(st.integers(0, (1 << (8 * size)) - 1)).to_bytes(size, "big")
    check(RawPacket(1.0, bytes(buf), linktype, data.draw(st.sampled_from([len(buf), len(buf) + 100]))))


def test_corpus_decodes_cleanly():
    """The unmutated corpus is valid: no anomalies (so the mutations above start from sense)."""
    for linktype, raw in FRAMES:
        p = check(RawPacket(1.0, raw, linktype))
        assert p.anomalies == () and p.proto in (1, 6, 17, 58), (linktype, p)


def test_ipv6_extension_walk_is_capped():
    ext = b"".join(c.ipv6_ext(0) for _ in range(200)) + c.ipv6_ext(6)
    p = check(RawPacket(0.0, c.ipv6("fd00::1", "fd00::2", 0, struct.pack("!20x"), ext=ext), 101))
    assert p.anomalies == ("ipv6-too-many-ext",)


# --- the fast paths give exactly what the general decoders give --------------------------------

def _fields(p: Packet) -> tuple:
    return tuple(getattr(p, name) for name in Packet.__slots__)


_FAST_SEEDS = [ip for ip in _IPS] + [
    c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "PA", payload=b"x" * 40, options=b"\x01" * 8),
    c.udp("fd00::1", "fd00::2", 1, 2, b"y" * 30),
    c.tcp("fd00::1", "fd00::2", 1, 2, "A", payload=b"z" * 3),
]


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_FAST_SEEDS), st.data())
def test_fast_path_equals_general_path(ip, data):
    """Mutations aimed at the fast path's boundaries: length fields off by a little, the TCP
    data offset, the capture cut just around the IP length, plus random header bytes."""
    buf = bytearray(ip + data.draw(st.sampled_from([b"", b"\0" * 6, b"pad"])))
    v4 = buf[0] >> 4 == 4
    lengths = [2, 24] if v4 else [4, 44]                 # IP total / payload length, UDP length
    doff_at = 32 if v4 else 52
    for _ in range(data.draw(st.integers(0, 3))):
        kind = data.draw(st.sampled_from(["lie", "doff", "byte"]))
        if kind == "lie":
            at = data.draw(st.sampled_from(lengths))
            value = int.from_bytes(buf[at:at + 2], "big") + data.draw(st.integers(-9, 9))
            buf[at:at + 2] = (value & 0xFFFF).to_bytes(2, "big")
        elif kind == "doff" and doff_at < len(buf):
            buf[doff_at] = data.draw(st.integers(0, 15)) << 4
        else:
            i = data.draw(st.integers(0, min(69, len(buf) - 1)))
            buf[i] = data.draw(st.one_of(st.integers(0, 255), st.sampled_from([0x45, 0x60, 0xF0])))
    cut = data.draw(st.sampled_from(["none", "near", "any"]))
    if cut == "near":
        buf = buf[:max(0, len(ip) + data.draw(st.integers(-3, 1)))]
    elif cut == "any":
        buf = buf[:data.draw(st.integers(0, len(buf)))]
    buf = bytes(buf)
    complete = data.draw(st.booleans())
    version = buf[0] >> 4 if buf else 0
    if version == 4:
        fast, general = ip_mod.ipv4(1.0, buf, 0, complete), ip_mod.ipv4_general(1.0, buf, 0, complete)
    elif version == 6:
        fast, general = ip_mod.ipv6(1.0, buf, 0, complete), ip_mod.ipv6_general(1.0, buf, 0, complete)
    else:
        return
    assert _fields(fast) == _fields(general)


def test_fast_path_equals_general_path_at_every_boundary():
    """Exhaustive around the edges the fast path tests: each length field off by up to 2,
    every TCP data offset, captures cut from 3 bytes short to 1 byte long."""
    checked = 0
    for ip in _FAST_SEEDS:
        v4 = ip[0] >> 4 == 4
        decoders = (ip_mod.ipv4, ip_mod.ipv4_general) if v4 else (ip_mod.ipv6, ip_mod.ipv6_general)
        doff_at = 32 if v4 else 52
        for pad in (b"", b"\0" * 6):
            for at, delta in [(None, 0)] + [(a, d) for a in ([2, 24] if v4 else [4, 44])
                                            for d in (-2, -1, 1, 2)]:
                buf = bytearray(ip + pad)
                if at is not None:
                    value = int.from_bytes(buf[at:at + 2], "big") + delta
                    buf[at:at + 2] = (value & 0xFFFF).to_bytes(2, "big")
                for doff in [None] + list(range(16)) if doff_at < len(buf) else [None]:
                    if doff is not None:
                        buf[doff_at] = doff << 4
                    for cut in (None, -3, -2, -1, 0, 1):
                        data = bytes(buf if cut is None else buf[:len(ip) + cut])
                        for complete in (True, False):
                            fast, general = (d(1.0, data, 0, complete) for d in decoders)
                            assert _fields(fast) == _fields(general), (ip.hex(), at, delta, doff, cut)
                            checked += 1
    assert checked > 10_000


def test_fast_path_is_taken_for_plain_packets(monkeypatch):
    """Guard against a fast path that silently never fires (the equality test would pass)."""
    def boom(*args):
        raise AssertionError("general path used")
    monkeypatch.setattr(ip_mod, "ipv4_general", boom)
    monkeypatch.setattr(ip_mod, "ipv6_general", boom)
    for ip in _FAST_SEEDS[-3:] + [_IPS[0], _IPS[1]]:
        p = (ip_mod.ipv4 if ip[0] >> 4 == 4 else ip_mod.ipv6)(1.0, ip, 0, True)
        assert p.proto in (6, 17)
