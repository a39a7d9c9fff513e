"""Mining detection through the whole engine: crafted packets in, EVE flow events out.

Checks what unit tests of the detectors cannot: port independence, TCP segmentation
and reordering handled by the engine's reassembly, the engine's packet sizes feeding
the Stratum v2 shape, pool names learned from the DNS/TLS detectors' facts, and an
emulated session replayed as packets.
"""
from __future__ import annotations

import random
import struct

import pytest

from egress.engine import Engine
from egress.testing.craft import TcpSession, UdpExchange
from egress.types import RawPacket
from tests.inspect import mining_samples as ms


def replay(packets) -> list[dict]:
    engine = Engine()
    for ts, data in packets:
        engine.process(RawPacket(ts, data, 101))
    engine.flush()
    return [e for e in engine.drain_events() if e["event_type"] == "flow"]


def mining_signatures(flows) -> list[str]:
    return [d["signature"] for f in flows for d in f.get("detections", []) if d["category"] == "mining"]


def session(port: int) -> TcpSession:
    return TcpSession(("10.203.0.2", 40100), ("10.203.0.3", port)).handshake()


@pytest.mark.parametrize("port", [443, 80, 22, 3333])
def test_stratum_on_any_port_in_one_byte_segments(port):
    s = session(port)
    for direction, data in ms.STRATUM_BTC:
        s.send(direction == 0, data, segment_size=1, ack=False)
    s.close()
    flows = replay(s.packets)
    assert mining_signatures(flows) == ["stratum.v1.subscribe"]
    assert flows[0]["app_proto"] == "stratum" and flows[0]["dest_port"] == port


def test_reordered_segments_are_reassembled():
    up, down = ms.streams(ms.XMR_STAK)
    s = session(9050)
    pieces = [(i, up[i:i + 40]) for i in range(0, len(up), 40)]
    rng = random.Random(5)
    order = list(range(len(pieces)))
    rng.shuffle(order)
    for k in order:
        offset, chunk = pieces[k]
        s.segment(True, chunk, seq_offset=offset)
    s.advance(True, len(up))
    s.send(False, down)
    s.close()
    assert mining_signatures(replay(s.packets)) == ["cryptonote.login"]


def test_stratum_v2_handshake_shape_from_engine_sizes():
    rng = random.Random(3)
    s = session(34255)
    s.send(True, rng.randbytes(64))
    s.send(False, rng.randbytes(234))
    s.send(True, rng.randbytes(150))
    s.send(False, rng.randbytes(90))
    s.close()
    flows = replay(s.packets)
    dets = [d for d in flows[0]["detections"] if d["category"] == "mining"]
    assert [d["signature"] for d in dets] == ["stratum.v2.noise_handshake"] and dets[0]["confidence"] < 1


def test_same_sizes_but_other_order_is_not_stratum_v2():
    rng = random.Random(4)
    s = session(34255)
    s.send(False, rng.randbytes(234))          # the server speaks first
    s.send(True, rng.randbytes(64))
    s.close()
    assert mining_signatures(replay(s.packets)) == []


def dns_query(name: str, ident: int = 0x1234) -> bytes:
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def test_dns_query_for_a_pool_name():
    pytest.importorskip("egress.inspect.dns")
    ex = UdpExchange(("10.203.0.2", 53000), ("10.203.0.1", 53)).send(True, dns_query("xmr-eu1.nanopool.org"))
    ok = UdpExchange(("10.203.0.2", 53001), ("10.203.0.1", 53)).send(True, dns_query("pypi.org"))
    assert mining_signatures(replay(ex.packets)) == ["mining.pool_domain"]
    assert mining_signatures(replay(ok.packets)) == []


def test_emulated_xmrig_session_replayed_as_packets():
    from egress.sim.session import run_session, to_packets
    result = run_session("xmr", duration=0.4, share_interval=0.05, seed=21)
    packets = to_packets(result, server=("10.203.0.3", 8080))
    assert all(b[0] >= a[0] for a, b in zip(packets, packets[1:]))          # time runs forward
    assert packets[-1][0] - packets[0][0] > 0.2                              # the session's own timing
    assert mining_signatures(replay(packets)) == ["cryptonote.login"]
