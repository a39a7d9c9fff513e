"""TLS ClientHello / ServerHello over TCP, and the ClientHello inside a QUIC Initial (UDP).

Guarantees (egress.inspect.base contract): pure, never raises, port independent,
reads at most `max_bytes` per direction; handshake messages may span TCP segments
and TLS records.

The ClientHello may follow an HTTP CONNECT and its 2xx answer (TLS through a proxy).

Facts (client side): tls.sni, tls.alpn (list), tls.version (the highest offered,
"1.3"...), tls.ciphers, tls.extensions, tls.groups, tls.point_formats,
tls.sig_algs (numbers, GREASE removed), tls.ja3 (md5) and tls.ja3_string, tls.ja4.
Server side: tls.server_version, tls.server_cipher, tls.ja3s.

- JA3 (Salesforce): "version,ciphers,extensions,groups,point_formats" in decimal,
  dash-joined, GREASE values (RFC 8701) removed; md5 of that string.
- JA4 (FoxIO, BSD-3-Clause, TLS client part only): protocol t/q, highest version,
  d/i (SNI present), 2-digit cipher and extension counts (GREASE excluded, SNI and ALPN
  included), first+last character of the first ALPN value ("00" if none; hex digits
  when not alphanumeric), "_", sha256[:12] of the sorted 4-hex-digit cipher list, "_",
  sha256[:12] of the sorted extension list without SNI (0000) and ALPN (0010), then
  "_" and the signature algorithms in offered order when there are any.
- QUIC: v1 (RFC 9001) and v2 (RFC 9369) client Initial packets: the Initial keys
  come from the client's Destination Connection ID and the version's public salt,
  header protection is removed, AES-128-GCM decrypts the payload, and CRYPTO frames
  (possibly across coalesced packets and several datagrams) are put back in offset
  order to parse the ClientHello. Needs the `cryptography` package; without it QUIC
  flows are reported as "quic" without the ClientHello facts.
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import struct

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView

MAX_BYTES = 8192

try:  # optional: only the QUIC Initial decryption needs it
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    HAVE_CRYPTO = True
except Exception:  # pragma: no cover - depends on the environment
    HAVE_CRYPTO = False

EXT_SNI, EXT_GROUPS, EXT_POINTS, EXT_SIGALGS, EXT_ALPN, EXT_VERSIONS = 0, 10, 11, 13, 16, 43

_VERSION_NAMES = {0x0304: "1.3", 0x0303: "1.2", 0x0302: "1.1", 0x0301: "1.0", 0x0300: "ssl3",
                  0x0002: "ssl2"}
_JA4_VERSIONS = {0x0304: "13", 0x0303: "12", 0x0302: "11", 0x0301: "10", 0x0300: "s3",
                 0x0002: "s2", 0xFEFF: "d1", 0xFEFD: "d2", 0xFEFC: "d3"}


GREASE = frozenset((n << 8) | n for n in range(0x0A, 0x100, 0x10))


def is_grease(v: int) -> bool:
    """RFC 8701 GREASE values: 0x?A?A with both bytes equal."""
    return v in GREASE


class _Reader:
    """Bounds-checked big-endian reader; every read past the end raises ValueError."""
    __slots__ = ("b", "p")

    def __init__(self, b: bytes, p: int = 0):
        self.b, self.p = b, p

    def take(self, n: int) -> bytes:
        if n < 0 or self.p + n > len(self.b):
            raise ValueError("short")
        out = self.b[self.p:self.p + n]
        self.p += n
        return out

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return int.from_bytes(self.take(2), "big")

    def u24(self) -> int:
        return int.from_bytes(self.take(3), "big")

    def vec(self, lenbytes: int) -> bytes:
        return self.take(int.from_bytes(self.take(lenbytes), "big"))


def _u16_list(b: bytes) -> list[int]:
    return list(struct.unpack_from(">%dH" % (len(b) // 2), b))


def _extensions(r: _Reader) -> list[tuple[int, bytes]]:
    """The (type, data) extension list that ends a Client/ServerHello (absent in old hellos)."""
    exts: list[tuple[int, bytes]] = []
    if r.p < len(r.b):
        er = _Reader(r.vec(2))
        while er.p < len(er.b):
            etype = er.u16()
            exts.append((etype, er.vec(2)))
    return exts


def parse_client_hello(body: bytes) -> dict | None:
    """ClientHello body (after the 4-byte handshake header) -> its fields, or None."""
    try:
        r = _Reader(body)
        legacy_version = r.u16()
        r.take(32)
        r.vec(1)                                 # session id
        ciphers = _u16_list(r.vec(2))
        r.vec(1)                                 # compression methods
        exts = _extensions(r)
    except ValueError:
        return None
    hello = {"legacy_version": legacy_version, "ciphers": ciphers, "extensions": [e for e, _ in exts],
             "sni": None, "alpn": [], "groups": [], "point_formats": [], "sig_algs": [], "versions": []}
    for etype, data in exts:
        try:
            if etype == EXT_SNI:
                lr = _Reader(_Reader(data).vec(2))
                while lr.p < len(lr.b):
                    kind, name = lr.u8(), lr.vec(2)
                    if kind == 0:
                        hello["sni"] = name.decode("ascii", "replace")
                        break
            elif etype == EXT_ALPN:
                lr = _Reader(_Reader(data).vec(2))
                while lr.p < len(lr.b):
                    hello["alpn"].append(lr.vec(1).decode("ascii", "replace"))
            elif etype == EXT_GROUPS:
                hello["groups"] = _u16_list(_Reader(data).vec(2))
            elif etype == EXT_POINTS:
                hello["point_formats"] = list(_Reader(data).vec(1))
            elif etype == EXT_SIGALGS:
                hello["sig_algs"] = _u16_list(_Reader(data).vec(2))
            elif etype == EXT_VERSIONS:
                hello["versions"] = _u16_list(_Reader(data).vec(1))
        except ValueError:
            continue                             # one bad extension does not hide the others
    return hello


def parse_server_hello(body: bytes) -> dict | None:
    try:
        r = _Reader(body)
        version = r.u16()
        r.take(32)
        r.vec(1)
        cipher = r.u16()
        r.u8()                                   # compression method
        exts = _extensions(r)
    except ValueError:
        return None
    selected = version
    for etype, data in exts:
        if etype == EXT_VERSIONS and len(data) == 2:
            selected = int.from_bytes(data, "big")
    return {"legacy_version": version, "version": selected, "cipher": cipher,
            "extensions": [e for e, _ in exts]}


def ja3_string(h: dict) -> str:
    def j(vals):
        return "-".join([str(v) for v in vals if v not in GREASE])
    return ",".join((str(h["legacy_version"]), j(h["ciphers"]), j(h["extensions"]), j(h["groups"]),
                     j(h["point_formats"])))


def _sha12(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12] if text else "000000000000"


def ja4(h: dict, proto: str = "t") -> str:
    versions = [v for v in h["versions"] if v not in GREASE]
    version = max(versions) if versions else h["legacy_version"]
    ciphers = [c for c in h["ciphers"] if c not in GREASE]
    exts = [e for e in h["extensions"] if e not in GREASE]
    alpn = h["alpn"][0] if h["alpn"] else ""
    if not alpn:
        alpn_code = "00"
    elif alpn[0].isascii() and alpn[0].isalnum() and alpn[-1].isascii() and alpn[-1].isalnum():
        alpn_code = alpn[0] + alpn[-1]
    else:
        hx = alpn.encode("latin-1", "replace").hex()
        alpn_code = hx[0] + hx[-1]
    a = "%s%s%s%02d%02d%s" % (proto, _JA4_VERSIONS.get(version, "00"), "d" if h["sni"] is not None else "i",
                              min(len(ciphers), 99), min(len(exts), 99), alpn_code)
    b = _sha12(",".join("%04x" % c for c in sorted(ciphers)))
    ext_text = ",".join("%04x" % e for e in sorted(exts) if e not in (EXT_SNI, EXT_ALPN))
    sigs = [s for s in h["sig_algs"] if s not in GREASE]
    if sigs:
        ext_text += "_" + ",".join("%04x" % s for s in sigs)
    c = _sha12(ext_text) if exts else "000000000000"
    return "%s_%s_%s" % (a, b, c)


def client_facts(h: dict, proto: str = "t") -> dict:
    versions = [v for v in h["versions"] if not is_grease(v)]
    top = max(versions) if versions else h["legacy_version"]
    j3 = ja3_string(h)
    facts = {
        "tls.version": _VERSION_NAMES.get(top, "0x%04x" % top),
        "tls.ciphers": [c for c in h["ciphers"] if not is_grease(c)][:64],
        "tls.extensions": [e for e in h["extensions"] if not is_grease(e)][:64],
        "tls.groups": [g for g in h["groups"] if not is_grease(g)][:32],
        "tls.point_formats": h["point_formats"][:8],
        "tls.sig_algs": [s for s in h["sig_algs"] if not is_grease(s)][:32],
        "tls.ja3_string": j3,
        "tls.ja3": hashlib.md5(j3.encode("ascii")).hexdigest(),
        "tls.ja4": ja4(h, proto),
    }
    if h["sni"] is not None:
        facts["tls.sni"] = h["sni"]
    if h["alpn"]:
        facts["tls.alpn"] = h["alpn"][:8]
    return facts


# -- TLS over TCP ----------------------------------------------------------------

def _handshake_stream(data: bytes) -> tuple[str, bytes]:
    """Concatenate handshake-record payloads from the start of a TLS stream.

    -> ("no", b"") not TLS; ("need", prefix) incomplete; ("ok", handshake bytes) when a
    non-handshake record follows (the handshake prefix we have is all there will be).
    """
    out = bytearray()
    pos = 0
    while True:
        if pos + 5 > len(data):
            if pos == 0 and len(data) >= 1 and data[0] != 22:
                return "no", b""
            if pos == 0 and len(data) >= 2 and data[1] != 3:
                return "no", b""
            return "need", bytes(out)
        ctype, major, length = data[pos], data[pos + 1], int.from_bytes(data[pos + 3:pos + 5], "big")
        if major != 3 or data[pos + 2] > 4 or length == 0 or length > 18432:
            return ("no", b"") if pos == 0 else ("ok", bytes(out))
        if ctype != 22:
            return ("no", b"") if pos == 0 else ("ok", bytes(out))
        chunk = data[pos + 5:pos + 5 + length]
        out += chunk
        if len(chunk) < length:
            return "need", bytes(out)
        pos += 5 + length


def _first_handshake(hs: bytes, want: int) -> tuple[str, bytes]:
    """-> ("ok", body) of the first handshake message if it has type `want`."""
    if len(hs) < 4:
        return "need", b""
    if hs[0] != want:
        return "no", b""
    n = int.from_bytes(hs[1:4], "big")
    if len(hs) < 4 + n:
        return "need", b""
    return "ok", hs[4:4 + n]


class TlsDetector:
    name = "tls"
    protocols = frozenset({6, 17})
    max_bytes = MAX_BYTES

    def inspect(self, view: StreamView) -> InspectResult:
        if view.proto == 17:
            return _inspect_quic(view)
        return self._inspect_tcp(view)

    def _inspect_tcp(self, view: StreamView) -> InspectResult:
        to_server, to_client = view.to_server, view.to_client
        if to_server.startswith(b"CONNECT "):
            # TLS through an HTTP proxy: the handshake follows the proxy's 200 answer
            inner = _after_connect(to_server, to_client)
            if inner is None:
                closed = view.closed_to_server or view.closed_to_client or len(to_server) >= self.max_bytes
                return NO_MATCH if closed else NEED_MORE
            to_server, to_client = inner
            if not to_server:
                return NO_MATCH if view.closed_to_server else NEED_MORE
        if "tls.ja3" in view.facts:
            # An earlier call parsed the ClientHello (its facts are the flow's now): only
            # the server's answer is left to read.
            facts = {}
        else:
            state, hs = _handshake_stream(to_server)
            if state == "no":
                return NO_MATCH
            mstate, body = _first_handshake(hs, 1)
            if mstate == "no":
                return NO_MATCH
            if mstate == "need":
                if view.closed_to_server or len(to_server) >= self.max_bytes or state == "ok":
                    return NO_MATCH
                return NEED_MORE
            hello = parse_client_hello(body)
            if hello is None:
                return NO_MATCH
            facts = client_facts(hello, "t")
        sstate, shs = _handshake_stream(to_client)
        done = False
        if sstate == "no":
            done = bool(to_client)
        else:
            ms, sbody = _first_handshake(shs, 2)
            if ms == "ok":
                sh = parse_server_hello(sbody)
                if sh is not None:
                    facts["tls.server_version"] = _VERSION_NAMES.get(sh["version"], "0x%04x" % sh["version"])
                    facts["tls.server_cipher"] = sh["cipher"]
                    ja3s = "%d,%d,%s" % (sh["legacy_version"], sh["cipher"],
                                         "-".join(str(e) for e in sh["extensions"]))
                    facts["tls.ja3s"] = hashlib.md5(ja3s.encode("ascii")).hexdigest()
                done = True
            elif ms == "no":
                done = True
        if view.closed_to_client or len(to_client) >= self.max_bytes:
            done = True
        return InspectResult(Status.MATCH if done else Status.NEED_MORE, (), "tls", facts)


def _after_connect(to_server: bytes, to_client: bytes) -> tuple[bytes, bytes] | None:
    """The streams after a CONNECT request and its 2xx answer, or None (not there yet / refused)."""
    req_end = to_server.find(b"\r\n\r\n", 0, 4096)
    resp_end = to_client.find(b"\r\n\r\n", 0, 4096)
    if req_end < 0 or resp_end < 0 or not to_client.startswith((b"HTTP/1.1 2", b"HTTP/1.0 2")):
        return None
    return to_server[req_end + 4:], to_client[resp_end + 4:]


# -- QUIC Initial ----------------------------------------------------------------

QUIC_V1 = 0x00000001
QUIC_V2 = 0x6B3343CF
_SALTS = {
    QUIC_V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
    QUIC_V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9"),
}
_LABEL_PREFIX = {QUIC_V1: b"quic ", QUIC_V2: b"quicv2 "}
_INITIAL_TYPE = {QUIC_V1: 0, QUIC_V2: 1}


def _hkdf_expand_label(secret: bytes, label: bytes, length: int) -> bytes:
    full = b"tls13 " + label
    info = length.to_bytes(2, "big") + bytes([len(full)]) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out += block
        i += 1
    return out[:length]


@functools.lru_cache(maxsize=256)
def quic_client_keys(dcid: bytes, version: int) -> tuple[bytes, bytes, bytes]:
    """(key, iv, hp) of the client Initial packets for this DCID (RFC 9001 5.2, RFC 9369 3.3)."""
    initial = hmac.new(_SALTS[version], dcid, hashlib.sha256).digest()
    secret = _hkdf_expand_label(initial, b"client in", 32)
    pre = _LABEL_PREFIX[version]
    return (_hkdf_expand_label(secret, pre + b"key", 16), _hkdf_expand_label(secret, pre + b"iv", 12),
            _hkdf_expand_label(secret, pre + b"hp", 16))


def _varint(b: bytes, p: int) -> tuple[int, int]:
    if p >= len(b):
        raise ValueError("short")
    n = 1 << (b[p] >> 6)
    if p + n > len(b):
        raise ValueError("short")
    v = b[p] & 0x3F
    for i in range(1, n):
        v = (v << 8) | b[p + i]
    return v, p + n


def _quic_initials(dgram: bytes):
    """Yield (version, decrypted payload) of each client Initial packet coalesced in a datagram."""
    pos = 0
    while pos + 7 <= len(dgram):
        first = dgram[pos]
        if not first & 0x80:
            return                              # short header: nothing more to read
        version = int.from_bytes(dgram[pos + 1:pos + 5], "big")
        if version not in _SALTS:
            return
        p = pos + 5
        dlen = dgram[p]
        dcid = dgram[p + 1:p + 1 + dlen]
        p += 1 + dlen
        if dlen > 20 or p >= len(dgram):
            return
        slen = dgram[p]
        p += 1 + slen
        ptype = (first >> 4) & 0x03
        is_initial = ptype == _INITIAL_TYPE[version]
        if is_initial:
            token_len, p = _varint(dgram, p)
            p += token_len
        length, pn_off = _varint(dgram, p)
        end = pn_off + length
        if end > len(dgram) or length < 20:
            return
        if is_initial:
            plain = _decrypt_initial(dgram[pos:end], pn_off - pos, dcid, version)
            if plain is not None:
                yield version, plain
        pos = end


def _decrypt_initial(pkt: bytes, pn_off: int, dcid: bytes, version: int) -> bytes | None:
    key, iv, hp = quic_client_keys(bytes(dcid), version)
    sample = pkt[pn_off + 4:pn_off + 20]
    if len(sample) < 16:
        return None
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(sample) + enc.finalize()
    first = pkt[0] ^ (mask[0] & 0x0F)
    pn_len = (first & 0x03) + 1
    pn_bytes = bytes(pkt[pn_off + i] ^ mask[1 + i] for i in range(pn_len))
    header = bytes([first]) + pkt[1:pn_off] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big")))
    try:
        return AESGCM(key).decrypt(nonce, pkt[pn_off + pn_len:], header)
    except Exception:
        return None


def _crypto_frames(plain: bytes) -> list[tuple[int, bytes]]:
    out = []
    p = 0
    while p < len(plain):
        ftype = plain[p]
        if ftype == 0x00 or ftype == 0x01:        # PADDING, PING
            p += 1
        elif ftype in (0x02, 0x03):               # ACK
            p += 1
            _, p = _varint(plain, p)
            _, p = _varint(plain, p)
            count, p = _varint(plain, p)
            _, p = _varint(plain, p)
            for _ in range(min(count, 256)):
                _, p = _varint(plain, p)
                _, p = _varint(plain, p)
            if ftype == 0x03:
                for _ in range(3):
                    _, p = _varint(plain, p)
        elif ftype == 0x06:                       # CRYPTO
            off, p = _varint(plain, p + 1)
            n, p = _varint(plain, p)
            out.append((off, plain[p:p + n]))
            p += n
        else:
            break                                 # anything else: stop, keep what we have
    return out


def _gquic_chlo(dgram: bytes) -> dict | None:
    """Google QUIC (Q0xx, before IETF QUIC): the CHLO tag-value map is in clear text.

    Public header: flags (0x01 = version present, 0x08 = 8-byte connection id), the
    connection id, "Q0nn"; the CHLO message follows within the first ~40 bytes:
    "CHLO", u16 tag count, 2 bytes padding, (tag, u32 end offset) pairs, values.
    """
    if len(dgram) < 14 or not dgram[0] & 0x01 or not dgram[0] & 0x08:
        return None
    ver = dgram[9:13]
    if ver[:1] != b"Q" or not ver[1:].isdigit():
        return None
    at = dgram.find(b"CHLO", 13, 64)
    if at < 0:
        return None
    p = at + 4
    count = int.from_bytes(dgram[p:p + 2], "little")
    p += 4
    if count > 64 or p + 8 * count > len(dgram):
        return None
    base = p + 8 * count
    prev = 0
    tags = {}
    for i in range(count):
        tag = dgram[p + 8 * i:p + 8 * i + 4]
        end = int.from_bytes(dgram[p + 8 * i + 4:p + 8 * i + 8], "little")
        if end < prev or base + end > len(dgram):
            break
        tags[tag] = dgram[base + prev:base + end]
        prev = end
    facts = {"quic.version": ver.decode("ascii")}
    if b"SNI\x00" in tags:
        facts["tls.sni"] = tags[b"SNI\x00"].decode("ascii", "replace")
    if b"UAID" in tags:
        facts["quic.user_agent"] = tags[b"UAID"][:256].decode("ascii", "replace")
    return facts


def _inspect_quic(view: StreamView) -> InspectResult:
    dgrams = [d for direction, d in view.datagrams if direction == 0]
    if not dgrams:
        return NEED_MORE if not view.datagrams else NO_MATCH
    first = dgrams[0]
    gquic = _gquic_chlo(first)
    if gquic is not None:
        return InspectResult(Status.MATCH, (), "quic", gquic)
    if len(first) < 7 or not first[0] & 0x80 or int.from_bytes(first[1:5], "big") not in _SALTS:
        return NO_MATCH
    if not HAVE_CRYPTO:
        return InspectResult(Status.MATCH, (), "quic", {"quic.version": "%08x" % int.from_bytes(first[1:5], "big")})
    pieces: dict[int, bytes] = {}
    version = None
    for d in dgrams[:8]:
        try:
            initials = list(_quic_initials(d))
        except ValueError:          # a varint or length runs past the datagram: not an Initial
            continue
        for v, plain in initials:
            version = v
            for off, data in _crypto_frames(plain):
                if off < 65536 and off not in pieces:
                    pieces[off] = data
    if version is None:
        return NO_MATCH
    stream = bytearray()
    for off in sorted(pieces):
        if off > len(stream):
            break
        stream += pieces[off][len(stream) - off:]
    facts = {"quic.version": "v2" if version == QUIC_V2 else "v1"}
    mstate, body = _first_handshake(bytes(stream), 1)
    if mstate == "ok":
        hello = parse_client_hello(body)
        if hello is not None:
            facts.update(client_facts(hello, "q"))
            return InspectResult(Status.MATCH, (), "quic", facts)
    if mstate == "need" and len(view.datagrams) < 16:
        return InspectResult(Status.NEED_MORE, (), "quic", facts)
    return InspectResult(Status.MATCH, (), "quic", facts)
