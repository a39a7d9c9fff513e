"""The inspect stage: feeds each flow's byte streams to the detectors and merges what they find.

Guarantees:
- Detectors see reassembled, in-order bytes (TCP) or the first datagrams (UDP),
  through a `StreamView`; they are called only when a flow has new bytes, and only
  until each one says MATCH or NO_MATCH or its byte budget is spent.
- A detector that raises is treated as NO_MATCH for that flow and counted in
  `errors` (a bug to fix, never a crash).
- Inspection of a flow ends when no detector is left, or after
  `max_inspect_packets` payload packets (a stream with a hole that never fills,
  or a detector waiting for a fact that never comes, must not keep a flow out of
  the kernel fast path); then its buffers are released, so inspection costs
  memory only while it can still change something.
- Detections are merged without duplicates (by category + signature), facts are
  merged (first value wins, so a later packet cannot overwrite what the policy
  already judged; list facts such as DNS answers grow instead, up to
  MAX_LIST_FACT items, because a resolver socket carries several answers), and
  `app_proto` is set by the first detector that names one.
"""
from __future__ import annotations

from collections import Counter

from egress.config import EngineConfig
from egress.flow.flow import Flow
from egress.flow.reassembly import Reassembler
from egress.inspect.base import NEED_MORE, NO_MATCH, Detector, InspectResult, Status, StreamView
from egress.types import FIN, PROTO_TCP, RST, SYN, TO_SERVER, Packet


MAX_LIST_FACT = 64
_NEED_MORE = Status.NEED_MORE


class _Stream(Reassembler):
    """One reassembled TCP direction, plus what the detectors' views need across rounds:
    the bytes object of the last view (reused while the direction has not grown, so that
    parses keyed by its identity stay valid) and, on the to-server stream, the view memo."""
    __slots__ = ("_bytes", "memo")

    def __init__(self, budget: int, held: int):
        super().__init__(budget, held)
        self._bytes = b""
        self.memo: dict | None = None

    def ends_at(self, seq: int) -> bool:
        """Whether the in-order stream ends exactly at sequence number `seq` (a FIN's):
        also when nothing told where it starts (no SYN, no data: a mid-stream pickup)."""
        if seq < 0:
            return False
        if self.base is None:
            return True
        return (self.base + len(self.data)) & 0xFFFFFFFF == seq

    def snapshot(self) -> bytes:
        """bytes(self.data), the same object as last time when nothing was added: the
        reassembled prefix only ever grows at its end, so equal length means equal bytes."""
        if len(self.data) != len(self._bytes):
            self._bytes = bytes(self.data)
        return self._bytes


class InspectStage:
    def __init__(self, detectors: list[Detector], config: EngineConfig):
        self.detectors = list(detectors)
        self.config = config
        self.errors: Counter[str] = Counter()

    def start(self, flow: Flow) -> None:
        wanted = [d for d in self.detectors if flow.proto in d.protocols]
        if not wanted:
            return
        flow.inspecting = wanted
        if flow.proto == PROTO_TCP:
            budget, held = self.config.reassembly_budget, self.config.max_out_of_order
            flow.streams = [_Stream(budget, held), _Stream(budget, held)]
        else:
            flow.datagrams = []
        flow.sizes = []

    def on_packet(self, flow: Flow, pkt: Packet, direction: int) -> bool:
        """Feed one packet; True when the flow learned something (detections, facts, app_proto)."""
        if not flow.inspecting:
            return False
        payload = pkt.payload
        if payload:
            if flow.payload_packets >= self.config.max_inspect_packets:
                return self.conclude(flow)
            flow.payload_packets += 1
            if len(flow.sizes) < self.config.max_sizes:
                flow.sizes.append((pkt.ts, direction, len(payload)))
        if flow.streams is not None:
            grew = self._feed_stream(flow, pkt, direction)
        else:
            grew = self._feed_datagram(flow, payload, direction)
        if not grew:
            return False
        return self._run_detectors(flow)

    def _feed_stream(self, flow: Flow, pkt: Packet, direction: int) -> bool:
        stream = flow.streams[direction]
        if pkt.flags & SYN:
            stream.set_isn(pkt.seq)
        grew = stream.add(pkt.seq, pkt.payload, pkt.truncated) if pkt.payload else False
        if pkt.flags & (FIN | RST) and not grew:
            # The direction ended: detectors waiting for more may now conclude.
            return True
        return grew

    def _feed_datagram(self, flow: Flow, payload: bytes, direction: int) -> bool:
        if not payload or len(flow.datagrams) >= self.config.max_datagrams:
            return False
        flow.datagrams.append((direction, payload))
        return True

    def conclude(self, flow: Flow) -> bool:
        """Inspection ends (packet budget spent, or the flow ended): one last call to the
        detectors still waiting, told that no more bytes will come, so that what they
        concluded from the whole view (e.g. SSH's session shape) is kept. Then release."""
        changed = False
        if flow.inspecting:
            changed = self._run_detectors(flow, final=True)
        self.finish(flow)
        return changed

    def _view(self, flow: Flow) -> StreamView:
        if flow.streams is not None:
            up, down = flow.streams
            to_server, to_client = up.snapshot(), down.snapshot()
            # A FIN ends a direction for the detectors only once the stream has reached
            # it: a FIN ahead of a gap (a fake one, far in the window) must not make them
            # conclude while the bytes before it can still come. A reset ends nothing
            # here: one the receiver did not take (not at the number it expects) would
            # make them conclude while the connection goes on, and a real one is followed
            # by silence, so the detectors get their last look when the flow ends.
            fin = flow.fin_seq
            closed_up = up.done or (fin is not None and up.ends_at(fin[0]))
            closed_down = down.done or (fin is not None and down.ends_at(fin[1]))
            datagrams = ()
        else:
            datagrams = tuple(flow.datagrams)
            to_server = b"".join(p for d, p in datagrams if d == TO_SERVER)
            to_client = b"".join(p for d, p in datagrams if d != TO_SERVER)
            closed_up = closed_down = len(datagrams) >= self.config.max_datagrams
        view = StreamView(flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
                          to_server, to_client, datagrams, closed_up, closed_down, flow.facts,
                          flow.app_proto, tuple(flow.sizes), flow.initiator in ("syn", "synack"))
        if flow.streams is not None:
            # Parses of a direction that did not grow since the last round stay valid:
            # hand them on (the memo is keyed by the identity of the bytes parsed, and a
            # direction that did not grow is the same bytes object, see _Stream).
            old = up.memo
            if old:
                view.memo = {key: entry for key, entry in old.items()
                             if entry[0] is to_server or entry[0] is to_client}
            up.memo = view.memo
        return view

    def _run_detectors(self, flow: Flow, final: bool = False) -> bool:
        view = self._view(flow)
        if final:
            view.closed_to_server = view.closed_to_client = True
        changed = False
        still: list[Detector] = []
        # A detector whose budget exceeds what reassembly keeps is done when reassembly is.
        seen = max(len(view.to_server), len(view.to_client))
        if flow.streams is not None and seen >= self.config.reassembly_budget:
            seen = 1 << 62
        # Both directions closed: every detector is done after this call (see _exhausted).
        both_closed = view.closed_to_server and view.closed_to_client
        for detector in flow.inspecting:
            try:
                result = detector.inspect(view)
            except Exception as exc:  # a detector bug must not take the flow down
                self.errors["%s: %s" % (detector.name, type(exc).__name__)] += 1
                continue
            if result is NO_MATCH:               # the common answers are shared constants
                continue
            if result is not NEED_MORE and (result.detections or result.facts or result.app_proto):
                changed |= self._merge(flow, result)
                if result.facts:
                    view.facts = flow.facts
                if result.app_proto and not view.app_proto:
                    view.app_proto = flow.app_proto
            if result.status is _NEED_MORE and not both_closed and seen < detector.max_bytes:
                still.append(detector)
        flow.inspecting = still
        if not still:
            self.finish(flow)
        return changed

    @staticmethod
    def _exhausted(view: StreamView, detector: Detector, seen: int) -> bool:
        """When a NEED_MORE detector is done anyway (inlined in _run_detectors)."""
        both_closed = view.closed_to_server and view.closed_to_client
        return both_closed or seen >= detector.max_bytes

    @staticmethod
    def _merge(flow: Flow, result: InspectResult) -> bool:
        changed = False
        if result.app_proto and not flow.app_proto:
            flow.app_proto = result.app_proto
            changed = True
        for name, value in result.facts.items():
            old = flow.facts.get(name)
            if old is None:
                flow.facts[name] = value
                changed = True
            elif isinstance(old, list) and isinstance(value, list):
                fresh = [v for v in value if v not in old][:MAX_LIST_FACT - len(old)]
                if fresh:
                    flow.facts[name] = old + fresh
                    changed = True
        if not result.detections:
            return changed
        known = {(d.category, d.signature) for d in flow.detections}
        for detection in result.detections:
            if (detection.category, detection.signature) not in known:
                flow.detections.append(detection)
                known.add((detection.category, detection.signature))
                changed = True
        return changed

    @staticmethod
    def finish(flow: Flow) -> None:
        """Release inspection memory; the flow keeps what was learned."""
        flow.inspecting = None
        flow.streams = None
        flow.datagrams = None
        flow.sizes = None
