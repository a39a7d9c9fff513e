"""The daemon's reload logic without a kernel: a bad rules file keeps the old policy and
logs exactly one line; a good one swaps it and revokes flows the new policy blocks."""
from __future__ import annotations

import logging

from egress.daemon import Daemon, DaemonConfig, load_policy, one_line
from egress.types import Action, Mode, Verdict

GOOD = """\
version: 1
default_policy: p
policies:
  p:
    mode: enforce
    rules:
      - name: reject-7001
        action: reject
        ports: [7001]
    default: allow
"""


class FakeEngine:
    def __init__(self, policy, revoked=()):
        self.policy = policy
        self.swapped = []
        self.revoked = list(revoked)

    def swap_policy(self, p):
        self.policy = p
        self.swapped.append(p)

    def swap_classifier(self, c):
        pass

    def rejudge(self, now):
        return self.revoked

    def drain_events(self):
        return []


class FakeWriter:
    reopened = 0

    def reopen(self):
        self.reopened += 1

    def write(self, events):
        pass

    def flush(self):
        pass


class FakeMarker:
    def __init__(self):
        self.calls = []
        self.last_error = ""

    def set_mark(self, flow, action):
        self.calls.append((flow, action))
        return True


def make_daemon(tmp_path, text):
    rules = tmp_path / "r.yaml"
    rules.write_text(text)
    d = Daemon(DaemonConfig(rules=[str(rules)], metrics=None))
    d.engine = FakeEngine(load_policy([str(rules)], None))
    d.writer = FakeWriter()
    d.marker = FakeMarker()
    return d, rules


def test_invalid_file_keeps_old_policy_and_logs_one_line(tmp_path, caplog):
    d, rules = make_daemon(tmp_path, GOOD)
    old = d.engine.policy
    rules.write_text("version: 1\npolicies:\n  p:\n    rules: [{name: x, action: explode}]\n    defualt: allow\n")
    with caplog.at_level(logging.INFO, logger="egress.daemon"):
        assert d.reload() is False
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "\n" not in errors[0].getMessage() and "r.yaml" in errors[0].getMessage()
    assert d.engine.policy is old and d.engine.swapped == [] and d.reloads == {"ok": 0, "failed": 1}


def test_good_reload_swaps_reopens_eve_and_revokes(tmp_path):
    class F:
        verdict = Verdict(Action.DROP, Mode.ENFORCE, "block")
    d, rules = make_daemon(tmp_path, GOOD)
    d.engine.revoked = [F()]
    assert d.reload() is True
    assert len(d.engine.swapped) == 1 and d.writer.reopened == 1
    assert d.marker.calls and d.marker.calls[0][1] is Action.DROP


def test_audit_mode_flows_are_not_revoked(tmp_path):
    class F:
        verdict = Verdict(Action.DROP, Mode.AUDIT, "block")
    d, _ = make_daemon(tmp_path, GOOD)
    d.engine.revoked = [F()]
    assert d.revoke_blocked(0.0) == 0 and d.marker.calls == []


def test_one_line():
    assert one_line(ValueError("a.yaml:3: bad\na.yaml:9: worse\n")) == "a.yaml:3: bad; a.yaml:9: worse"


def test_reload_with_a_real_engine_swaps_in_fresh_domain_lists_without_an_error(tmp_path, caplog):
    """SIGHUP re-reads rules/pools.txt and rules/tunnels.txt (the shipped ones here) into
    the running engine's detectors, and nothing is logged at error level."""
    from egress.engine import Engine
    from egress.inspect.pool_domain import PoolDomainDetector
    from egress.inspect.tunnel import TunnelDetector

    d, _ = make_daemon(tmp_path, GOOD)
    d.engine = Engine(policy=d.engine.policy)
    pools = next(x for x in d.engine.inspect.detectors if isinstance(x, PoolDomainDetector))
    tunnels = next(x for x in d.engine.inspect.detectors if isinstance(x, TunnelDetector))
    before = (dict(vars(pools)), dict(vars(tunnels)))
    with caplog.at_level(logging.INFO, logger="egress"):
        assert d.reload() is True
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    after = (vars(pools), vars(tunnels))
    for old, new in zip(before, after):
        changed = [k for k in old if old[k] is not new[k]]
        assert changed, "the reload did not swap a fresh list into %r" % (new,)


class ConntrackStates:
    """What ConntrackMarker.connection_state answers, by client port."""

    def __init__(self, states):
        self.states = states
        self.asked = []

    def connection_state(self, flow):
        self.asked.append(flow.client_port)
        return self.states[flow.client_port]


def test_fast_pathed_flows_stay_while_conntrack_has_their_connection_open(tmp_path):
    from egress.config import EngineConfig, Timeouts
    from egress.decode import decode
    from egress.drivers.iptables import MARK_ALLOW, MARK_DROP
    from egress.engine import Engine
    from egress.testing.craft import TcpSession
    from egress.types import RawPacket
    rules = tmp_path / "r.yaml"
    rules.write_text(GOOD)
    d = Daemon(DaemonConfig(rules=[str(rules)], metrics=None))
    d.engine = Engine(EngineConfig(timeouts=Timeouts(tcp_established=10.0)), policy=load_policy([str(rules)], None))
    d.engine.table.hold = d._hold_fast_pathed
    d.marker = ConntrackStates({41001: "open", 41002: "gone", 41003: "closed", 41004: "unknown"})
    flows = {}
    for port in (41001, 41002, 41003, 41004, 41005):
        s = TcpSession(("10.9.0.2", port), ("10.9.1.2", 8000), t0=1000.0)
        s.handshake()
        s.send(True, b"x")
        for ts, data in s.packets:
            flows[port] = d.engine.process(RawPacket(ts, data, 101, len(data), None)).flow
        # the driver marks a flow it handed to the ALLOW fast path; 41005 still goes through the queue
        flows[port].kernel_mark = MARK_ALLOW if port != 41005 else 0
    d.engine.advance(1020.0)
    ended = [e["src_port"] for e in d.engine.drain_events() if e["event_type"] == "flow"]
    assert ended == [41005] and len(d._held) == 4 and len(d.engine.table) == 4
    d.check_held(1020.0)
    assert sorted(d.marker.asked) == [41001, 41002, 41003, 41004]
    events = {e["src_port"]: e for e in d.engine.drain_events() if e["event_type"] == "flow"}
    assert sorted(events) == [41002, 41003, 41004]
    assert events[41003]["flow"]["reason"] == "closed" and events[41002]["flow"]["reason"] == "timeout"
    assert d.hold_counters == {"open": 1, "ended": 3}
    # The open connection's flow is still there: a reload that now blocks it revokes it.
    (kept,) = d.engine.table.flows.values()
    assert kept is flows[41001] and kept.last == 1020.0
    rules.write_text(GOOD.replace("ports: [7001]", "ports: [7001]\n      - name: block-8000\n"
                                  "        action: drop\n        ports: [8000]"))
    d.writer = FakeWriter()
    revoked = []
    d.marker.set_mark = lambda flow, action: revoked.append((flow.client_port, action)) or True
    assert d.reload() is True
    assert revoked == [(41001, Action.DROP)] and kept.kernel_mark == MARK_DROP
    # A revoked flow is not held any more: it ends at its next idle timeout.
    d.engine.advance(1025.0)
    assert not d._held and len(d.engine.table) == 1
    d.engine.advance(1031.0)
    assert not d._held and [e["src_port"] for e in d.engine.drain_events() if e["event_type"] == "flow"] == [41001]
