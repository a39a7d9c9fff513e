"""A tiny model bundle trained in well under a second on random rows, for classify tests."""
import numpy as np
import pytest
import xgboost

from egress.classify import save_bundle
from egress.features import FEATURE_NAMES

CLASSES = ["benign", "mining", "reverse_tunnel"]


def tiny_booster(seed: int = 0, rounds: int = 20, depth: int = 4, missing: float = 0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(600, len(FEATURE_NAMES))).astype(np.float32)
    y = (X[:, 0] > 0.3).astype(int) + (X[:, 5] > 0.8).astype(int)
    if missing:
        X[rng.random(X.shape) < missing] = np.nan
    params = {"objective": "multi:softprob", "num_class": 3, "max_depth": depth, "eta": 0.3, "seed": seed,
              "nthread": 1}
    return xgboost.train(params, xgboost.DMatrix(X, label=y), rounds)


@pytest.fixture
def bundle_dir(tmp_path):
    path = tmp_path / "tiny"
    save_bundle(path, tiny_booster(), "tiny", CLASSES, {"mining": 0.5, "reverse_tunnel": 0.5},
                {"data": {"rows": 600}, "metrics": {}}, "# tiny\n")
    return path
