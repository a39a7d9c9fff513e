"""Property-based fuzzing of the capture reader: random and mutated pcap/pcapng files may only
ever raise CaptureError, every record handed out decodes without an internal error, and
memory stays bounded by the file size (a header may claim gigabytes; nothing is allocated)."""
from __future__ import annotations

import struct
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from egress.decode import decode
from egress.drivers.pcap import CaptureError, read_capture
from egress.testing import craft as c

SETTINGS = settings(max_examples=200, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_PKTS = [(1.0 + i, f) for i, f in enumerate([
    c.ether(c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "S")),
    c.ether(c.udp("fd00::1", "fd00::2", 3, 4, b"data" * 10)),
    c.ether(c.icmp("10.0.0.1", "10.0.0.2")),
])]


def _pcap(bo: str, ns: bool) -> bytes:
    return c.pcap_header(1, ns, byteorder=bo) + b"".join(
        c.pcap_record(t, f, ns, byteorder=bo) for t, f in _PKTS)


def _pcapng(bo: str) -> bytes:
    return (c.pcapng_shb(bo) + c.pcapng_idb(1, bo=bo) + c.pcapng_idb(101, tsresol=9, bo=bo)
            + b"".join(c.pcapng_epb(t, f, 0, bo=bo) for t, f in _PKTS)
            + c.pcapng_spb(_PKTS[0][1], bo=bo) + c._block(5, b"stats", bo))


SEEDS = [_pcap("<", False), _pcap(">", True), _pcapng("<"), _pcapng(">")]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    return tmp_path_factory.mktemp("pcap-fuzz") / "f.bin"


def read_all(path, blob: bytes) -> int:
    path.write_bytes(blob)
    n = 0
    tracemalloc.start()
    try:
        try:
            for rec in read_capture(path):
                assert len(rec.data) <= len(blob)
                assert "decode-error" not in decode(rec).anomalies
                n += 1
        except CaptureError as exc:
            assert "\n" not in str(exc)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(blob) + (512 << 10), peak
    return n


@SETTINGS
@given(st.binary(max_size=300))
def test_random_files(scratch, blob):
    read_all(scratch, blob)


@SETTINGS
@given(st.sampled_from([b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1",
                        b"\x0a\x0d\x0d\x0a"]), st.binary(max_size=300))
def test_random_files_with_valid_magic(scratch, magic, rest):
    read_all(scratch, magic + rest)


@SETTINGS
@given(st.sampled_from(SEEDS), st.data())
def test_mutated_files(scratch, seed, data):
    buf = bytearray(seed)
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(buf) - 1))
        if data.draw(st.booleans()):
            buf[i] ^= 1 << data.draw(st.integers(0, 7))
        else:                                              # a lying 32-bit length somewhere
            j = i - i % 4
            if j + 4 <= len(buf):
                buf[j:j + 4] = struct.pack("<I", data.draw(st.sampled_from(
                    [0, 1, 7, 12, 0x7FFFFFFF, 0xFFFFFFFF, data.draw(st.integers(0, 2000))])))
    cut = data.draw(st.integers(0, len(buf)))
    read_all(scratch, bytes(buf[:cut]))


def test_unmutated_seeds_read_completely(scratch):
    assert [read_all(scratch, s) for s in SEEDS] == [3, 3, 4, 4]
