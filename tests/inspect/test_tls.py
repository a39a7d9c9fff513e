"""TLS/QUIC detector: JA3/JA4 against published values and an independent (scapy) parse of a real
Python ssl ClientHello, records spanning segments, QUIC v1/v2 Initial decryption, fuzz."""
from __future__ import annotations

import hashlib
import struct

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.tls import HAVE_CRYPTO, QUIC_V1, QUIC_V2, TlsDetector, is_grease, ja4, quic_client_keys

try:
    from protocols_pcap import SHARED_PCAPS, assert_consistent_prefixes, python_client_hello, read_flows
except ImportError:
    from tests.inspect.protocols_pcap import (SHARED_PCAPS, assert_consistent_prefixes, python_client_hello,
                                              read_flows)

DET = TlsDetector()
V4 = b"\x0a\x00\x00\x01"
needs_crypto = pytest.mark.skipif(not HAVE_CRYPTO, reason="QUIC Initial decryption needs the cryptography package")


def tcp_view(c: bytes, s: bytes = b"", closed=False) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 443, c, s, closed_to_server=closed, closed_to_client=closed)


def udp_view(datagrams) -> StreamView:
    return StreamView(17, V4, 40000, b"\x0a\x00\x00\x02", 443, datagrams=tuple(datagrams))


# -- a ClientHello built from published fingerprint inputs -----------------------------

def ext(t: int, data: bytes = b"") -> bytes:
    return struct.pack(">HH", t, len(data)) + data


def u16s(vals) -> bytes:
    return b"".join(struct.pack(">H", v) for v in vals)


def client_hello(ciphers, exts: bytes, version=0x0303) -> bytes:
    body = struct.pack(">H", version) + b"\x11" * 32 + b"\x20" + b"\x22" * 32
    body += struct.pack(">H", 2 * len(ciphers)) + u16s(ciphers) + b"\x01\x00"
    body += struct.pack(">H", len(exts)) + exts
    hs = b"\x01" + len(body).to_bytes(3, "big") + body
    return hs


def records(hs: bytes, cuts=()) -> bytes:
    out, prev = b"", 0
    for cut in list(cuts) + [len(hs)]:
        frag = hs[prev:cut]
        out += b"\x16\x03\x01" + struct.pack(">H", len(frag)) + frag
        prev = cut
    return out


# Chrome 143 (browserleaks.com output quoted in a public repository): ja3_text, ja3_hash,
# ja4 and ja4_r were published together; we rebuild the ClientHello from those lists.
PUB_CIPHERS = [4865, 4866, 4867, 49195, 49199, 49196, 49200, 52393, 52392, 49171, 49172, 156, 157, 47, 53]
PUB_EXT_ORDER = [45, 51, 16, 65037, 23, 17613, 0, 11, 10, 43, 65281, 35, 18, 5, 13, 27]
PUB_GROUPS = [4588, 29, 23, 24]
PUB_SIGALGS = [0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601]
PUB_JA3_TEXT = ("771,4865-4866-4867-49195-49199-49196-49200-52393-52392-49171-49172-156-157-47-53,"
                "45-51-16-65037-23-17613-0-11-10-43-65281-35-18-5-13-27,4588-29-23-24,0")
PUB_JA3 = "98487aa16281980e7d1120d399efb6a4"
PUB_JA4 = "t13d1516h2_8daaf6152771_d8a2da3f94cd"


def published_hello(grease: bool = True) -> bytes:
    data = {
        0: struct.pack(">HBH", 15, 0, 12) + b"example.test",
        16: struct.pack(">H", 12) + b"\x02h2\x08http/1.1",
        10: struct.pack(">H", 2 * (len(PUB_GROUPS) + grease)) + u16s(([0x3A3A] if grease else []) + PUB_GROUPS),
        11: b"\x01\x00",
        13: struct.pack(">H", 16) + u16s(PUB_SIGALGS),
        43: bytes([2 * (2 + grease)]) + u16s(([0x7A7A] if grease else []) + [0x0304, 0x0303]),
        45: b"\x01\x01",
    }
    exts = (ext(0x0A0A) if grease else b"") + b"".join(ext(t, data.get(t, b"")) for t in PUB_EXT_ORDER)
    return client_hello(([0x2A2A] if grease else []) + PUB_CIPHERS, exts)


def test_published_ja3_pair_is_self_consistent():
    assert hashlib.md5(PUB_JA3_TEXT.encode()).hexdigest() == PUB_JA3


@pytest.mark.parametrize("grease", [False, True])
def test_ja3_and_ja4_match_published_values(grease):
    r = DET.inspect(tcp_view(records(published_hello(grease))))
    assert r.app_proto == "tls"
    assert r.facts["tls.ja3_string"] == PUB_JA3_TEXT
    assert r.facts["tls.ja3"] == PUB_JA3
    assert r.facts["tls.ja4"] == PUB_JA4
    assert r.facts["tls.sni"] == "example.test"
    assert r.facts["tls.alpn"] == ["h2", "http/1.1"]
    assert r.facts["tls.version"] == "1.3"


def test_handshake_spanning_records_and_segments():
    hs = published_hello()
    whole = DET.inspect(tcp_view(records(hs)))
    split = records(hs, cuts=(3, 50, 51, 400))
    r = assert_consistent_prefixes(DET, tcp_view(split, closed=True), fine=len(split))
    assert r.facts["tls.ja4"] == whole.facts["tls.ja4"] == PUB_JA4


def test_not_tls():
    for data in (b"GET / HTTP/1.1\r\n", b"SSH-2.0-x\r\n", b"\x16\x05\x01\x00\x10", b"\x17\x03\x03\x00\x10" + b"x" * 16):
        assert DET.inspect(tcp_view(data)).status is Status.NO_MATCH


def test_grease_values():
    assert all(is_grease(v) for v in (0x0A0A, 0x1A1A, 0xFAFA))
    assert not any(is_grease(v) for v in (0x0A1A, 0x1301, 0x0000))


# -- a real ClientHello from Python's ssl module, parsed independently by scapy ----------

def scapy_ja3(data: bytes) -> tuple[str, str | None, list]:
    from scapy.layers.tls.record import TLS
    hello = TLS(data).msg[0]
    exts = hello.ext or []
    def pick(cls_name, attr):
        for e in exts:
            if type(e).__name__ == cls_name:
                return list(getattr(e, attr) or [])
        return []
    keep = lambda vals: "-".join(str(v) for v in vals if not is_grease(v))
    text = ",".join([str(hello.version), keep(hello.ciphers), keep([e.type for e in exts]),
                     keep(pick("TLS_Ext_SupportedGroups", "groups")), keep(pick("TLS_Ext_SupportedPointFormat", "ecpl"))])
    sni = None
    for e in exts:
        if type(e).__name__ == "TLS_Ext_ServerName":
            sni = e.servernames[0].servername.decode()
    alpn = [p.protocol.decode() for p in pick("TLS_Ext_ALPN", "protocols")]
    return text, sni, alpn


def test_python_ssl_client_hello_matches_an_independent_scapy_parse():
    data = python_client_hello("files.example.org", ["h2", "http/1.1"])
    r = DET.inspect(tcp_view(data))
    text, sni, alpn = scapy_ja3(data)
    assert r.facts["tls.ja3_string"] == text
    assert r.facts["tls.ja3"] == hashlib.md5(text.encode()).hexdigest()
    assert r.facts["tls.sni"] == sni == "files.example.org"
    assert r.facts["tls.alpn"] == alpn == ["h2", "http/1.1"]
    assert r.facts["tls.ja4"].startswith("t13d") and r.facts["tls.ja4"][8:10] == "h2"


# -- QUIC ----------------------------------------------------------------------------

def test_quic_initial_keys_match_rfc_test_vectors():
    dcid = bytes.fromhex("8394c8f03e515708")
    # RFC 9001 appendix A.1 and RFC 9369 appendix A.1 (client key, iv, hp)
    assert [x.hex() for x in quic_client_keys(dcid, QUIC_V1)] == [
        "1f369613dd76d5467730efcbe3b1a22d", "fa044b2f42a3fd3b46fb255c", "9f50449e04a0e810283a1e9933adedd2"]
    assert [x.hex() for x in quic_client_keys(dcid, QUIC_V2)] == [
        "8b1a0bc121284290a29e0971b5cd045d", "91f73e2351d8fa91660e909f", "45b95e15235d6f45a6b19cbcb0294ba9"]


def varint(v: int) -> bytes:
    if v < 64:
        return bytes([v])
    if v < 16384:
        return struct.pack(">H", 0x4000 | v)
    return struct.pack(">I", 0x80000000 | v)


def protect_initial(frames: bytes, pn: int) -> bytes:
    """A client Initial (v1) for the RFC 9001 A.1 DCID, protected with the RFC's published keys."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key = bytes.fromhex("1f369613dd76d5467730efcbe3b1a22d")
    iv = bytes.fromhex("fa044b2f42a3fd3b46fb255c")
    hp = bytes.fromhex("9f50449e04a0e810283a1e9933adedd2")
    dcid = bytes.fromhex("8394c8f03e515708")
    frames = frames + b"\x00" * max(0, 1100 - len(frames))
    pn_bytes = struct.pack(">I", pn)
    length = len(pn_bytes) + len(frames) + 16
    header = bytes([0xC3]) + struct.pack(">I", 1) + bytes([len(dcid)]) + dcid + b"\x00" + b"\x00" + \
        struct.pack(">H", 0x4000 | length) + pn_bytes
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big")))
    payload = AESGCM(key).encrypt(nonce, frames, header)
    pn_off = len(header) - 4
    sample = payload[:16]    # the sample starts 4 bytes after the pn offset: pn is 4 bytes long
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    first = header[0] ^ (mask[0] & 0x0F)
    protected_pn = bytes(b ^ m for b, m in zip(pn_bytes, mask[1:5]))
    return bytes([first]) + header[1:pn_off] + protected_pn + payload


@needs_crypto
def test_quic_v1_client_hello_split_over_two_initials_delivered_out_of_order():
    hello = published_hello()
    cut = len(hello) // 2
    p1 = protect_initial(b"\x06" + varint(0) + varint(cut) + hello[:cut], 0)
    p2 = protect_initial(b"\x06" + varint(cut) + varint(len(hello) - cut) + hello[cut:], 1)
    for order in ([p1, p2], [p2, p1]):
        r = DET.inspect(udp_view([(0, d) for d in order]))
        assert r.app_proto == "quic"
        assert r.facts["tls.sni"] == "example.test"
        assert r.facts["tls.ja4"] == "q" + PUB_JA4[1:]
    partial = DET.inspect(udp_view([(0, p2)]))
    assert "tls.sni" not in partial.facts and partial.status is Status.NEED_MORE


def shared_udp(name):
    path = SHARED_PCAPS / name
    if not path.is_file():
        pytest.skip("../shared/pcaps/%s is not present" % name)
    return [f for f in read_flows(path) if f.proto == 17]


@needs_crypto
def test_quic_v2_capture_sni():
    found = [DET.inspect(f.view()) for f in shared_udp("ndpi__quic-v2.pcapng")]
    assert any(r.app_proto == "quic" and r.facts.get("quic.version") == "v2" and r.facts.get("tls.sni") == "test"
               for r in found)


def test_google_quic_captures_name_their_servers():
    names = set()
    for name in ("ndpi__quic.pcap", "ndpi__youtube_quic.pcap"):
        for f in shared_udp(name):
            r = DET.inspect(f.view())
            if r.app_proto == "quic":
                names.add(r.facts.get("tls.sni"))
    assert {"www.youtube.com", "mail.google.com", "yt3.ggpht.com"} <= names


def test_captured_tls_flows_sni_and_server_hello():
    path = SHARED_PCAPS / "ndpi__443-curl.pcap"
    if not path.is_file():
        pytest.skip("../shared/pcaps not present")
    f = next(f for f in read_flows(path) if f.proto == 6)
    r = assert_consistent_prefixes(DET, f.view(), fine=200)
    assert r.facts["tls.sni"] == "www.ntop.org"
    assert r.facts["tls.server_version"] == "1.2"
    assert r.status is Status.MATCH


# -- fuzz ----------------------------------------------------------------------------

@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=800), st.binary(max_size=200))
def test_fuzz_tcp_never_raises(c, s):
    assert DET.inspect(tcp_view(c, s)).status in set(Status)
    assert DET.inspect(tcp_view(b"\x16\x03\x01" + c, s)).status in set(Status)


SAMPLE = records(published_hello())


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SAMPLE) - 1), st.integers(0, 255))
def test_fuzz_mutated_client_hello_never_raises(pos, byte):
    data = SAMPLE[:pos] + bytes([byte]) + SAMPLE[pos + 1:]
    assert DET.inspect(tcp_view(data)).status in set(Status)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=4), st.integers(0, 255))
def test_fuzz_quic_never_raises(dgrams, first):
    dgrams = [bytes([first | 0x80]) + b"\x00\x00\x00\x01" + d for d in dgrams]
    assert DET.inspect(udp_view([(0, d) for d in dgrams])).status in set(Status)


def test_client_hello_through_an_http_connect_proxy():
    req = b"CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
    hello = records(published_hello())
    waiting = DET.inspect(tcp_view(req + hello))
    assert waiting.status is Status.NEED_MORE and not waiting.facts
    r = DET.inspect(tcp_view(req + hello, b"HTTP/1.1 200 Connection established\r\n\r\n"))
    assert r.facts["tls.sni"] == "example.test" and r.facts["tls.ja4"] == PUB_JA4
    refused = DET.inspect(tcp_view(req + hello, b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n", closed=True))
    assert refused.status is Status.NO_MATCH


def test_ja4_alpn_and_empty_lists():
    base = {"legacy_version": 0x0303, "ciphers": [], "extensions": [], "sni": None, "alpn": [], "groups": [],
            "point_formats": [], "sig_algs": [], "versions": []}
    assert ja4(base) == "t12i000000_000000000000_000000000000"
    assert ja4(dict(base, alpn=["http/1.1"]))[8:10] == "h1"
    assert ja4(dict(base, alpn=["\x01\xff"]))[8:10] == "0f"      # not alphanumeric: hex of first/last byte
    assert ja4(dict(base, versions=[0x0A0A, 0x0304, 0x0303]), "q").startswith("q13i")
