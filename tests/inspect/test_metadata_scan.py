"""Cross-flow detections: cloud metadata endpoints and the failed-handshake scan tracker."""
from __future__ import annotations

import ipaddress

from hypothesis import given, settings, strategies as st

from egress.flow.flow import Flow
from egress.inspect.metadata import metadata_detection
from egress.inspect.scan import ScanTracker


def flow(src="10.204.0.2", dst="10.204.0.9", dport=80, proto=6, syn=True, synack=False, ts=0.0, facts=None):
    f = Flow(1, None, proto, 4 if "." in dst else 6, ipaddress.ip_address(src).packed, 40000,
             ipaddress.ip_address(dst).packed, dport, ts, "syn")
    f.syn, f.synack = syn, synack
    if facts:
        f.facts.update(facts)
    return f


def test_metadata_addresses():
    for addr, service in (("169.254.169.254", "imds"), ("fd00:ec2::254", "aws-imds-v6"),
                          ("169.254.170.2", "aws-ecs-task-metadata"), ("100.100.100.200", "alibaba-metadata")):
        d = metadata_detection(flow(src="10.0.0.1" if "." in addr else "fd00::1", dst=addr))
        assert d is not None and d.category == "metadata" and d.evidence["service"] == service
    assert metadata_detection(flow(dst="169.254.169.253")) is None     # AWS DNS resolver: not metadata
    assert metadata_detection(flow(dst="8.8.8.8")) is None


def test_metadata_by_name_in_facts():
    d = metadata_detection(flow(dst="10.0.0.53", facts={"dns.query": "metadata.google.internal"}))
    assert d is not None and d.signature == "metadata.cloud_name"
    assert metadata_detection(flow(dst="10.0.0.53", facts={"dns.query": "pypi.org"})) is None
    assert metadata_detection(object()) is None                       # never raises


def test_scan_threshold_window_and_recovery():
    t = ScanTracker(threshold=5, window=10.0)
    src = "10.204.0.2"
    for i in range(4):
        t.on_flow_end(flow(src=src, dst="10.204.1.%d" % i, ts=i), now=float(i))
    assert t.on_flow_start(flow(src=src), 4.0) == []
    t.on_flow_end(flow(src=src, dst="10.204.1.99", dport=22), now=4.5)
    [d] = t.on_flow_start(flow(src=src), 5.0)
    assert d.category == "scan" and d.evidence["failed_targets"] == 5 and d.evidence["private_targets"] == 5
    assert t.on_flow_start(flow(src="10.204.0.3"), 5.0) == []          # another source is not scanning
    assert t.on_flow_start(flow(src=src), 20.0) == []                  # the window passed


def test_only_failed_handshakes_count_and_repeats_are_one_target():
    t = ScanTracker(threshold=3, window=60.0)
    for i in range(10):
        t.on_flow_end(flow(dst="10.204.1.%d" % i, synack=True), now=float(i))    # answered: not a probe
        t.on_flow_end(flow(dst="10.204.2.1", dport=443), now=float(i))           # same target again
        t.on_flow_end(flow(dst="10.204.3.%d" % i, proto=17, syn=False), now=float(i))
    assert t.on_flow_start(flow(), 10.0) == []
    t.on_flow_end(flow(dst="10.204.2.2"), now=11.0)
    t.on_flow_end(flow(dst="10.204.2.2", dport=8080), now=11.0)
    assert t.on_flow_start(flow(), 12.0)


def test_memory_is_bounded():
    t = ScanTracker(threshold=4, window=60.0, max_sources=50)
    for s in range(500):
        for d in range(20):
            t.on_flow_end(flow(src="10.204.%d.%d" % (s // 200, s % 200 + 1), dst="10.9.0.%d" % d), now=float(s))
    assert len(t) == 50
    assert all(len(src.targets) <= 8 for src in t._sources.values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 30), st.booleans(), st.floats(0, 1000)), max_size=60))
def test_fuzz_tracker_never_raises(events):
    t = ScanTracker(threshold=3, window=5.0, max_sources=4)
    for src, dst, start, now in events:
        f = flow(src="10.0.0.%d" % (src + 1), dst="10.1.0.%d" % (dst + 1))
        if start:
            assert isinstance(t.on_flow_start(f, now), list)
        else:
            t.on_flow_end(f, now)
    assert len(t) <= 4
