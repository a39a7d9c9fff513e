"""Flow classification: model bundles (schema-checked) and fast checkpoint scoring.

    clf = FlowClassifier.load("models/default")   # ModelError (one line) when it does not fit
    Engine(config, classifier=clf)
"""
from egress.classify.bundle import Bundle, ModelError, load_bundle, save_bundle
from egress.classify.classifier import FeatureRecorder, FlowClassifier

__all__ = ["Bundle", "FeatureRecorder", "FlowClassifier", "ModelError", "load_bundle", "save_bundle"]
