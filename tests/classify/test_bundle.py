"""Model bundles round-trip, and a bundle that does not fit the code is a one-line ModelError."""
import json

import numpy as np
import pytest
import xgboost

from egress.classify import FlowClassifier, ModelError, load_bundle
from egress.features import FEATURE_NAMES, SCHEMA_VERSION


def test_round_trip(bundle_dir):
    b = load_bundle(bundle_dir)
    assert b.name == "tiny" and b.classes == ["benign", "mining", "reverse_tunnel"]
    assert b.thresholds == {"mining": 0.5, "reverse_tunnel": 0.5}
    meta = json.loads((bundle_dir / "metadata.json").read_text())
    assert meta["feature_names"] == list(FEATURE_NAMES) and meta["schema_version"] == SCHEMA_VERSION
    assert (bundle_dir / "MODEL_CARD.md").read_text().startswith("# tiny")
    # the saved model predicts what the booster predicted
    booster = xgboost.Booster()
    booster.load_model(str(bundle_dir / "model.json"))
    x = np.random.default_rng(0).normal(size=(5, len(FEATURE_NAMES))).astype(np.float32)
    np.testing.assert_allclose(b.ensemble.predict_proba_batch(x), booster.predict(xgboost.DMatrix(x)), atol=2e-6)
    assert not list(bundle_dir.glob("*.pkl")) and not list(bundle_dir.glob("*.pickle"))


def _edit_meta(path, **changes):
    meta = json.loads((path / "metadata.json").read_text())
    meta.update(changes)
    (path / "metadata.json").write_text(json.dumps(meta))


def test_schema_version_mismatch_is_a_clear_error(bundle_dir):
    _edit_meta(bundle_dir, schema_version=SCHEMA_VERSION + 2)
    with pytest.raises(ModelError) as err:
        FlowClassifier.load(bundle_dir)
    msg = str(err.value)
    assert msg == "%s: feature schema %d does not match this egress (schema %d): retrain with egress train" % (
        bundle_dir, SCHEMA_VERSION + 2, SCHEMA_VERSION)
    assert "\n" not in msg


def test_feature_name_mismatch_is_a_clear_error(bundle_dir):
    names = list(FEATURE_NAMES)
    names[3], names[4] = names[4], names[3]
    _edit_meta(bundle_dir, feature_names=names)
    with pytest.raises(ModelError, match=r"feature names differ .*first difference at #3.*retrain with egress train"):
        FlowClassifier.load(bundle_dir)


def test_broken_bundles(tmp_path, bundle_dir):
    with pytest.raises(ModelError, match="no such model directory"):
        load_bundle(tmp_path / "nope")
    with pytest.raises(ModelError, match="no metadata.json"):
        load_bundle(tmp_path)
    model = bundle_dir / "model.json"
    model.write_bytes(model.read_bytes()[:-10])
    with pytest.raises(ModelError, match="does not match the sha256"):
        load_bundle(bundle_dir)
    _edit_meta(bundle_dir, model_sha256=None)
    with pytest.raises(ModelError, match="model.json: not JSON"):
        load_bundle(bundle_dir)
    (bundle_dir / "metadata.json").write_text("{not json")
    with pytest.raises(ModelError, match="metadata.json is unreadable"):
        load_bundle(bundle_dir)


def test_class_count_must_match(bundle_dir):
    _edit_meta(bundle_dir, classes=["benign", "mining"])
    with pytest.raises(ModelError, match="predicts 3 classes, metadata.json lists 2"):
        load_bundle(bundle_dir)
