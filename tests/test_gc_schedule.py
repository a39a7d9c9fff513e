"""The daemon's garbage-collection schedule, and the property it relies on: the engine's
data path leaves no cyclic garbage, so reference counting frees all it drops."""
from __future__ import annotations

import gc

from egress.classify import FlowClassifier
from egress.drivers.pcap import iter_capture_paths, read_capture
from egress.engine import Engine
from egress.gc_schedule import FullCollections
from egress.inspect.registry import default_detectors
from egress.policy import load_policy_engine
from egress.types import RawPacket
from tests.golden.scenarios import mixed_traffic


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_no_full_collection_under_load_until_the_longest_interval():
    clock = Clock()
    schedule = FullCollections(idle=1.0, min_interval=60.0, max_interval=600.0, clock=clock)
    schedule.start()
    try:
        assert gc.get_threshold()[1] >= 1 << 30 and gc.get_threshold()[2] >= 1 << 30 and gc.get_freeze_count() > 0
        ran = []
        for _ in range(599):
            clock.now += 1.0
            ran.append(schedule.after_poll(handled=5))      # packets every second: never idle
        assert not any(ran)
        clock.now += 1.0
        assert schedule.after_poll(handled=5) and schedule.counters["full"] == 1
    finally:
        schedule.stop()


def test_a_full_collection_waits_for_an_idle_moment_and_the_shortest_interval():
    clock = Clock()
    saved = gc.get_threshold()
    schedule = FullCollections(idle=1.0, min_interval=60.0, max_interval=600.0, clock=clock)
    schedule.start()
    try:
        clock.now += 30.0
        assert not schedule.after_poll(handled=0)          # idle, but too soon after the last
        clock.now += 30.0
        assert not schedule.after_poll(handled=3)          # due, but busy
        clock.now += 0.5
        assert not schedule.after_poll(handled=0)          # idle for 0.5 s only
        clock.now += 0.6
        assert schedule.after_poll(handled=0)
    finally:
        schedule.stop()
    assert gc.get_threshold() == saved and gc.get_freeze_count() == 0


def _cyclic_garbage_after(packets, repo_root) -> list:
    engine = Engine(detectors=default_detectors(), policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]),
                    classifier=FlowClassifier.load(repo_root / "models" / "default"))
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for raw in packets:
            engine.process(raw)
        engine.flush()
        engine.drain_events()
        gc.collect()
        return list(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()


def test_the_engine_leaves_no_cyclic_garbage_on_generated_traffic(repo_root):
    packets = [RawPacket(ts, data, 101) for ts, data in mixed_traffic()]
    garbage = _cyclic_garbage_after(packets, repo_root)
    assert not garbage, sorted({type(o).__name__ for o in garbage})


def test_the_engine_leaves_no_cyclic_garbage_on_real_captures(shared_pcaps, repo_root):
    def packets():
        for path in iter_capture_paths([shared_pcaps]):
            try:
                yield from read_capture(path)
            except ValueError:      # a cut-off capture: its good records were read
                pass
    garbage = _cyclic_garbage_after(packets(), repo_root)
    assert not garbage, sorted({type(o).__name__ for o in garbage})
