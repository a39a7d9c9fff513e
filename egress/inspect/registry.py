"""The list of protocol detectors the engine runs, built by a function (no import-time registration).

Each detector module adds itself here by name, in the order detectors should be
consulted (cheap and common first).
"""
from __future__ import annotations

from egress.inspect.base import Detector


def default_detectors() -> list[Detector]:
    """Fresh detector instances for one engine."""
    detectors: list[Detector] = []
    # Detector modules append here, e.g.:
    #   from egress.inspect.tls import TlsDetector; detectors.append(TlsDetector())
    return detectors
