"""Model bundles on disk: models/<name>/{model.json, metadata.json, MODEL_CARD.md}.

Guarantees:
- The model file is XGBoost's own JSON (or UBJ) format, never pickle.
- `load_bundle(dir)` checks the bundle against this code's feature schema and raises
  `ModelError` (a ValueError) with a one-line message naming the directory and what
  to do, e.g. "models/x: feature schema 3 does not match this egress (schema 4):
  retrain with egress train". Nothing half-loaded is ever returned.
- `save_bundle` writes metadata with the feature names, schema version, classes,
  thresholds, checkpoints, data summary and metrics next to the model, plus a sha256
  of the model file that loading verifies.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from egress.classify.trees import TreeEnsemble
from egress.features.schema import FEATURE_NAMES, SCHEMA_VERSION

FORMAT = "egress-model/1"
DEFAULT_CHECKPOINTS = (8, 32, 128, 512)
DEFAULT_TIME_CHECKPOINTS = (10.0, 60.0, 300.0)


class ModelError(ValueError):
    """A model bundle that cannot be used by this code (missing, corrupt, mismatched)."""


@dataclass
class Bundle:
    path: Path
    name: str
    classes: list[str]
    thresholds: dict[str, float]
    checkpoints: tuple[int, ...]
    time_checkpoints: tuple[float, ...]
    ensemble: TreeEnsemble
    early_packets: int = 0            # before this many packets (and not at flow end) a class needs
    early_threshold: float = 1.0      # at least this score: early checkpoints know little
    min_payload_packets: int = 0      # fewer payload packets than this: too little evidence, benign
    metadata: dict[str, Any] = field(default_factory=dict)


def load_bundle(path) -> Bundle:
    path = Path(path)
    where = str(path)
    meta_path = path / "metadata.json"
    if not path.is_dir():
        raise ModelError("%s: no such model directory" % where)
    if not meta_path.is_file():
        raise ModelError("%s: no metadata.json (not an egress model bundle)" % where)
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError("%s: metadata.json is unreadable: %s" % (where, _one_line(exc))) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelError("%s: metadata.json is not %s" % (where, FORMAT))

    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ModelError("%s: feature schema %s does not match this egress (schema %d): retrain with egress train"
                         % (where, version, SCHEMA_VERSION))
    names = meta.get("feature_names")
    if list(names or ()) != list(FEATURE_NAMES):
        raise ModelError("%s: feature names differ from this egress's schema %d (%s): retrain with egress train"
                         % (where, SCHEMA_VERSION, _first_difference(names or [], FEATURE_NAMES)))
    classes = meta.get("classes")
    if not isinstance(classes, list) or len(classes) < 2 or not all(isinstance(c, str) for c in classes):
        raise ModelError("%s: metadata.json lists no classes" % where)

    model_file = path / str(meta.get("model_file", "model.json"))
    try:
        raw = model_file.read_bytes()
    except OSError as exc:
        raise ModelError("%s: cannot read %s: %s" % (where, model_file.name, exc.strerror or exc)) from None
    digest = meta.get("model_sha256")
    if digest and hashlib.sha256(raw).hexdigest() != digest:
        raise ModelError("%s: %s does not match the sha256 in metadata.json (modified or corrupt)"
                         % (where, model_file.name))
    try:
        doc = _decode_model(model_file.name, raw)
        ensemble = TreeEnsemble.from_json(doc)
    except ValueError as exc:
        raise ModelError("%s: %s: %s" % (where, model_file.name, _one_line(exc))) from None
    if ensemble.n_features != len(FEATURE_NAMES):
        raise ModelError("%s: the model uses %d features, this egress has %d: retrain with egress train"
                         % (where, ensemble.n_features, len(FEATURE_NAMES)))
    n_out = ensemble.n_classes if ensemble.n_classes > 1 else 2
    if n_out != len(classes):
        raise ModelError("%s: the model predicts %d classes, metadata.json lists %d" % (where, n_out, len(classes)))

    thresholds = {str(k): float(v) for k, v in (meta.get("thresholds") or {}).items()}
    return Bundle(path=path, name=str(meta.get("name") or path.name), classes=list(classes),
                  thresholds=thresholds,
                  checkpoints=tuple(int(c) for c in meta.get("checkpoints", DEFAULT_CHECKPOINTS)),
                  time_checkpoints=tuple(float(c) for c in meta.get("time_checkpoints", DEFAULT_TIME_CHECKPOINTS)),
                  ensemble=ensemble, metadata=meta,
                  early_packets=int((meta.get("early") or {}).get("packets", 0)),
                  early_threshold=float((meta.get("early") or {}).get("threshold", 1.0)),
                  min_payload_packets=int(meta.get("min_payload_packets", 0)))


def save_bundle(path, booster, name: str, classes: list[str], thresholds: dict[str, float],
                metadata: dict[str, Any], card: str, checkpoints=DEFAULT_CHECKPOINTS,
                time_checkpoints=DEFAULT_TIME_CHECKPOINTS, early: dict | None = None,
                min_payload_packets: int = 0) -> Path:
    """Write model.json (XGBoost JSON), metadata.json and MODEL_CARD.md into `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    raw = bytes(booster.save_raw("json"))
    (path / "model.json").write_bytes(raw)
    meta = {
        "format": FORMAT,
        "name": name,
        "schema_version": SCHEMA_VERSION,
        "feature_names": list(FEATURE_NAMES),
        "classes": list(classes),
        "thresholds": thresholds,
        "checkpoints": list(checkpoints),
        "time_checkpoints": list(time_checkpoints),
        "early": early or {"packets": 0, "threshold": 1.0},
        "min_payload_packets": min_payload_packets,
        "model_file": "model.json",
        "model_sha256": hashlib.sha256(raw).hexdigest(),
    }
    meta.update(metadata)
    (path / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=False) + "\n")
    (path / "MODEL_CARD.md").write_text(card)
    return path


def _decode_model(filename: str, raw: bytes) -> dict:
    if filename.endswith(".ubj"):
        # UBJ needs xgboost to read; converting through it keeps serving free of pickle
        import xgboost
        booster = xgboost.Booster()
        booster.load_model(bytearray(raw))
        raw = bytes(booster.save_raw("json"))
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise ValueError("not JSON (%s)" % _one_line(exc)) from None


def _first_difference(got, want) -> str:
    for i, (a, b) in enumerate(zip(got, want)):
        if a != b:
            return "first difference at #%d: model has %r, code has %r" % (i, a, b)
    return "model has %d names, code has %d" % (len(got), len(want))


def _one_line(exc) -> str:
    return " ".join(str(exc).split())[:200]
