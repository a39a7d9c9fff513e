"""Cross-flow observers: findings that need more than one flow's bytes (metadata access, scans).

An observer has `on_flow_start(flow, now) -> list[Detection]` (findings attached to
the new flow before its first verdict) and `on_flow_end(flow, now) -> None`.
"""
from __future__ import annotations

from typing import Any


def default_observers() -> list[Any]:
    return []
