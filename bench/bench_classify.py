"""Classifier costs, measured in one run: per-packet feature update, checkpoint scoring
with the vectorized tree walk, and plain XGBoost single-row predict on the same model.

    python bench/bench_classify.py [--model models/default] [--n 3000]

Without --model (or when the bundle is missing) a stand-in model of the same shape
as the default (4 classes, depth 6, 60 rounds) is trained on random rows.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import xgboost

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egress.classify import FlowClassifier, save_bundle  # noqa: E402
from egress.features import FEATURE_NAMES, Accumulator, vector  # noqa: E402
from egress.flow.flow import Flow  # noqa: E402

NAMES = list(FEATURE_NAMES)


def _stand_in(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] > 0).astype(int) + (X[:, 7] > 0.5).astype(int) + (X[:, 30] > 1).astype(int)
    b = xgboost.train({"objective": "multi:softprob", "num_class": 4, "max_depth": 6, "nthread": 1},
                      xgboost.DMatrix(X, label=y), 60)
    return save_bundle(tmp, b, "stand-in", ["benign", "mining", "reverse_tunnel", "reverse_shell"], {},
                       {}, "# stand-in\n")


def _pctl(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="models/default")
    ap.add_argument("--n", type=int, default=3000)
    ap.add_argument("--replay", nargs="*", default=[], metavar="PCAP",
                    help="also time engine replays of these captures with and without the classifier")
    args = ap.parse_args()
    path = Path(args.model)
    if not (path / "metadata.json").is_file():
        import tempfile
        path = _stand_in(Path(tempfile.mkdtemp()) / "stand-in")
    clf = FlowClassifier.load(path)
    booster = xgboost.Booster()
    booster.load_model(str(path / "model.json"))
    booster.set_param({"nthread": 1})
    ens = clf.bundle.ensemble

    # flows with varied shapes to score
    rng = random.Random(1)
    flows = []
    for i in range(200):
        f = Flow(i, (), 6, 4, b"\x0a\0\0\x01", 40000, b"\x0a\0\0\x02", 443, 0.0, "syn")
        f.features = Accumulator(6)
        t = 0.0
        for _ in range(rng.randrange(8, 300)):
            t += rng.expovariate(rng.choice([1000.0, 10.0, 0.5]))
            f.features.add(t, rng.randrange(2), rng.choice([0, 0, 80, 300, 1448]), 0x18, 500)
        flows.append(f)

    # per-packet update
    acc = Accumulator(6)
    pk = [(i * 0.001, rng.randrange(2), rng.choice([0, 0, 100, 1448]), 0x18, 500) for i in range(200_000)]
    add = acc.add
    t0 = time.perf_counter()
    for p in pk:
        add(p[0], p[1], p[2], p[3], p[4])
    per_packet = (time.perf_counter() - t0) / len(pk) * 1e6

    # each in its own loop (interleaving them measures XGBoost evicting our caches), same run
    fast, feats, plain = [], [], []
    for i in range(args.n):
        f = flows[i % len(flows)]
        t0 = time.perf_counter()
        clf.score(f)
        fast.append(time.perf_counter() - t0)
    for i in range(args.n):
        f = flows[i % len(flows)]
        t0 = time.perf_counter()
        vector(f)
        feats.append(time.perf_counter() - t0)
    rows = [np.asarray(vector(flows[i % len(flows)]), dtype=np.float32) for i in range(args.n)]
    for x in rows:
        t0 = time.perf_counter()
        booster.predict(xgboost.DMatrix(x[None, :], feature_names=NAMES))
        plain.append(time.perf_counter() - t0)

    # agreement on these flows
    X = np.array([vector(f) for f in flows], dtype=np.float32)
    diff = float(np.abs(ens.predict_proba_batch(X) - booster.predict(xgboost.DMatrix(X, feature_names=NAMES))).max())

    us = lambda xs, q: _pctl(xs, q) * 1e6  # noqa: E731
    out = {
        "model": str(path), "trees": ens.n_trees, "depth": ens.depth, "classes": len(clf.classes),
        "feature_update_per_packet_us": round(per_packet, 3),
        "feature_vector_us_p50": round(us(feats, 0.5), 1),
        "score_fast_us_p50": round(us(fast, 0.5), 1), "score_fast_us_p99": round(us(fast, 0.99), 1),
        "xgboost_predict_us_p50": round(us(plain, 0.5), 1), "xgboost_predict_us_p99": round(us(plain, 0.99), 1),
        "max_abs_prob_diff": diff,
        "mean_fast_us": round(statistics.mean(fast) * 1e6, 1),
    }
    if args.replay:
        out["replay"] = _replay(args.replay, clf)
    print(json.dumps(out, indent=1))


def _replay(paths, clf) -> dict:
    """Engine time per packet over the captures: no classifier vs the classifier (signatures off)."""
    from egress.config import EngineConfig
    from egress.drivers.pcap import iter_capture_paths, read_capture
    from egress.engine import Engine
    packets = [raw for p in iter_capture_paths(paths) for raw in read_capture(p)]
    res = {"packets": len(packets)}
    for name, c in (("engine_us_per_packet_no_model", None), ("engine_us_per_packet_with_model", clf)):
        best = float("inf")
        for _ in range(3):
            engine = Engine(EngineConfig(signatures=False), classifier=c)
            t0 = time.perf_counter()
            for raw in packets:
                engine.process(raw)
            engine.flush()
            best = min(best, time.perf_counter() - t0)
        res[name] = round(best / len(packets) * 1e6, 2)
        res[name.replace("us_per_packet", "flows")] = engine.counters["flows"]
    return res


if __name__ == "__main__":
    main()
