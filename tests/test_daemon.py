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
