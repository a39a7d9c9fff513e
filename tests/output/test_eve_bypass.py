"""A flow the live gateway handed to the kernel says so in its flow event, and from when:
its packet and byte counts stop there."""
from egress.engine import Engine
from egress.output.eve import flow_event, timestamp
from egress.testing.craft import TcpSession
from egress.types import RawPacket


def a_flow():
    engine = Engine()
    s = TcpSession(("10.9.0.2", 40100), ("10.9.1.2", 443), t0=1_700_000_000.0)
    s.handshake()
    s.send(True, b"x" * 100)
    for ts, data in s.packets:
        flow = engine.process(RawPacket(ts, data, 101, len(data), None)).flow
    return flow


def test_a_flow_egress_saw_whole_has_no_bypass():
    event = flow_event(a_flow())
    assert "bypass" not in event["flow"] and "bypassed_at" not in event["flow"]


def test_a_bypassed_flow_says_from_when():
    flow = a_flow()
    flow.bypassed = flow.last
    event = flow_event(flow)
    assert event["flow"]["bypass"] == "kernel"
    assert event["flow"]["bypassed_at"] == timestamp(flow.last) == event["flow"]["end"]


def test_a_oneway_flow_says_from_when_the_servers_side_was_the_kernels():
    flow = a_flow()
    flow.bypassed_toclient = flow.start
    event = flow_event(flow)
    assert event["flow"]["bypass"] == "kernel-toclient"
    assert event["flow"]["bypassed_at"] == timestamp(flow.start)
    flow.bypassed = flow.last               # then handed to the kernel whole: all counts stop there
    assert flow_event(flow)["flow"]["bypass"] == "kernel"
