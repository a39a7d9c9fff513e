"""Fitting and evaluating the flow classifier; `egress train` is the command around it.

Guarantees:
- Reproducible: the same rows and seed give the same model (single-threaded XGBoost,
  seeded group split).
- Every row is used twice: once with the detector features as recorded and once with
  them zeroed, so the model works with signatures switched off (the classifier must
  catch what signatures cannot see).
- Rows are weighted so that every flow counts once (however many checkpoints it has)
  and every class weighs the same in total, times an optional per-class factor
  (`egress train` weighs benign x2: most real flows are benign, and a false block costs).
- Evaluation splits by group (capture source / scenario variant), never inside a flow;
  metrics are per flow: the class at flow end, and whether any checkpoint flagged it.
"""
from __future__ import annotations

import random
from collections import Counter, defaultdict

import numpy as np

from egress.classify.dataset import Row
from egress.features.schema import FEATURE_NAMES, SIGNATURE_FEATURES

SIG_COLUMNS = np.array([FEATURE_NAMES.index(n) for n in SIGNATURE_FEATURES])
CLASS_ORDER = ("benign", "mining", "reverse_tunnel", "reverse_shell")

DEFAULT_PARAMS = {
    "objective": "multi:softprob", "max_depth": 5, "eta": 0.15, "subsample": 0.8,
    "colsample_bytree": 0.5, "min_child_weight": 1.0, "lambda": 1.0, "tree_method": "hist",
    "nthread": 1,
}
DEFAULT_ROUNDS = 60


def classes_of(rows: list[Row]) -> list[str]:
    present = {r.label for r in rows} | {"benign"}
    return [c for c in CLASS_ORDER if c in present] + sorted(present - set(CLASS_ORDER))


def matrix(rows: list[Row], signatures: bool = True) -> np.ndarray:
    X = np.array([r.vector for r in rows], dtype=np.float32).reshape(len(rows), len(FEATURE_NAMES))
    if not signatures and len(rows):
        X[:, SIG_COLUMNS] = 0.0
    return X


def flow_id(r: Row) -> tuple:
    return (r.source, r.file, r.flow)


def excluded_columns(patterns) -> list[int]:
    import fnmatch
    return [i for i, n in enumerate(FEATURE_NAMES) if any(fnmatch.fnmatch(n, p) for p in patterns or ())]


def fit(rows: list[Row], classes: list[str], seed: int, rounds: int = DEFAULT_ROUNDS, params=None,
        exclude=(), class_weight=None):
    """`exclude`: feature name globs held constant (zero) in training, so no tree splits on
    them; serving still computes them, the model just never reads them."""
    import xgboost

    index = {c: i for i, c in enumerate(classes)}
    per_flow = Counter(flow_id(r) for r in rows)
    flow_class = {flow_id(r): r.label for r in rows}
    flows_per_class = Counter(flow_class.values())
    cw = class_weight or {}
    w = np.array([cw.get(r.label, 1.0) / per_flow[flow_id(r)] / flows_per_class[r.label] for r in rows],
                 dtype=np.float32)
    w *= len(per_flow) / max(float(w.sum()), 1e-9)
    X = np.vstack([matrix(rows, True), matrix(rows, False)])
    cols = excluded_columns(exclude)
    if cols:
        X[:, cols] = 0.0
    y = np.array([index[r.label] for r in rows] * 2, dtype=np.float32)
    p = dict(DEFAULT_PARAMS, **(params or {}))
    p.update({"num_class": len(classes), "seed": seed})
    dtrain = xgboost.DMatrix(X, label=y, weight=np.concatenate([w, w]), feature_names=list(FEATURE_NAMES))
    return xgboost.train(p, dtrain, rounds)


def ensemble_of(booster):
    import json

    from egress.classify.trees import TreeEnsemble
    return TreeEnsemble.from_json(json.loads(bytes(booster.save_raw("json"))))


def decide(probs, classes, thresholds) -> str:
    best, best_p = 0, -1.0
    for i in range(1, len(classes)):
        p = probs[i]
        if p >= thresholds.get(classes[i], 0.5) and p > best_p:
            best, best_p = i, p
    return classes[best]


def early(stage: str, early_packets: int) -> bool:
    """A checkpoint before `early_packets` packets (flow end is never early)."""
    return stage.startswith("n") and int(stage[1:]) < early_packets


PAYLOAD_COLUMNS = [FEATURE_NAMES.index("payload_pkts_toserver"), FEATURE_NAMES.index("payload_pkts_toclient")]


def predict_flows(ens, rows: list[Row], classes, thresholds, signatures: bool, early_packets: int = 0,
                  early_threshold: float = 1.0, min_payload_packets: int = 0) -> dict:
    """flow id -> {"label", "end": class at flow end, "any": first non-benign class at any checkpoint}.
    Checkpoints before `early_packets` packets need `early_threshold` at least; with fewer than
    `min_payload_packets` payload packets a flow is benign (as FlowClassifier decides)."""
    out: dict[tuple, dict] = {}
    if not rows:
        return out
    X = matrix(rows, signatures)
    probs = ens.predict_proba_batch(X)
    payload = X[:, PAYLOAD_COLUMNS].sum(axis=1)
    raised = {c: max(t, early_threshold) for c, t in thresholds.items()}
    for r, p, n in zip(rows, probs, payload):
        rec = out.setdefault(flow_id(r), {"label": r.label, "end": None, "any": "benign", "group": r.group,
                                          "scenario": r.scenario})
        if n < min_payload_packets:
            c = classes[0]
        else:
            c = decide(p, classes, raised if early(r.stage, early_packets) else thresholds)
        if r.stage == "end":
            rec["end"] = c
            rec["end_scores"] = [round(float(v), 4) for v in p]
        if c != "benign" and rec["any"] == "benign":
            rec["any"] = c
    return out


def metrics(pred: dict, classes, key: str = "end") -> dict:
    """Per-class precision, recall, false-positive rate and counts over flows."""
    out = {}
    for c in classes:
        tp = sum(1 for v in pred.values() if v["label"] == c and v[key] == c)
        fp = sum(1 for v in pred.values() if v["label"] != c and v[key] == c)
        pos = sum(1 for v in pred.values() if v["label"] == c)
        neg = len(pred) - pos
        out[c] = {"flows": pos, "tp": tp, "fp": fp,
                  "precision": round(tp / (tp + fp), 4) if tp + fp else None,
                  "recall": round(tp / pos, 4) if pos else None,
                  "fpr": round(fp / neg, 4) if neg else None}
    return out


def split_groups(rows: list[Row], seed: int, test_fraction: float = 0.25) -> tuple[set, set]:
    """Hold out about `test_fraction` of each class's groups (at least one when a class
    has two or more), seeded. A group with several labels goes with its majority label."""
    label_of: dict[str, Counter] = defaultdict(Counter)
    for r in rows:
        label_of[r.group][r.label] += 1
    by_class: dict[str, list[str]] = defaultdict(list)
    for g, counts in sorted(label_of.items()):
        by_class[counts.most_common(1)[0][0]].append(g)
    rng = random.Random(seed)
    test: set[str] = set()
    for c in sorted(by_class):
        groups = sorted(by_class[c])
        rng.shuffle(groups)
        k = int(round(len(groups) * test_fraction))
        if len(groups) >= 2:
            k = max(1, min(k, len(groups) - 1))
        else:
            k = 0
        test.update(groups[:k])
    return set(label_of) - test, test


def summary(rows: list[Row]) -> dict:
    """Counts of distinct flows (a corpus flow replayed at several clock stretches counts once)."""
    copies = {flow_id(r): r for r in rows}
    flows = {(r.source, r.file.split("@x")[0], r.flow): r for r in rows}
    return {
        "rows": len(rows),
        "flows": len(flows),
        "flow_copies": len(copies),
        "flows_per_class": dict(sorted(Counter(r.label for r in flows.values()).items())),
        "groups": len({r.group for r in rows}),
        "scenarios": len({r.scenario for r in rows}),
        "flows_per_source": dict(sorted(Counter(r.source.split(":")[0] if r.source.startswith("corpus") else r.source
                                                for r in flows.values()).items())),
    }
