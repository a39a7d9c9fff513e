"""The demo's per-step classifier column says what the classifier said, including when it
did not score a flow at all."""
from __future__ import annotations

from egress.commands.demo import _ml_text


def test_classifier_text_for_scored_unscored_and_below_threshold_flows():
    assert _ml_text({"class": "mining", "scores": {"benign": 0.1, "mining": 0.9}}) == "mining 0.90"
    assert _ml_text({"class": "benign", "scores": {"benign": 0.4, "mining": 0.6}}) == "benign 0.40 (top: mining 0.60)"
    unscored = {"model": "default", "class": "benign", "scores": {}, "evidence": "insufficient"}
    assert _ml_text(unscored) == "not scored (too little evidence)"
