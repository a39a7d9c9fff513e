"""FlowTable.hold: flows idle past their timeout whose connection lives on elsewhere (the
live gateway's kernel fast path) stay in the table while the hook says so, and end once."""
from __future__ import annotations

from egress.config import EngineConfig, Timeouts
from egress.flow.table import FlowTable
from egress.testing.craft import TcpSession
from egress.decode import decode
from egress.types import RawPacket

CONFIG = EngineConfig(timeouts=Timeouts(tcp_established=10.0, tcp_closed=1.0, absolute=100.0))


def table_with(*sessions):
    ended = []
    table = FlowTable(CONFIG, ended.append)
    for session in sessions:
        for ts, data in session.packets:
            table.track(decode(RawPacket(ts, data, 101, len(data), None)))
    return table, ended


def session(port, t0, close=False):
    s = TcpSession(("10.9.0.2", port), ("10.9.1.2", 443), t0=t0, step=0.001)
    s.handshake()
    s.send(True, b"hello")
    if close:
        s.close()
    return s


def test_an_idle_flow_the_hook_keeps_stays_and_is_offered_again():
    table, ended = table_with(session(40001, 1000.0))
    offered = []
    table.hold = lambda flows, now: offered.extend(flows) or list(flows)
    assert table.expire(1005.0) == 0 and offered == []          # not idle yet: the hook is not asked
    assert table.expire(1020.0) == 0 and len(offered) == 1       # idle: kept
    assert len(table) == 1 and ended == [] and table.held == 1
    assert table.expire(1030.0) == 0 and len(offered) == 2       # still idle: offered again


def test_a_flow_the_hook_refreshes_waits_a_whole_timeout_before_it_is_offered_again():
    table, ended = table_with(session(40002, 1000.0))
    offered = []

    def hold(flows, now):
        for flow in flows:
            flow.last = now                 # what the daemon does for an open connection
        offered.extend(flows)
        return list(flows)

    table.hold = hold
    table.expire(1020.0)
    table.expire(1025.0)
    assert len(offered) == 1
    table.expire(1031.0)
    assert len(offered) == 2 and ended == []


def test_flows_the_hook_does_not_keep_end_and_closed_or_too_old_flows_are_not_offered():
    table, ended = table_with(session(40003, 1000.0), session(40004, 1000.0, close=True),
                              session(40005, 1000.0))
    offered = []

    def hold(flows, now):
        offered.extend(f.client_port for f in flows)
        return [f for f in flows if f.client_port == 40005]

    table.hold = hold
    assert table.expire(1020.0) == 2
    assert sorted(offered) == [40003, 40005]                     # the closed flow is not offered
    assert sorted(f.client_port for f in ended) == [40003, 40004]
    assert [f.end_reason for f in ended if f.client_port == 40004] == ["closed"]
    assert table.expire(1101.0) == 1                             # the absolute timeout ends a held flow
    assert ended[-1].client_port == 40005 and offered.count(40005) == 1


def test_end_held_ends_a_kept_flow_exactly_once():
    table, ended = table_with(session(40006, 1000.0))
    table.hold = lambda flows, now: list(flows)
    table.expire(1020.0)
    (flow,) = table.flows.values()
    assert table.end_held(flow, closed=True) is True
    assert [f.end_reason for f in ended] == ["closed"] and len(table) == 0
    assert table.end_held(flow) is False and len(ended) == 1
