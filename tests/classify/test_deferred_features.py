"""Deferred features: a flow's packets kept as a list until its first look give exactly
the vectors, checkpoints and results that an Accumulator updated on every packet gives."""
import random

from egress.classify.classifier import FeatureRecorder, _Checkpoints, _Deferred, accumulated
from egress.features import Accumulator, vector
from egress.flow.flow import Flow
from egress.types import Packet


def _flow(start=100.0):
    return Flow(1, (), 6, 4, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 443, start, "syn")


def _packets(rng, n, start=100.0):
    t, out = start, []
    for _ in range(n):
        t += rng.choice([0.0001, 0.002, 0.3, 4.0, 11.0])
        payload = b"x" * rng.choice([0, 0, 1, 80, 300, 1448])
        flags = rng.choice([0x10, 0x18, 0x02, 0x12, 0x11, 0x04])
        out.append((Packet(t, 4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 6, 40000, 443, flags=flags,
                           window=rng.choice([0, 500, 65535]), payload=payload), rng.randrange(2)))
    return out


class Eager(_Checkpoints):
    """The definition: an Accumulator from the start, updated on every packet."""

    def start(self, flow) -> None:
        acc = Accumulator(flow.proto)
        acc.due = flow.start + self.ages[0]
        flow.features = acc


def test_deferred_and_eager_features_agree_at_every_look_and_at_the_end():
    rng = random.Random(7)
    for trial in range(300):
        packets = _packets(rng, rng.randrange(1, 60))
        looks = {}
        for name, checks in (("deferred", _Checkpoints((8, 32), (10.0, 60.0))),
                             ("eager", Eager((8, 32), (10.0, 60.0)))):
            flow, seen = _flow(), []
            checks.start(flow)
            for pkt, direction in packets:
                n = checks.feed(flow, pkt, direction)
                if n:
                    assert isinstance(flow.features, Accumulator)
                    seen.append((n, vector(flow)))
            accumulated(flow)
            seen.append(("end", vector(flow), flow.features.packets(), flow.features.payload_packets()))
            looks[name] = seen
        assert looks["deferred"] == looks["eager"], trial


def test_a_short_flow_never_builds_an_accumulator_and_counts_its_payload():
    checks = _Checkpoints((8, 32), (10.0,))
    flow = _flow()
    checks.start(flow)
    for pkt, direction in _packets(random.Random(1), 7):
        pkt.ts = 100.5                    # well before the first age checkpoint
        assert checks.feed(flow, pkt, direction) == 0
    assert type(flow.features) is _Deferred and len(flow.features.rows) == 7
    assert flow.features.payload_packets() == sum(1 for _ts, _d, plen, _f, _w in flow.features.rows if plen > 0) > 0


def test_the_training_recorder_sees_the_same_rows_either_way():
    rng = random.Random(3)
    packets = _packets(rng, 45)
    rows = {}
    for name, checks in (("deferred", None), ("eager", Eager((8, 32, 128, 512), (10.0, 60.0, 300.0)))):
        recorder = FeatureRecorder()
        if checks is not None:
            recorder._checks = checks
        flow = _flow()
        recorder.start(flow)
        for pkt, direction in packets:
            recorder.on_packet(flow, pkt, direction)
        if flow.features is not None:
            recorder.on_end(flow)
        rows[name] = [(stage, vec) for _, stage, vec in recorder.rows]
    assert rows["deferred"] == rows["eager"] and len(rows["eager"]) >= 2
