"""Internal probing: one source with many failed connection attempts (category "scan").

Not a stream detector: a cross-flow tracker the engine feeds at flow start and end.
Time comes from the packets (`now`); memory is bounded (at most `max_sources`
sources, least recently active evicted; at most `threshold * 2` targets kept per
source). Never raises.

A TCP flow counts as a failed attempt when it ends without the server's SYN-ACK
(refused with RST, or unanswered until the flow timed out). For each source the
tracker keeps the distinct (destination address, destination port) targets of its
failed attempts inside a sliding `window` of seconds; when they reach `threshold`
(default 20 in 60 s) the source is "scanning" for the next `window` seconds and
every new flow it starts gets a "scan.failed_handshakes" detection with the count.
"""
from __future__ import annotations

import ipaddress
from collections import OrderedDict

from egress.types import PROTO_TCP, Detection, ip_text


class _Source:
    __slots__ = ("targets", "until")

    def __init__(self):
        self.targets: OrderedDict = OrderedDict()   # (dst, port) -> last failure time, oldest first
        self.until = float("-inf")                  # scanning flag holds until this time


class ScanTracker:
    def __init__(self, threshold: int = 20, window: float = 60.0, max_sources: int = 4096):
        self.threshold = threshold
        self.window = window
        self.max_sources = max_sources
        self._sources: OrderedDict[bytes, _Source] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def on_flow_start(self, flow, now: float) -> list[Detection]:
        """Detections for a new flow: a scan detection while its source is scanning."""
        try:
            src = self._sources.get(bytes(flow.client_ip))
            if src is None or now > src.until:
                return []
            self._expire(src, now)
            private = sum(1 for dst, _ in src.targets if _is_private(dst))
            return [Detection("scan", "scan.failed_handshakes", {
                "source": ip_text(flow.client_ip), "failed_targets": len(src.targets),
                "private_targets": private, "window": self.window})]
        except Exception:
            return []

    def on_flow_end(self, flow, now: float) -> None:
        """Record the flow if it was a failed TCP connection attempt."""
        try:
            if flow.proto != PROTO_TCP or not flow.syn or flow.synack:
                return
            key = bytes(flow.client_ip)
            src = self._sources.get(key)
            if src is None:
                src = self._sources[key] = _Source()
                while len(self._sources) > self.max_sources:
                    self._sources.popitem(last=False)
            else:
                self._sources.move_to_end(key)
            target = (bytes(flow.server_ip), flow.server_port)
            src.targets.pop(target, None)
            src.targets[target] = now
            self._expire(src, now)
            while len(src.targets) > 2 * self.threshold:
                src.targets.popitem(last=False)
            if len(src.targets) >= self.threshold:
                src.until = now + self.window
        except Exception:
            return

    def is_scanning(self, client_ip: bytes, now: float) -> bool:
        src = self._sources.get(bytes(client_ip))
        return src is not None and now <= src.until

    def _expire(self, src: _Source, now: float) -> None:
        horizon = now - self.window
        while src.targets:
            first = next(iter(src.targets.values()))
            if first >= horizon:
                break
            src.targets.popitem(last=False)


def _is_private(addr: bytes) -> bool:
    try:
        return ipaddress.ip_address(addr).is_private
    except ValueError:
        return False
