"""The split-deduplicated tree walk reaches the same leaves as the plain node-by-node walk,
so margins and scores of models/default are the same floats bit for bit."""
import json
import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from egress.classify import FlowClassifier
from egress.classify.trees import TreeEnsemble
from egress.features import Accumulator, FEATURE_NAMES
from egress.flow.flow import Flow
from tests.classify.conftest import tiny_booster

MODEL = Path(__file__).resolve().parents[2] / "models" / "default"
_CLF = FlowClassifier.load(MODEL)


def plain_margin(ens, x):
    """The walk as it was: every node compares its own feature with its own threshold."""
    x = np.asarray(x, dtype=np.float32)
    g = ens._roots
    for _ in range(ens.depth):
        v = x[ens._feature[g]]
        g = ens._left[g] + np.where(np.isnan(v), ens._default_right[g], v >= ens._threshold[g])
    return np.dot(ens._value[g], ens._class_matrix) + ens.base_margin


def test_split_table_reproduces_every_node():
    ens = _CLF.bundle.ensemble
    assert (ens._split_feature[ens._split] == ens._feature).all()
    assert ens._split_threshold[ens._split].tobytes() == ens._threshold.tobytes()


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), scale=st.sampled_from([0.01, 1.0, 100.0, 1e5]), nan=st.booleans())
def test_default_model_margin_is_bit_identical(seed, scale, nan):
    ens = _CLF.bundle.ensemble
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=len(FEATURE_NAMES)) * scale).astype(np.float32)
    x[rng.random(len(x)) < 0.3] = 0.0
    for node in rng.integers(len(ens._feature), size=20):     # values right on a split: ties
        x[ens._feature[node]] = ens._threshold[node]
    if nan:
        x[rng.integers(len(x))] = np.nan
    assert ens.margin(x).tobytes() == plain_margin(ens, x).tobytes()


@pytest.mark.parametrize("depth", [1, 2, 6])
def test_tiny_models_with_missing_values_are_bit_identical(depth):
    ens = TreeEnsemble.from_json(json.loads(bytes(tiny_booster(seed=3, rounds=30, depth=depth, missing=0.2)
                                                  .save_raw("json"))))
    rng = np.random.default_rng(5)
    for _ in range(100):
        x = rng.normal(size=ens.n_features).astype(np.float32)
        assert ens.margin(x).tobytes() == plain_margin(ens, x).tobytes()


def test_flow_scores_equal_the_plain_walk_and_softmax():
    rng = random.Random(4)
    for i in range(50):
        f = Flow(i, (), 6, 4, b"\x0a\0\0\x01", 40000, b"\x0a\0\0\x02", 443, 0.0, "syn")
        f.features = Accumulator(6)
        t = 0.0
        for _ in range(rng.randrange(2, 200)):
            t += rng.expovariate(rng.choice([1000.0, 10.0, 0.5]))
            f.features.add(t, rng.randrange(2), rng.choice([0, 0, 80, 300, 1448]), 0x18, 500)
        ml = _CLF.score(f, final=True)
        m = plain_margin(_CLF.bundle.ensemble, f.features.values(None, [])).astype(np.float64)
        e = np.exp(m - m.max())
        p = e / e.sum()
        assert ml["scores"] == {c: round(float(v), 4) for c, v in zip(_CLF.classes, p)}
        assert ml["class"] == _CLF.decide(p)
