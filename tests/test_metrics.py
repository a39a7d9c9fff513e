"""Metrics: per-packet observations land in the right series; engine and kernel numbers
are read at scrape time."""
from __future__ import annotations

from prometheus_client import generate_latest

from egress.metrics import Metrics
from egress.types import Action, Decision, Verdict


def test_observe_and_scrape():
    m = Metrics(engine_stats=lambda: {"flows": 3, "flows.active": 2, "decode.ipv4-bad-ihl": 1})
    m.observe(Decision(Action.DROP, Verdict(Action.DROP, rule="block-mining")), Action.DROP, 20e-6)
    m.observe(Decision(Action.DROP, Verdict(Action.DROP, rule="block-mining")), Action.DROP, 30e-6)
    m.observe(None, Action.DROP, 1e-3)                      # an engine error
    text = generate_latest(m.registry).decode()
    assert 'egress_verdicts_total{action="drop",rule="block-mining"} 2.0' in text
    assert 'egress_verdicts_total{action="drop",rule="exception-policy"} 1.0' in text
    assert 'egress_packets_total{queue="all"} 3.0' in text
    assert 'egress_decision_seconds_bucket{le="5e-05"} 2.0' in text
    assert "egress_flows_total 3.0" in text and "egress_flows_active 2.0" in text
    assert 'egress_engine_events_total{name="decode.ipv4-bad-ihl"} 1.0' in text
    assert "_created" not in text


def test_local_histogram_scrapes_like_prometheus_clients_own():
    """The cheap per-packet histogram must expose exactly what prometheus-client's
    Histogram would for the same observations (bucket bounds inclusive)."""
    import random

    from prometheus_client import CollectorRegistry, Histogram

    from egress.metrics import LATENCY_BUCKETS

    rng = random.Random(4)
    values = [rng.choice(LATENCY_BUCKETS) for _ in range(50)] + [rng.expovariate(1e4) for _ in range(500)] + [1.0]
    m = Metrics()
    reference = CollectorRegistry()
    h = Histogram("egress_decision_seconds", "Queue callback to verdict", buckets=LATENCY_BUCKETS, registry=reference)
    for v in values:
        m.observe(Decision(Action.ALLOW, Verdict(Action.ALLOW, rule="r")), Action.ALLOW, v)
        h.observe(v)
    ours = [l for l in generate_latest(m.registry).decode().splitlines() if l.startswith("egress_decision_seconds_")]
    theirs = [l for l in generate_latest(reference).decode().splitlines()
              if l.startswith("egress_decision_seconds_") and "_created" not in l]
    assert len(ours) == len(LATENCY_BUCKETS) + 3      # buckets + +Inf, count, sum
    assert ours == theirs
    assert 'egress_packets_total{queue="all"} %d.0' % len(values) in generate_latest(m.registry).decode()
