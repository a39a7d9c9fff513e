"""Captures the project writes itself for the golden replay tests (Zeek-style baselines).

Every scenario is deterministic (fixed clock, fixed sequence numbers), so its EVE
output can be compared with a committed baseline. Regenerate baselines after an
intended change with `EGRESS_UPDATE_GOLDEN=1 pytest tests/commands/test_replay_golden.py`
and review the diff like code.
"""
from __future__ import annotations

import struct

from egress.testing import craft

T0 = 1_700_000_000.0
SANDBOX = "10.200.0.2"
SANDBOX6 = "fd00:200::2"
POOL = ("10.200.9.9", 3333)


def dns_query(name: str, qid: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def dns_answer(name: str, address: str, qid: int = 0x1234, ttl: int = 300) -> bytes:
    query = dns_query(name, qid)
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, ttl, 4) + craft.addr(address)
    return header + query[12:] + answer


def mixed_traffic() -> list[tuple[float, bytes]]:
    """Raw IP packets (LINKTYPE 101) of several kinds of flows, in time order."""
    packets: list[tuple[float, bytes]] = []

    # DNS: the sandbox resolves a name.
    dns = craft.UdpExchange((SANDBOX, 41000), ("10.200.0.1", 53), t0=T0)
    dns.send(True, dns_query("files.example.org")).send(False, dns_answer("files.example.org", "10.200.5.5"))
    packets += dns.packets

    # An HTTPS-like download: handshake, a request, a bulk response in MSS segments, FIN.
    tls = craft.TcpSession((SANDBOX, 41001), ("10.200.5.5", 443), t0=T0 + 0.1)
    tls.handshake().send(True, b"\x16\x03\x01" + bytes(200)).send(False, bytes(range(256)) * 40).close()
    packets += tls.packets

    # Stratum v1: subscribe and authorize in 1-byte segments, a notify, a share.
    pool = craft.TcpSession((SANDBOX, 41002), POOL, t0=T0 + 0.2)
    pool.handshake()
    pool.send(True, b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\n', segment_size=1)
    pool.send(False, b'{"id":1,"result":[[["mining.set_difficulty","1"],["mining.notify","1"]],"08000002",4],"error":null}\n')
    pool.send(True, b'{"params":["wallet.worker","x"],"id":2,"method":"mining.authorize"}\n')
    pool.send(False, b'{"id":2,"result":true,"error":null}\n')
    pool.wait(5).send(True, b'{"params":["wallet.worker","1a","00000000","5f5e1000","0b9c2a1d"],"id":4,"method":"mining.submit"}\n')
    pool.reset(from_client=False)
    packets += pool.packets

    # A connection whose handshake was not captured: the server speaks first.
    mid = craft.TcpSession((SANDBOX, 51000), ("10.200.7.7", 443), t0=T0 + 0.3)
    mid.send(False, b"\x17\x03\x03" + bytes(500)).send(True, b"\x17\x03\x03" + bytes(40))
    packets += mid.packets

    # Out-of-order and retransmitted segments on IPv6.
    v6 = craft.TcpSession((SANDBOX6, 42000), ("fd00:200::80", 80), t0=T0 + 0.4)
    v6.handshake()
    v6.segment(True, b"Host: example\r\n\r\n", seq_offset=14)
    v6.segment(True, b"GET / HTTP/1.1\r\n", seq_offset=0)
    v6.segment(True, b"GET / HTTP/1.1\r\n", seq_offset=0)      # retransmission
    v6.advance(True, 31).send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").close()
    packets += v6.packets

    # ICMP echo and a UDP flow nobody answers.
    packets.append((T0 + 0.5, craft.icmp(SANDBOX, "10.200.0.1", 8, 0, b"ping")))
    packets.append((T0 + 0.5001, craft.icmp("10.200.0.1", SANDBOX, 0, 0, b"ping")))
    packets.append((T0 + 0.6, craft.udp(SANDBOX, "10.200.3.3", 43000, 9999, b"hello?")))

    packets.sort(key=lambda p: p[0])
    return packets


def write_all_formats(directory) -> dict[str, str]:
    """The same traffic as pcap (Ethernet, microseconds), pcap (cooked v2, ns) and pcapng (VLAN)."""
    packets = mixed_traffic()
    files = {
        "ether.pcap": (lambda p: craft.ether(p), 1, "pcap", False),
        "sll2-ns.pcap": (lambda p: craft.sll2(p), 276, "pcap", True),
        "vlan.pcapng": (lambda p: craft.ether(p, vlans=[craft.vlan_tag(42)]), 1, "pcapng", False),
        "raw.pcap": (lambda p: p, 101, "pcap", False),
    }
    out = {}
    for name, (wrap, linktype, fmt, ns) in files.items():
        path = str(directory / name)
        framed = [(ts, wrap(p)) for ts, p in packets]
        if fmt == "pcap":
            craft.write_pcap(path, framed, linktype=linktype, nanosecond=ns)
        else:
            craft.write_pcapng(path, framed, linktype=linktype)
        out[name] = path
    return out
