"""Cross-flow observers: findings that need more than one flow's bytes (metadata access, scans).

An observer has `on_flow_start(flow, now) -> list[Detection]` (findings attached to
the new flow before its first verdict, so the very first packet can be blocked),
`on_facts(flow, now) -> list[Detection]` (called when detectors taught the flow
something new) and `on_flow_end(flow, now) -> None`. All are bounded and never raise.
"""
from __future__ import annotations

from typing import Any

from egress.inspect.metadata import metadata_detection
from egress.inspect.scan import ScanTracker
from egress.types import Detection


class MetadataObserver:
    """Any contact with a cloud metadata address is known from the first packet."""

    def on_flow_start(self, flow, now: float) -> list[Detection]:
        detection = metadata_detection(flow)
        return [detection] if detection is not None else []

    def on_facts(self, flow, now: float) -> list[Detection]:
        """A metadata name (an HTTP Host, a DNS question) shows only once facts arrive."""
        for detection in flow.detections:       # "metadata" in flow.categories(), without the set
            if detection.category == "metadata":
                return []
        return self.on_flow_start(flow, now)

    def on_flow_end(self, flow, now: float) -> None:
        return None


class ScanObserver(ScanTracker):
    """The scan tracker needs nothing from later facts."""

    def on_facts(self, flow, now: float) -> list[Detection]:
        return []


def default_observers() -> list[Any]:
    return [MetadataObserver(), ScanObserver()]
