"""Property-based: whatever arrives, the engine answers every packet and stays bounded."""
from __future__ import annotations

from hypothesis import HealthCheck, given, settings, strategies as st

from egress.config import EngineConfig
from egress.engine import Engine
from egress.testing import craft
from egress.types import Action, RawPacket

LINKTYPES = [1, 101, 113, 276, 0]

VALID = [
    craft.tcp("10.200.0.2", "10.200.1.2", 40000, 3333, "PA", 1, 1,
              b'{"id":1,"method":"mining.subscribe","params":[]}\n'),
    craft.tcp("10.200.0.2", "10.200.1.2", 40001, 22, "PA", 1, 1, b"SSH-2.0-OpenSSH_9.2p1\r\n"),
    craft.udp("10.200.0.2", "10.200.0.1", 41000, 53, bytes.fromhex("1234010000010000000000000377777700000100 01".replace(" ", ""))),
    craft.tcp("fd00::2", "fd00::1", 40002, 443, "PA", 1, 1, b"\x16\x03\x01\x00\xc8\x01\x00\x00\xc4\x03\x03" + bytes(40)),
    craft.icmp("10.200.0.2", "10.200.0.1", 8, 0, b"ping"),
]


def mutate(data: bytes, flips: list[tuple[int, int]], cut: int) -> bytes:
    out = bytearray(data)
    for pos, value in flips:
        if out:
            out[pos % len(out)] = value
    return bytes(out[: max(0, len(out) - cut)])


packet = st.one_of(
    st.binary(max_size=200).map(lambda b: (101, b)),
    st.tuples(st.sampled_from(LINKTYPES), st.binary(max_size=120)),
    st.tuples(st.just(101), st.builds(mutate, st.sampled_from(VALID),
                                      st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), max_size=6),
                                      st.integers(0, 30))),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(packet, max_size=40), st.lists(st.floats(0, 1000, allow_nan=False), min_size=1, max_size=40))
def test_every_packet_gets_one_decision_and_the_table_stays_capped(packets, times):
    engine = Engine(EngineConfig(max_flows=8))
    for i, (linktype, data) in enumerate(packets):
        ts = times[i % len(times)]          # time may even go backwards
        decision = engine.process(RawPacket(ts, data, linktype))
        assert decision.action in (Action.ALLOW, Action.DROP, Action.REJECT)
        assert len(engine.table) <= 8
    engine.flush()
    flow_events = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert len(flow_events) == engine.counters["flows"]
    assert engine.counters["engine.exceptions"] == 0
    assert not any(k.startswith("inspect.errors") for k in engine.stats()), engine.stats()
