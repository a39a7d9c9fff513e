"""Frozen configuration, built once (by the CLI or a test) and passed down by constructors.

Nothing reads configuration from globals or the environment below this point.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Flow timeouts in seconds of packet time (Suricata-like defaults)."""
    tcp_new: float = 30.0          # handshake not completed
    tcp_established: float = 600.0
    tcp_closed: float = 10.0       # after FIN both ways or RST: linger for retransmissions
    udp: float = 120.0
    other: float = 30.0
    absolute: float = 86400.0      # a flow older than this is ended and a new one starts


@dataclass(frozen=True, slots=True)
class EngineConfig:
    reassembly_budget: int = 8192      # bytes of each TCP direction kept for the detectors
    max_out_of_order: int = 32         # out-of-order segments held per direction, then dropped (counted)
    max_datagrams: int = 16            # UDP datagrams per flow handed to the detectors
    max_sizes: int = 64                # first payload packets recorded as (ts, dir, len)
    max_inspect_packets: int = 96      # payload packets a flow's detectors may wait for, then inspection ends
    max_flows: int = 200_000           # flow table cap; the least recently seen flow is evicted, counted
    timeouts: Timeouts = field(default_factory=Timeouts)
    sweep_interval: float = 0.1        # seconds of packet time between timeout sweeps
    sweep_budget: int = 1_000          # flows looked at per sweep: a full table is swept in rounds
    signatures: bool = True            # run protocol detectors (off: classifier alone)
    exception_action: str = "drop"     # what an internal error does to the packet's flow: drop | allow
