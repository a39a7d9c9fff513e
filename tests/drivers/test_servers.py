"""The lab DNS server's answers (the HTTPS/git/listen servers are exercised end to end)."""
from __future__ import annotations

import struct

from egress.drivers.servers import dns_answer, parse_query


def query(name: str, qtype: int = 1, qid: int = 0x1234) -> bytes:
    q = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\x00"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + q + struct.pack("!HH", qtype, 1)


def test_a_and_aaaa_answers_and_nxdomain():
    zone = {"files.egress.test": ["10.205.2.2", "fd05:205:2::2"]}
    a = dns_answer(query("Files.Egress.Test"), zone)
    qid, flags, qd, an = struct.unpack_from("!HHHH", a)
    assert (qid, flags & 0x8000, flags & 0xF, qd, an) == (0x1234, 0x8000, 0, 1, 1)
    assert a.endswith(bytes([10, 205, 2, 2]))
    aaaa = dns_answer(query("files.egress.test", 28), zone)
    assert struct.unpack_from("!H", aaaa, 6)[0] == 1 and aaaa.endswith(bytes.fromhex("fd050205000200000000000000000002"))
    nx = dns_answer(query("other.test"), zone)
    assert struct.unpack_from("!H", nx, 2)[0] & 0xF == 3 and struct.unpack_from("!H", nx, 6)[0] == 0


def test_garbage_is_ignored():
    assert dns_answer(b"\x00\x01", {}) is None
    assert parse_query(query("a.b")[:14]) is None
