"""Flow features: the versioned schema and the per-flow accumulator, one definition for
serving (the engine's classifier) and training (`egress train`).

    acc = Accumulator(proto)               # at flow start
    acc.add(ts, direction, payload_len(pkt), pkt.flags, pkt.window)   # per packet
    vector(flow)                           # list of floats in FEATURE_NAMES order
"""
from __future__ import annotations

from egress.features.accumulator import Accumulator, signature_values
from egress.features.schema import FEATURE_NAMES, N_FEATURES, SCHEMA_VERSION, SIGNATURE_FEATURES

__all__ = ["Accumulator", "FEATURE_NAMES", "N_FEATURES", "SCHEMA_VERSION", "SIGNATURE_FEATURES",
           "payload_len", "vector", "signature_values"]


def payload_len(pkt) -> int:
    """Transport payload length on the wire, also when the capture or queue copy cut it."""
    n = len(pkt.payload)
    if pkt.truncated and pkt.ip_len:
        ip_hdr = 20 if pkt.version == 4 else 40
        l4_hdr = 20 + len(pkt.tcp_options) if pkt.proto == 6 else 8
        n = max(n, pkt.ip_len - ip_hdr - l4_hdr)
    return n


def vector(flow) -> list[float]:
    """The feature vector of a flow whose `features` slot holds an Accumulator.

    Detector-derived features come from the flow's app_proto and detections (empty when
    signatures are off)."""
    acc = flow.features
    if acc is None:
        acc = Accumulator(flow.proto)
    return acc.values(flow.app_proto, [d.category for d in flow.detections])
