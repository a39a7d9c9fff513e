"""The engine's classifier: per-packet feature updates, scoring only at checkpoints.

Guarantees (the FlowClassifier protocol in notes/ENGINE_API.md):
- `start(flow)` puts fresh feature state on `flow.features`: the packets' arguments in a
  list (`_Deferred`), replayed into an `egress.features.Accumulator` at the flow's first
  checkpoint or scoring, so that short flows never pay for one; same values.
- `on_packet` costs one accumulator update plus two comparisons; it scores the flow
  only when the flow reaches a packet-count checkpoint (8, 32, 128, 512 by default)
  or a flow-age checkpoint (10 s, 60 s, 300 s, then every 300 s: long-lived low-rate
  flows such as miners send few packets), and then returns True.
- After the last packet-count checkpoint the classifier is done with the flow: it
  drops `flow.features` (the engine then sees the flow as settled and the live
  driver hands it to the kernel fast path; replay stops feeding it too, so both
  keep the same score). A bulk transfer is judged on its first 512 packets; a
  low-rate flow (a miner) stays under watch, scored at every age checkpoint.
- `on_end` scores once more a flow still under watch, so its flow event carries
  the final score.
- The result is cached on the flow: flow.ml = {"model", "class", "scores"}.
- `class` is the highest-scoring non-benign class whose score reaches its threshold
  (metadata "thresholds"; before `early.packets` packets, and not at flow end, at least
  `early.threshold`), else the first class (benign). A flow with fewer than
  `min_payload_packets` payload packets is benign whatever its scores (two banners are
  not evidence of anything): its result says `"evidence": "insufficient"`, which the
  policy honours (it acts on no score of such a result), and the model is not run for
  such a flow at all (its result could not change anything): `scores` is then empty.
- Works with signatures off: detector features are then zero, as in training.
"""
from __future__ import annotations

from itertools import repeat
from pathlib import Path

import numpy as np

from egress.classify.bundle import Bundle, load_bundle
from egress.features import Accumulator, payload_len, vector


class _Deferred:
    """A flow's features until its first look: the arguments of each Accumulator.add call,
    kept in a list and replayed into an Accumulator when the flow is first scored.

    Most short connections end before their first checkpoint, and with too few payload
    packets to be scored at their end: they never need the Accumulator, whose set-up
    and per-packet updates cost more than a list append. Accumulator.add depends only
    on its calls in order, so the replayed state is exactly the one direct updates
    would have built (tests/classify/test_deferred_features.py)."""
    __slots__ = ("proto", "rows", "due", "payload")

    def __init__(self, proto: int, due: float):
        self.proto = proto
        self.rows: list[tuple] = []
        self.due = due
        self.payload = 0

    def payload_packets(self) -> int:
        return self.payload

    def accumulator(self) -> Accumulator:
        acc = Accumulator(self.proto)
        add = acc.add
        for row in self.rows:
            add(*row)
        acc.due = self.due
        return acc


def accumulated(flow):
    """The flow's Accumulator (built now from a _Deferred, and kept), or None."""
    features = flow.features
    if type(features) is _Deferred:
        features = flow.features = features.accumulator()
    return features


class _Checkpoints:
    """Packet counts and flow ages at which a flow is (re)scored."""

    def __init__(self, counts, ages):
        self.counts = frozenset(int(c) for c in counts)
        self.ages = tuple(sorted(float(a) for a in ages)) or (float("inf"),)
        self.last_count = max(self.counts, default=0)

    def next_age(self, age: float) -> float:
        for a in self.ages:
            if a > age:
                return a
        step = self.ages[-1] if self.ages[-1] != float("inf") else age + 1e9
        return (int(age // step) + 1) * step

    # One definition of "when to look", shared by the classifier and the training
    # recorder, so that training sees exactly the vectors serving will score.

    def start(self, flow) -> None:
        flow.features = _Deferred(flow.proto, flow.start + self.ages[0])

    def feed(self, flow, pkt, direction: int) -> int:
        """Add one packet to the flow's features; the flow's packet count when this packet
        reaches a checkpoint (a packet count or a flow age), else 0. At a checkpoint,
        flow.features is an Accumulator."""
        acc = flow.features
        ts = pkt.ts
        plen = len(pkt.payload)
        if pkt.truncated:
            plen = payload_len(pkt)
        if type(acc) is _Deferred:
            rows = acc.rows
            rows.append((ts, direction, plen, pkt.flags, pkt.window))
            if plen > 0:
                acc.payload += 1
            n = len(rows)
            if ts < acc.due and n not in self.counts:
                return 0
            acc = flow.features = acc.accumulator()
            if ts >= acc.due:
                acc.due = flow.start + self.next_age(ts - flow.start)
            return n
        acc.add(ts, direction, plen, pkt.flags, pkt.window)
        s = acc.s
        n = s[0][0] + s[1][0]             # packets so far (Accumulator.packets, inlined)
        if ts >= acc.due:
            acc.due = flow.start + self.next_age(ts - flow.start)
        elif n not in self.counts:
            return 0
        return n

    def is_last(self, n: int) -> bool:
        """After the last packet-count look the flow is left alone (it may take the fast path)."""
        return n >= self.last_count


class FlowClassifier:
    def __init__(self, bundle: Bundle):
        self.bundle = bundle
        self.name = bundle.name
        self.classes = bundle.classes
        self._ensemble = bundle.ensemble
        self._thresholds = [(i, bundle.thresholds.get(c, 0.5)) for i, c in enumerate(self.classes) if i > 0]
        self._early_thresholds = [(i, max(t, bundle.early_threshold)) for i, t in self._thresholds]
        self._early_packets = bundle.early_packets
        self._min_payload = bundle.min_payload_packets
        self._checks = _Checkpoints(bundle.checkpoints, bundle.time_checkpoints)
        self._feed = self._checks.feed          # bound once: on_packet runs per packet
        self.scored = 0
        # The result of a checkpoint on a flow with too little evidence (no model run).
        self._no_evidence = {"model": self.name, "class": self.classes[0], "scores": {}, "evidence": "insufficient"}

    @classmethod
    def load(cls, path: str | Path) -> "FlowClassifier":
        """Raises egress.classify.ModelError (one line) when the bundle does not fit this code."""
        return cls(load_bundle(path))

    # -- the engine protocol ------------------------------------------------------------

    def start(self, flow) -> None:
        self._checks.start(flow)

    def on_packet(self, flow, pkt, direction: int) -> bool:
        """True when the flow's result changed (the policy must look again)."""
        n = self._feed(flow, pkt, direction)
        if not n:
            return False
        changed = True
        if flow.features.payload_packets() < self._min_payload:
            # Nothing the policy reads changes: it acts on no score of such a result,
            # and payload packets only grow, so there was no real score before either.
            flow.ml = self._no_evidence
            changed = False
        else:
            self.score(flow)
        if self._checks.is_last(n):
            flow.features = None
        return changed

    def on_end(self, flow) -> None:
        if flow.features.payload_packets() < self._min_payload:
            flow.ml = self._no_evidence
        else:
            self.score(flow, final=True)

    # -- scoring ------------------------------------------------------------------------

    def score(self, flow, final: bool = False) -> dict:
        acc = accumulated(flow)
        probs = self._ensemble.predict_proba(np.asarray(vector(flow), dtype=np.float32))
        early = not final and acc is not None and acc.packets() < self._early_packets
        if acc is not None and acc.payload_packets() < self._min_payload:
            flow.ml = self.result(probs, early, evidence=False)
            flow.ml["evidence"] = "insufficient"
        else:
            flow.ml = self.result(probs, early)
        self.scored += 1
        return flow.ml

    def result(self, probs, early: bool = False, evidence: bool = True) -> dict:
        # Python floats (the same values) are cheaper to compare and round than numpy scalars
        probs = probs.tolist() if isinstance(probs, np.ndarray) else [float(p) for p in probs]
        return {"model": self.name, "class": self.decide(probs, early) if evidence else self.classes[0],
                "scores": dict(zip(self.classes, map(round, probs, repeat(4))))}

    def decide(self, probs, early: bool = False) -> str:
        """The highest-scoring non-benign class over its threshold (raised for early checkpoints)."""
        best, best_p = 0, -1.0
        for i, threshold in (self._early_thresholds if early else self._thresholds):
            p = probs[i]
            if p >= threshold and p > best_p:
                best, best_p = i, p
        return self.classes[best]


class FeatureRecorder:
    """A classifier stand-in for training: same accumulator and checkpoints, no model.

    Records (flow, stage, vector) at every checkpoint and at flow end, so the training
    set holds the vectors the live classifier will actually score."""

    name = "recorder"

    def __init__(self, checkpoints=(8, 32, 128, 512), time_checkpoints=(10.0, 60.0, 300.0)):
        self._checks = _Checkpoints(checkpoints, time_checkpoints)
        self.rows: list[tuple] = []   # (flow, stage, vector)

    def start(self, flow) -> None:
        self._checks.start(flow)

    def on_packet(self, flow, pkt, direction: int) -> bool:
        n = self._checks.feed(flow, pkt, direction)
        if not n:
            return False
        if self._checks.is_last(n):
            # As FlowClassifier: its last look at the flow, which is what "end" means.
            self.rows.append((flow, "end", vector(flow)))
            flow.features = None
        else:
            self.rows.append((flow, "n%d" % n, vector(flow)))
        return False

    def on_end(self, flow) -> None:
        accumulated(flow)
        self.rows.append((flow, "end", vector(flow)))
