"""The watch path's NFLOG reader: message layout, parsing real-shaped and broken
datagrams, and (as root, in a throw-away namespace) copies of real packets."""
from __future__ import annotations

import os
import shutil
import socket
import struct
import subprocess
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.drivers.nflog import (NFULA_IFINDEX_INDEV, NFULA_MARK, NFULA_PAYLOAD, NFULA_TIMESTAMP, NflogReader,
                                  config_message, parse_messages)


def attr(kind: int, value: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(value), kind) + value
    return body + b"\0" * (-len(body) % 4)


def packet_message(payload: bytes, ts: tuple[int, int] | None = (1_700_000_000, 250_000), indev: int = 7,
                   mark: int = 0x0C000000) -> bytes:
    attrs = attr(1, struct.pack("!HBB", 0x0800, 2, 0)) + attr(NFULA_MARK, struct.pack("!I", mark))
    if ts is not None:
        attrs += attr(NFULA_TIMESTAMP, struct.pack("!QQ", *ts))
    attrs += attr(NFULA_IFINDEX_INDEV, struct.pack("!I", indev)) + attr(NFULA_PAYLOAD, payload)
    body = struct.pack("=BBH", socket.AF_INET, 0, socket.htons(5700)) + attrs
    return struct.pack("=IHHII", 16 + len(body), 4 << 8, 0, 0, 0) + body


def test_config_message_layout():
    msg = config_message(5700, attr(1, b"\x01"), seq=9)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) and kind == (4 << 8) | 1 and flags == 0x5 and seq == 9
    assert socket.ntohs(struct.unpack_from("=H", msg, 18)[0]) == 5700


def test_packets_in_one_datagram_keep_order_time_interface_and_mark():
    ip1, ip2 = b"\x45" + bytes(40), b"\x60" + bytes(60)
    out = parse_messages(packet_message(ip1) + packet_message(ip2, ts=None, indev=0, mark=1))
    assert out == [(1_700_000_000.25, ip1, 7, 0x0C000000), (0.0, ip2, 0, 1)]


def test_broken_messages_are_counted_and_skipped():
    good = packet_message(b"\x45" + bytes(19))
    no_payload = good[:-24]                                   # cut before the payload attribute
    no_payload = struct.pack("=I", len(no_payload)) + no_payload[4:]
    bad_attr = bytearray(good)
    struct.pack_into("=H", bad_attr, 20, 3)                  # an attribute shorter than its header
    counters = {}
    out = parse_messages(no_payload + bytes(bad_attr) + good + b"\x01\x02", counters)
    assert len(out) == 1 and counters == {"malformed": 2}
    assert parse_messages(struct.pack("=IHHII", 9999, 4 << 8, 0, 0, 0), counters) == []
    assert counters["malformed"] == 3


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(0, 200))
def test_parsing_garbage_never_raises(noise, cut):
    data = (packet_message(b"\x45" + bytes(30)) + noise)
    out = parse_messages(data[:cut] + noise, {})
    assert isinstance(out, list)


@pytest.mark.netns
def test_copies_of_real_packets_arrive_in_a_namespace():
    if os.geteuid() != 0 or not shutil.which("iptables"):
        pytest.skip("needs root and iptables to build a namespace")
    ns = "egnl-%d" % os.getpid()
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = lambda *a: subprocess.run(["ip", "netns", "exec", ns, *a], check=True, capture_output=True)
        run("ip", "link", "set", "lo", "up")
        run("iptables", "-A", "OUTPUT", "-o", "lo", "-p", "udp", "--dport", "9", "-j", "NFLOG", "--nflog-group", "5791")
        code = ("import socket, time, sys\n"
                "from egress.drivers.nflog import NflogReader\n"
                "r = NflogReader(5791, copy_range=40); r.open()\n"
                "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                "for i in range(3): s.sendto(b'x' * (100 + i), ('127.0.0.1', 9))\n"
                "time.sleep(0.1); got = r.read(); r.close()\n"
                "print(len(got), [len(p) for _, p, _, _ in got], [p[2] << 8 | p[3] for _, p, _, _ in got],"
                " all(abs(t - time.time()) < 5 for t, _, _, _ in got))\n")
        out = run(sys_executable(), "-c", code).stdout.decode().strip()
        assert out == "3 [40, 40, 40] [128, 129, 130] True"
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


def sys_executable() -> str:
    import sys
    return sys.executable
