"""Capture reading: pcap in both byte orders and both time resolutions, pcapng with several
interfaces/sections/resolutions, broken files (good records first, then one CaptureError),
directory expansion, and every real capture in ../shared/pcaps against an independent count."""
from __future__ import annotations

import shutil
import struct
import subprocess
import tracemalloc

import pytest

from egress.decode import decode
from egress.drivers.pcap import CaptureError, iter_capture_paths, open_capture, read_capture
from egress.testing import craft as c

PKTS = [(1_700_000_000.123456, c.ether(c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "S"))),
        (1_700_000_001.5, c.ether(c.udp("fd00::1", "fd00::2", 3, 4, b"hello"))),
        (1_700_000_002.000001, c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "A"))]


@pytest.mark.parametrize("byteorder", ["<", ">"])
@pytest.mark.parametrize("nanosecond", [False, True])
def test_classic_pcap_byte_orders_and_resolutions(tmp_path, byteorder, nanosecond):
    path = tmp_path / "x.pcap"
    c.write_pcap(path, PKTS[:2], linktype=1, nanosecond=nanosecond, byteorder=byteorder)
    recs = list(read_capture(path))
    assert [r.data for r in recs] == [p[1] for p in PKTS[:2]]
    assert [r.linktype for r in recs] == [1, 1]
    assert recs[0].ts == pytest.approx(PKTS[0][0], abs=1e-6)
    assert recs[1].ts == pytest.approx(1_700_000_001.5, abs=1e-9)


def test_nanosecond_precision_is_kept(tmp_path):
    path = tmp_path / "ns.pcap"
    path.write_bytes(c.pcap_header(101, nanosecond=True)
                     + struct.pack("<IIII", 10, 123456789, 1, 1) + b"\x45")
    (rec,) = read_capture(path)
    assert rec.ts == pytest.approx(10.123456789, abs=1e-9)


def test_wire_length_and_snaplen(tmp_path):
    path = tmp_path / "snap.pcap"
    frame = c.ether(c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "PA", payload=b"x" * 500))
    c.write_pcap(path, [(1.0, frame[:100], len(frame))])
    (rec,) = read_capture(path)
    assert (len(rec.data), rec.wire_len) == (100, len(frame))
    p = decode(rec)
    assert p.truncated and p.anomalies == ()


def test_linktype_fcs_bits_are_masked(tmp_path):
    path = tmp_path / "fcs.pcap"
    header = bytearray(c.pcap_header(1))
    struct.pack_into("<I", header, 20, 1 | (1 << 29) | (2 << 26))
    path.write_bytes(bytes(header) + c.pcap_record(1.0, PKTS[0][1]))
    assert [r.linktype for r in read_capture(path)] == [1]


def test_kuznetzov_modified_pcap(tmp_path):
    path = tmp_path / "kuz.pcap"
    hdr = struct.pack("<IHHiIII", 0xA1B2CD34, 2, 4, 0, 0, 65535, 101)
    rec = struct.pack("<IIII", 5, 6, 3, 3) + bytes(8) + b"abc"
    path.write_bytes(hdr + rec + rec)
    assert [r.data for r in read_capture(path)] == [b"abc", b"abc"]


@pytest.mark.parametrize("bo", ["<", ">"])
def test_pcapng_interfaces_resolutions_and_block_kinds(tmp_path, bo):
    eth = PKTS[0][1]
    cooked = c.sll(c.udp("10.1.1.1", "10.1.1.2", 9, 10, b"sll"))
    raw = c.tcp("fd00::5", "fd00::6", 7, 8, "SA")
    blob = (c.pcapng_shb(bo)
            + c.pcapng_idb(1, bo=bo)                                   # default microseconds
            + c.pcapng_idb(113, tsresol=9, bo=bo)                      # nanoseconds
            + c.pcapng_idb(101, tsresol=0x80 | 10, bo=bo, tsoffset=100)  # 2^-10 s, +100 s
            + c._block(4, b"\x00\x00\x00\x00", bo)                      # name resolution: skipped
            + c._block(0x40000BAD, b"custom", bo)                       # unknown: skipped
            + c.pcapng_epb(1.25, eth, 0, None, bo=bo)
            + c.pcapng_epb(2.000000001, cooked, 1, 9, bo=bo)
            + c.pcapng_epb(3.5, raw, 2, 0x80 | 10, bo=bo)
            + c.pcapng_spb(eth, bo=bo))
    path = tmp_path / "multi.pcapng"
    path.write_bytes(blob)
    recs = list(read_capture(path))
    assert [r.linktype for r in recs] == [1, 113, 101, 1]
    assert [r.data for r in recs] == [eth, cooked, raw, eth]
    assert recs[0].ts == pytest.approx(1.25)
    assert recs[1].ts == pytest.approx(2.000000001, abs=1e-10)
    assert recs[2].ts == pytest.approx(103.5)
    assert [decode(r).proto for r in recs] == [6, 17, 6, 6]


def test_pcapng_multiple_sections_reset_interfaces_and_byte_order(tmp_path):
    a = c.pcapng_shb("<") + c.pcapng_idb(1, bo="<") + c.pcapng_epb(1.0, PKTS[0][1], bo="<")
    b = c.pcapng_shb(">") + c.pcapng_idb(101, bo=">") + c.pcapng_epb(2.0, PKTS[2][1], bo=">")
    path = tmp_path / "sections.pcapng"
    path.write_bytes(a + b)
    assert [(r.linktype, r.data) for r in read_capture(path)] == [(1, PKTS[0][1]), (101, PKTS[2][1])]
    # An EPB naming interface 1 of a section that declares only interface 0 is an error.
    path.write_bytes(a + c.pcapng_shb("<") + c.pcapng_epb(1.0, b"x", interface=0))
    with pytest.raises(CaptureError, match="undeclared interface"):
        list(read_capture(path))


def test_write_pcapng_roundtrip(tmp_path):
    path = tmp_path / "w.pcapng"
    c.write_pcapng(path, PKTS[:2], linktype=1, tsresol=9)
    recs = list(read_capture(path))
    assert [r.data for r in recs] == [PKTS[0][1], PKTS[1][1]]
    assert recs[1].ts == pytest.approx(PKTS[1][0], abs=1e-6)


# --- broken files ----------------------------------------------------------------------------

def _good_pcap(tmp_path, n=5):
    path = tmp_path / "good.pcap"
    c.write_pcap(path, [(float(i), PKTS[0][1]) for i in range(n)])
    return path


@pytest.mark.parametrize("cut", [1, 10, 16, 40])
def test_cut_off_pcap_yields_good_records_then_one_line_error(tmp_path, cut):
    path = _good_pcap(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-cut])
    got = []
    with pytest.raises(CaptureError) as info:
        for rec in read_capture(path):
            got.append(rec)
    assert len(got) == 4
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path) + ": truncated record")
    assert "at offset %d" % (24 + 4 * (16 + len(PKTS[0][1]))) in msg
    assert isinstance(info.value, ValueError)


def test_cut_off_pcapng_yields_good_records_then_error(tmp_path):
    path = tmp_path / "cut.pcapng"
    c.write_pcapng(path, [(float(i), PKTS[0][1]) for i in range(3)])
    path.write_bytes(path.read_bytes()[:-7])
    got = []
    with pytest.raises(CaptureError, match="truncated block at offset"):
        for rec in read_capture(path):
            got.append(rec)
    assert len(got) == 2


@pytest.mark.parametrize("content,reason", [
    (b"", "not a pcap or pcapng file"),
    (b"GIF89a" + bytes(100), "not a pcap or pcapng file"),
    (b"\xd4\xc3\xb2\xa1" + bytes(10), "truncated file header"),
])
def test_not_a_capture(tmp_path, content, reason):
    path = tmp_path / "bad.pcap"
    path.write_bytes(content)
    with pytest.raises(CaptureError, match=reason):
        list(read_capture(path))


def test_missing_file_is_capture_error(tmp_path):
    with pytest.raises(CaptureError, match="No such file"):
        list(read_capture(tmp_path / "nope.pcap"))


def test_huge_record_claim_allocates_nothing(tmp_path):
    path = tmp_path / "huge.pcap"
    path.write_bytes(c.pcap_header(1) + c.pcap_record(1.0, PKTS[0][1])
                     + struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 0xFFFFFFF0) + b"tiny")
    tracemalloc.start()
    try:
        got = []
        with pytest.raises(CaptureError):
            for rec in read_capture(path):
                got.append(rec)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(got) == 1
    assert peak < 1 << 20


def test_pcapng_bad_block_length(tmp_path):
    path = tmp_path / "bl.pcapng"
    head = c.pcapng_shb() + c.pcapng_idb(1)
    blob = bytearray(head + c.pcapng_epb(1.0, b"abcd"))
    struct.pack_into("<I", blob, len(head) + 4, 13)     # the EPB's length: not a multiple of 4
    path.write_bytes(bytes(blob))
    with pytest.raises(CaptureError, match="bad block length 13"):
        list(read_capture(path))


def test_capture_progress_fields(tmp_path):
    path = _good_pcap(tmp_path, 3)
    cap = open_capture(path)
    assert cap.format == "pcap" and cap.size == path.stat().st_size
    seen = [cap.offset for _ in cap.records()]          # progress is live, not only at the end
    assert len(seen) == 3 and seen == sorted(seen) and seen[0] > 24
    assert (cap.count, cap.offset, cap.linktypes) == (3, cap.size, [1])


def test_iter_capture_paths(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "deep").mkdir()
    for name in ("b/z.pcap", "b/deep/a.pcapng", "a.cap", "notes.txt", "b/x.PCAP"):
        (tmp_path / name).write_bytes(b"")
    single = tmp_path / "notes.txt"
    got = iter_capture_paths([tmp_path, single])
    rel = [p.relative_to(tmp_path).as_posix() for p in got]
    assert rel == ["a.cap", "b/deep/a.pcapng", "b/x.PCAP", "b/z.pcap", "notes.txt"]


# --- real captures -------------------------------------------------------------------------------

def _independent_count(path) -> int | None:
    if shutil.which("tcpdump"):
        out = subprocess.run(["tcpdump", "-nr", str(path)], capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            return len(out.stdout.splitlines())
    try:
        from scapy.utils import PcapReader, PcapNgReader  # noqa: F401
        from scapy.utils import RawPcapReader
    except ImportError:
        return None
    reader = RawPcapReader(str(path))     # picks PcapNg automatically for pcapng magic
    try:
        return sum(1 for _ in reader)
    finally:
        reader.close()


def test_every_shared_capture_reads_and_counts_match(shared_pcaps):
    files = iter_capture_paths([shared_pcaps])
    assert files, "no captures found in %s" % shared_pcaps
    compared = 0
    for path in files:
        recs = list(read_capture(path))
        assert recs, path
        decoded = [decode(r) for r in recs]
        ip = sum(1 for p in decoded if p.proto != -1)
        assert ip >= len(recs) // 2, (path, ip, len(recs))
        expected = _independent_count(path)
        if expected is not None:
            assert len(recs) == expected, path
            compared += 1
    if compared == 0:
        pytest.skip("neither tcpdump nor scapy available to count records independently")
