"""The vectorized tree walk gives XGBoost's own probabilities."""
import json

import numpy as np
import pytest
import xgboost
from hypothesis import given, settings, strategies as st

from egress.classify.trees import TreeEnsemble
from egress.features import FEATURE_NAMES

from tests.classify.conftest import tiny_booster


def _ensemble(booster):
    return TreeEnsemble.from_json(json.loads(bytes(booster.save_raw("json"))))


@pytest.mark.parametrize("depth,rounds,missing", [(2, 5, 0.0), (4, 20, 0.0), (6, 40, 0.2)])
def test_walk_equals_xgboost_predict_on_random_rows(depth, rounds, missing):
    booster = tiny_booster(seed=depth, rounds=rounds, depth=depth, missing=missing)
    ens = _ensemble(booster)
    rng = np.random.default_rng(99)
    X = rng.normal(size=(300, ens.n_features)).astype(np.float32) * 2
    X[rng.random(X.shape) < 0.1] = np.nan           # missing values follow default_left
    want = booster.predict(xgboost.DMatrix(X))
    got = ens.predict_proba_batch(X)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-6)
    assert (got.argmax(1) == want.argmax(1)).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.floats(-5, 5, width=32), st.just(float("nan"))), min_size=len(FEATURE_NAMES), max_size=len(FEATURE_NAMES)))
def test_walk_equals_xgboost_on_arbitrary_rows(row):
    booster, ens = _SHARED
    x = np.array(row, dtype=np.float32)
    want = booster.predict(xgboost.DMatrix(x[None, :]))[0]
    np.testing.assert_allclose(ens.predict_proba(x), want, rtol=1e-5, atol=2e-6)


def test_binary_objective():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 3] + X[:, 4] > 0).astype(int)
    b = xgboost.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgboost.DMatrix(X, label=y), 10)
    ens = _ensemble(b)
    np.testing.assert_allclose(ens.predict_proba_batch(X[:50])[:, 1], b.predict(xgboost.DMatrix(X[:50])),
                               rtol=1e-5, atol=2e-6)


def test_rejects_what_it_cannot_walk():
    with pytest.raises(ValueError, match="not an XGBoost JSON model"):
        TreeEnsemble.from_json({"learner": {}})
    doc = json.loads(bytes(tiny_booster(rounds=2).save_raw("json")))
    doc["learner"]["objective"]["name"] = "reg:squarederror"
    with pytest.raises(ValueError, match="unsupported objective"):
        TreeEnsemble.from_json(doc)


_booster = tiny_booster(seed=5, rounds=15, depth=5, missing=0.1)
_SHARED = (_booster, _ensemble(_booster))


def test_a_row_of_the_wrong_length_is_refused():
    _, ens = _SHARED
    with pytest.raises(ValueError, match="expects %d features, got 3" % ens.n_features):
        ens.predict_proba([0.0, 1.0, 2.0])
