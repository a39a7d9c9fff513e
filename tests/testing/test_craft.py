"""The crafting helpers everyone's tests stand on: checksums valid (independent RFC 1071 sum,
and scapy recomputing them), fields as asked, sessions with consistent seq/ack, and capture
files that scapy and tcpdump read back."""
from __future__ import annotations

import collections
import shutil
import struct
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.decode import decode
from egress.drivers.pcap import read_capture
from egress.testing import craft as c
from egress.types import ACK, FIN, SYN, RawPacket

scapy = pytest.importorskip("scapy.all")


def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = 0
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_checksum_matches_rfc1071(data):
    assert c.checksum(data) == rfc1071(data)


def test_checksum_edge_cases():
    assert c.checksum(b"") == 0xFFFF
    assert c.checksum(b"\xff\xff") == 0
    assert c.checksum(b"\x00\x00\x00\x00") == 0xFFFF


def _rebuilt(pkt, layer):
    """scapy's own checksum for `layer` of `pkt` (delete it, rebuild)."""
    clone = pkt.copy()
    del clone[layer].chksum
    return clone.__class__(bytes(clone))[layer].chksum


CASES = [
    ("tcp4", c.tcp("10.0.0.1", "192.168.1.9", 40000, 443, "PA", 7, 8, b"hello", window=1000,
                   options=b"\x02\x04\x05\xb4", ttl=33)),
    ("tcp6", c.tcp("fd00::1", "fd00::9", 40000, 22, "SA", 2**32 - 1, 5, b"", hop_limit=7)),
    ("udp4", c.udp("10.0.0.1", "10.0.0.2", 40000, 9999, b"x" * 33)),
    ("udp6", c.udp("fd00::1", "fd00::2", 40000, 9999, b"odd")),
    ("icmp4", c.icmp("10.0.0.1", "10.0.0.2", 8, 0, b"ping", ident=5, seq=6)),
    ("icmp6", c.icmp("fd00::1", "fd00::2", 128, 0, b"ping6", ident=5, seq=6)),
    ("tcp4-ipopt", c.tcp("10.0.0.1", "10.0.0.2", 1, 2, "FA", ip_options=b"\x94\x04\x00\x00")),
    ("udp6-ext", c.udp("fd00::1", "fd00::2", 40000, 9999, b"e",
                       ext=c.ipv6_ext(43, b"\0" * 6) + c.ipv6_ext(17), ext_first=0)),
]


@pytest.mark.parametrize("name,ip", CASES, ids=[n for n, _ in CASES])
def test_scapy_parses_fields_and_checksums_agree(name, ip):
    pkt = scapy.IP(ip) if ip[0] >> 4 == 4 else scapy.IPv6(ip)
    if scapy.IP in pkt:
        assert pkt[scapy.IP].chksum == _rebuilt(pkt, scapy.IP)
        assert pkt[scapy.IP].len == len(ip)
    else:
        assert pkt[scapy.IPv6].plen == len(ip) - 40
    if scapy.TCP in pkt:
        t = pkt[scapy.TCP]
        assert t.chksum == _rebuilt(pkt, scapy.TCP)
        if name == "tcp4":
            assert (t.sport, t.dport) == (40000, 443)
            assert (t.seq, t.ack, t.window, str(t.flags), bytes(t.payload)) == (7, 8, 1000, "PA", b"hello")
            assert t.options == [("MSS", 1460)] and pkt[scapy.IP].ttl == 33
        if name == "tcp6":
            assert (t.seq, t.ack, str(t.flags), pkt[scapy.IPv6].hlim) == (2**32 - 1, 5, "SA", 7)
    elif scapy.UDP in pkt:
        u = pkt[scapy.UDP]
        assert u.chksum == _rebuilt(pkt, scapy.UDP) and u.len == 8 + len(bytes(u.payload))
    elif scapy.ICMP in pkt:
        i = pkt[scapy.ICMP]
        assert i.chksum == _rebuilt(pkt, scapy.ICMP)
        assert (i.type, i.id, i.seq, bytes(i.payload)) == (8, 5, 6, b"ping")
    else:
        i = pkt[scapy.ICMPv6EchoRequest]
        assert i.cksum == _rebuilt_v6(pkt) and (i.id, i.seq, i.data) == (5, 6, b"ping6")


def _rebuilt_v6(pkt):
    clone = pkt.copy()
    del clone[scapy.ICMPv6EchoRequest].cksum
    return scapy.IPv6(bytes(clone))[scapy.ICMPv6EchoRequest].cksum


def test_link_wrappers_parse_in_scapy():
    ip = c.udp("10.0.0.1", "10.0.0.2", 40000, 9999, b"a")
    e = scapy.Ether(c.ether(ip, vlans=[c.vlan_tag(100, 0x88A8), 200]))
    assert [e[scapy.Dot1AD].vlan, e[scapy.Dot1Q].vlan, e[scapy.UDP].dport] == [100, 200, 9999]
    assert len(c.ether(ip)) == 60                          # minimum frame size, padded
    s1 = scapy.CookedLinux(c.sll(ip))
    assert s1.proto == 0x0800 and s1[scapy.UDP].dport == 9999
    s2 = scapy.CookedLinuxV2(c.sll2(c.udp("fd00::1", "fd00::2", 1, 9999, b"")))
    assert s2.proto == 0x86DD and s2[scapy.UDP].dport == 9999
    lo = scapy.Loopback(c.null(ip))
    assert lo[scapy.UDP].dport == 9999


def test_fragments_reassemble_to_the_original():
    whole = c.udp("10.0.0.1", "10.0.0.2", 1, 2, bytes(range(200)), ident=9)
    frags = c.fragment_ipv4(whole, 64)
    parts = {}
    for f in frags:
        ip = scapy.IP(f)
        assert ip.chksum == _rebuilt(ip, scapy.IP) and ip.id == 9
        parts[ip.frag * 8] = bytes(ip.payload)
        assert bool(ip.flags.MF) == (f is not frags[-1])
    assert b"".join(parts[k] for k in sorted(parts)) == whole[20:]


def test_tcp_session_sequence_numbers_are_consistent():
    s = c.TcpSession(("10.0.0.1", 40000), ("10.0.0.2", 3333), t0=100.0, step=0.01)
    s.handshake().send(True, b"a" * 3000, segment_size=1000).send(False, b"reply").close()
    pkts = [decode(RawPacket(t, b)) for t, b in s.packets]
    assert [p.ts for p in pkts] == sorted(p.ts for p in pkts) and pkts[0].ts == 100.0
    assert [p.flags for p in pkts[:3]] == [SYN, SYN | ACK, ACK]
    # Replay both directions: each segment starts where the sender's previous one ended,
    # and every ACK acknowledges exactly what the peer had sent.
    nxt = {}
    for p in pkts:
        me, peer = (p.sport, p.dport)
        if me in nxt:
            assert p.seq == nxt[me], p
        nxt[me] = (p.seq + len(p.payload) + (1 if p.flags & (SYN | FIN) else 0)) & 0xFFFFFFFF
        if p.flags & ACK:
            assert p.ack == nxt[peer], p
    data = [p for p in pkts if p.payload]
    assert [len(p.payload) for p in data] == [1000, 1000, 1000, 5]
    assert [p.flags & FIN for p in pkts[-4:]] == [FIN, 0, FIN, 0]


def test_tcp_session_on_ethernet_and_retransmission_helpers():
    s = c.TcpSession(("fd00::1", 1), ("fd00::2", 2), link=c.ether).handshake()
    s.segment(True, b"later", seq_offset=5).segment(True, b"first").advance(True, 10)
    recs = [decode(RawPacket(t, b, 1)) for t, b in s.packets]
    assert recs[4].seq - recs[3].seq == -5 and recs[4].payload == b"first"
    assert s.next_seq[True] == recs[3].seq + 5


@pytest.mark.parametrize("nanosecond", [False, True])
def test_write_pcap_read_by_scapy(tmp_path, nanosecond):
    s = c.TcpSession(("10.0.0.1", 40000), ("10.0.0.2", 80), t0=1_700_000_000.25, link=c.ether)
    s.handshake().send(True, b"GET / HTTP/1.0\r\n\r\n").close()
    path = tmp_path / "s.pcap"
    assert c.write_pcap(path, s.packets, linktype=1, nanosecond=nanosecond) == len(s.packets)
    got = scapy.rdpcap(str(path))
    assert [bytes(p) for p in got] == [b for _, b in s.packets]
    assert float(got[0].time) == pytest.approx(1_700_000_000.25, abs=1e-6)


def test_write_pcapng_read_by_scapy(tmp_path):
    pkts = [(10.5, c.udp("10.0.0.1", "10.0.0.2", 40000, 9999, b"x"))]
    path = tmp_path / "u.pcapng"
    c.write_pcapng(path, pkts, linktype=101, tsresol=9)
    got = scapy.rdpcap(str(path))
    assert len(got) == 1 and bytes(got[0]).endswith(b"x")
    assert float(got[0].time) == pytest.approx(10.5)


def test_bulk_capture_is_exact_deterministic_and_mixed(tmp_path):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    assert c.generate_bulk_capture(a, 200, 9, seed=7, concurrency=50) == 1800
    c.generate_bulk_capture(b, 200, 9, seed=7, concurrency=50)
    assert a.read_bytes() == b.read_bytes()
    kinds = collections.Counter()
    flows = collections.Counter()
    last_ts = 0.0
    for raw in read_capture(a):
        p = decode(raw)
        assert p.anomalies == () and raw.ts >= last_ts
        last_ts = raw.ts
        kinds[(p.version, p.proto)] += 1
        flows[frozenset(((p.src, p.sport), (p.dst, p.dport)))] += 1
    assert len(flows) == 200 and set(flows.values()) == {9}
    assert set(kinds) == {(4, 6), (4, 17), (6, 6), (6, 17)}
    if shutil.which("tcpdump"):
        out = subprocess.run(["tcpdump", "-nr", str(a)], capture_output=True, text=True, timeout=60)
        assert len(out.stdout.splitlines()) == 1800
        assert "truncated" not in out.stdout.lower()
