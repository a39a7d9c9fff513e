"""Scoring happens at checkpoints only, is cached on the flow, and reaches the EVE flow event."""
import numpy as np

from egress.classify import FlowClassifier
from egress.config import EngineConfig
from egress.engine import Engine
from egress.features import vector
from egress.flow.flow import Flow
from egress.testing.craft import TcpSession
from egress.types import Packet, RawPacket


def _flow():
    return Flow(1, (), 6, 4, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 443, 100.0, "syn")


def _pkt(ts, payload=b"x" * 50, flags=0x18):
    return Packet(ts, 4, b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02", 6, 40000, 443, flags=flags, window=500,
                  payload=payload)


def test_scores_only_at_packet_checkpoints_and_caches(bundle_dir):
    clf = FlowClassifier.load(bundle_dir)
    flow = _flow()
    clf.start(flow)
    fired = []
    for i in range(1, 200):
        cached = flow.ml
        if clf.on_packet(flow, _pkt(100.0 + i * 0.001), i % 2):
            fired.append(i)
        else:
            assert flow.ml is cached          # untouched between checkpoints
    assert fired == [8, 32, 128]
    assert clf.scored == 3
    assert flow.ml["model"] == "tiny" and set(flow.ml["scores"]) == {"benign", "mining", "reverse_tunnel"}
    assert abs(sum(flow.ml["scores"].values()) - 1.0) < 1e-3
    clf.on_end(flow)
    assert clf.scored == 4


def test_long_lived_low_rate_flows_are_scored_by_age(bundle_dir):
    clf = FlowClassifier.load(bundle_dir)
    flow = _flow()
    clf.start(flow)
    fired = [t for t in (1, 5, 11, 20, 59, 61, 299, 301, 599, 601, 905)
             if clf.on_packet(flow, _pkt(100.0 + t), 0)]
    assert fired == [11, 61, 301, 601, 905]   # 301 is also the 8th packet


def test_score_matches_the_ensemble_and_thresholds_pick_the_class(bundle_dir):
    clf = FlowClassifier.load(bundle_dir)
    flow = _flow()
    clf.start(flow)
    for i in range(10):
        clf.on_packet(flow, _pkt(100.0 + i), i % 2)
    probs = clf.bundle.ensemble.predict_proba(np.asarray(vector(flow), dtype=np.float32))
    ml = clf.score(flow)
    assert ml["scores"] == {c: round(float(p), 4) for c, p in zip(clf.classes, probs)}
    assert clf.decide([0.2, 0.45, 0.35]) == "benign"          # nothing reaches 0.5
    assert clf.decide([0.1, 0.6, 0.3]) == "mining"
    assert clf.decide([0.05, 0.0, 0.95]) == "reverse_tunnel"


def test_engine_puts_ml_on_the_flow_event_with_signatures_off(bundle_dir):
    s = TcpSession(("10.0.0.1", 40000), ("10.0.0.2", 3333)).handshake()
    for _ in range(5):
        s.send(True, b'{"id":1,"method":"mining.submit","params":[]}\n')
        s.send(False, b'{"id":1,"result":true}\n')
    s.close()
    engine = Engine(EngineConfig(signatures=False), classifier=FlowClassifier.load(bundle_dir))
    for ts, data in s.packets:
        engine.process(RawPacket(ts, data))
    engine.flush()
    flows = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert len(flows) == 1
    ml = flows[0]["ml"]
    assert ml["model"] == "tiny" and ml["class"] in ("benign", "mining", "reverse_tunnel")


def test_early_checkpoints_need_a_higher_score(bundle_dir):
    import json
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    meta["early"] = {"packets": 32, "threshold": 0.9}
    (bundle_dir / "metadata.json").write_text(json.dumps(meta))
    clf = FlowClassifier.load(bundle_dir)
    assert clf.decide([0.3, 0.6, 0.1], early=True) == "benign"
    assert clf.decide([0.3, 0.6, 0.1], early=False) == "mining"
    assert clf.decide([0.05, 0.93, 0.02], early=True) == "mining"
    # in use: packet 8 is early, flow end never is
    flow = _flow()
    clf.start(flow)
    clf._ensemble.predict_proba = lambda x: np.array([0.3, 0.6, 0.1])
    for i in range(8):
        clf.on_packet(flow, _pkt(100.0 + i), i % 2)
    assert flow.ml["class"] == "benign" and flow.ml["scores"]["mining"] == 0.6
    clf.on_end(flow)
    assert flow.ml["class"] == "mining"


def test_too_little_evidence_is_benign(bundle_dir):
    import json
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    meta["min_payload_packets"] = 4
    (bundle_dir / "metadata.json").write_text(json.dumps(meta))
    clf = FlowClassifier.load(bundle_dir)
    clf._ensemble.predict_proba = lambda x: np.array([0.01, 0.98, 0.01])
    flow = _flow()
    clf.start(flow)
    for i in range(3):                       # three payload packets, then pure ACKs
        clf.on_packet(flow, _pkt(100.0 + i), i % 2)
    changed = [clf.on_packet(flow, _pkt(100.0 + i, payload=b"", flags=0x10), i % 2) for i in range(3, 8)]
    # The 8-packet checkpoint: too little evidence, the model is not run, the policy is
    # told (and acts on no score).
    assert changed == [False] * 5 and clf.scored == 0
    assert flow.ml["class"] == "benign" and flow.ml["scores"] == {} and flow.ml["evidence"] == "insufficient"
    ended = _flow()
    clf.start(ended)
    for i in range(3):
        clf.on_packet(ended, _pkt(100.0 + i), i % 2)
    clf.on_end(ended)                        # nor at flow end: nothing to report but that
    assert ended.ml == {"model": ended.ml["model"], "class": "benign", "scores": {}, "evidence": "insufficient"}
    assert clf.scored == 0
    clf.on_packet(flow, _pkt(109.0), 0)      # the fourth payload packet
    clf.on_end(flow)
    assert flow.ml["class"] == "mining" and "evidence" not in flow.ml
