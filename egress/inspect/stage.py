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
- On a TCP flow these budgets (bytes kept, payload packets) are the client's: the
  server cannot end the inspection of the client's side by talking. A server side
  that spends its own budget first (8 KiB of banner, 96 small packets: a pool that
  wants the miner's login unseen) is closed for the detectors, its later packets
  are ignored (but FIN and RST), and the flow is `oneway`: the live gateway queues
  only the client's side (egress.drivers.iptables, ONEWAY). Datagram flows count
  both directions together.
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
    __slots__ = ("_bytes", "memo", "sizes", "shown")

    def __init__(self, budget: int, held: int):
        super().__init__(budget, held)
        self._bytes = b""
        self.memo: dict | None = None
        # On the to-server stream only: tuple(flow.sizes) of the last view, and what the
        # last view showed of the client's side: (len(to_server), closed_to_server).
        self.sizes: tuple = ()
        self.shown: tuple[int, bool] | None = None

    def grown(self) -> bool:
        """Whether `snapshot()` will give a new bytes object (bytes were added since the last)."""
        return len(self.data) != len(self._bytes)

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
        self._by_proto: dict[int, tuple[Detector, ...]] = {}
        self._by_proto_of: tuple[list, int] = (self.detectors, len(self.detectors))
        self.oneway_flows = 0       # TCP flows whose server side was spent first (see _spend_server)

    def _wanted(self, proto: int) -> tuple[Detector, ...]:
        """The detectors of `self.detectors` that apply to IP protocol `proto`, in order.

        Remembered per protocol, so that a new flow does not filter the whole list again;
        forgotten when `self.detectors` is replaced by another list or changes length
        (a caller that swaps one detector for another in place must replace the list)."""
        detectors = self.detectors
        if self._by_proto_of[0] is not detectors or self._by_proto_of[1] != len(detectors):
            self._by_proto.clear()
            self._by_proto_of = (detectors, len(detectors))
        wanted = self._by_proto.get(proto)
        if wanted is None:
            wanted = self._by_proto[proto] = tuple(d for d in detectors if proto in d.protocols)
        return wanted

    def start(self, flow: Flow) -> None:
        wanted = self._wanted(flow.proto)
        if not wanted:
            return
        flow.inspecting = list(wanted)
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
        streams = flow.streams
        if flow.oneway and direction != TO_SERVER and not pkt.flags & (FIN | RST):
            # The server's side is spent (see _spend_server): nothing of it reaches the
            # detectors any more, and live these packets pass in the kernel unseen.
            return False
        if payload:
            if direction == TO_SERVER or streams is None:
                if flow.payload_packets >= self.config.max_inspect_packets:
                    return self.conclude(flow)
                flow.payload_packets += 1
            else:
                flow.payload_packets_toclient += 1
            if len(flow.sizes) < self.config.max_sizes:
                flow.sizes.append((pkt.ts, direction, len(payload)))
        if streams is not None:
            # _feed_stream, inlined: this runs for every packet of an inspected TCP flow
            stream = streams[direction]
            flags = pkt.flags
            if flags & SYN:
                stream.set_isn(pkt.seq)
            grew = stream.add(pkt.seq, payload, pkt.truncated) if payload else False
            if direction != TO_SERVER and not flow.oneway and (
                    stream.done or flow.payload_packets_toclient >= self.config.max_inspect_packets):
                self._spend_server(flow, stream)
            if not grew and not flags & (FIN | RST):
                return False
            # (a FIN or RST that added nothing: the direction ended, and detectors waiting
            # for more may now conclude)
        elif not self._feed_datagram(flow, payload, direction):
            return False
        if direction != TO_SERVER and streams is not None and self._server_side_news_only(flow):
            return False
        return self._run_detectors(flow)

    def _spend_server(self, flow: Flow, stream: _Stream) -> None:
        """The server's side of a TCP flow reached its budget (bytes kept, or payload
        packets): the detectors have all of it they will ever get. Inspection goes on
        for the client's side alone, to its own budget: the server (a pool, the
        attacker's other half) cannot end the inspection of the client by talking, with
        8 KiB of banner or 96 small packets. From here the view shows the server's
        direction as closed, and the flow's Decisions say `oneway`: the live gateway
        passes the server's packets in the kernel (all but FIN, SYN and RST) and queues
        only the client's."""
        flow.oneway = True
        stream.done = True
        self.oneway_flows += 1

    def _server_side_news_only(self, flow: Flow) -> bool:
        """True when a round now would give exactly what the last one gave, so it can be
        left out: every detector still waiting is `client_side_only` (base.py: its answer
        follows from to_server and closed_to_server alone, and waiting is the NEED_MORE
        constant), the client's side is what the last round showed, and the server's
        news (bytes, a FIN) neither closes both directions nor spends a detector's
        budget. Each detector would answer NEED_MORE again: nothing to merge, none done."""
        inspecting = flow.inspecting
        for detector in inspecting:
            if not getattr(detector, "client_side_only", False):
                return False
        up, down = flow.streams
        fin = flow.fin_seq
        closed_up = up.done or (fin is not None and up.ends_at(fin[0]))
        if up.shown != (len(up.data), closed_up):
            return False
        if closed_up and (down.done or (fin is not None and down.ends_at(fin[1]))):
            return False
        seen = len(up.data)                           # as _run_detectors counts it
        if seen >= self.config.reassembly_budget:
            return False
        for detector in inspecting:
            if seen >= detector.max_bytes:
                return False
        return True

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
        if flow.streams is None:
            return self._datagram_view(flow)
        up, down = flow.streams
        # Nothing added in either direction: the last view's bytes objects come again,
        # so all of its memo stays valid (see below). (grown() and snapshot(), inline.)
        same_bytes = True
        if len(up.data) != len(up._bytes):
            up._bytes = bytes(up.data)
            same_bytes = False
        if len(down.data) != len(down._bytes):
            down._bytes = bytes(down.data)
            same_bytes = False
        to_server, to_client = up._bytes, down._bytes
        # A FIN ends a direction for the detectors only once the stream has reached
        # it: a FIN ahead of a gap (a fake one, far in the window) must not make them
        # conclude while the bytes before it can still come. A reset ends nothing
        # here: one the receiver did not take (not at the number it expects) would
        # make them conclude while the connection goes on, and a real one is followed
        # by silence, so the detectors get their last look when the flow ends.
        fin = flow.fin_seq
        closed_up = up.done or (fin is not None and up.ends_at(fin[0]))
        closed_down = down.done or (fin is not None and down.ends_at(fin[1]))
        # flow.sizes only grows at its end (and only while inspecting): equal length,
        # equal contents, so the last view's tuple serves again.
        sizes = up.sizes
        if len(sizes) != len(flow.sizes):
            sizes = up.sizes = tuple(flow.sizes)
        view = StreamView(flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
                          to_server, to_client, (), closed_up, closed_down, flow.facts,
                          flow.app_proto, sizes, flow.initiator in ("syn", "synack"))
        # Parses of a direction that did not grow since the last round stay valid: hand
        # them on (the memo is keyed by the identity of the bytes parsed, and a direction
        # that did not grow is the same bytes object, see _Stream). When neither grew the
        # whole memo is handed on as it is: its other entries (parses of slices of these
        # bytes) hold their bytes alive and are checked by identity, so they stay right.
        old = up.memo
        if old:
            if not same_bytes:
                old = {key: entry for key, entry in old.items()
                       if entry[0] is to_server or entry[0] is to_client}
            view.memo = old
        up.memo = view.memo
        return view

    def _datagram_view(self, flow: Flow) -> StreamView:
        """The view of a datagram flow (UDP...): the first datagrams, no memo carried."""
        datagrams = tuple(flow.datagrams)
        to_server = b"".join(p for d, p in datagrams if d == TO_SERVER)
        to_client = b"".join(p for d, p in datagrams if d != TO_SERVER)
        closed = len(datagrams) >= self.config.max_datagrams
        return StreamView(flow.proto, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
                          to_server, to_client, datagrams, closed, closed, flow.facts,
                          flow.app_proto, tuple(flow.sizes), flow.initiator in ("syn", "synack"))

    def _run_detectors(self, flow: Flow, final: bool = False) -> bool:
        view = self._view(flow)
        # The client's side as the last round showed it: a `client_side_only` detector
        # (base.py) still waiting then answers NEED_MORE again, so it is not called.
        client_same = False
        if final:
            view.closed_to_server = view.closed_to_client = True
        elif flow.streams is not None:
            up = flow.streams[TO_SERVER]
            shown = (len(view.to_server), view.closed_to_server)
            client_same = up.shown == shown
            up.shown = shown
        changed = False
        still: list[Detector] = []
        # A detector's byte budget is spent on the client's side of a TCP flow (the
        # server's ends in _spend_server) and on the larger side of a datagram flow. A
        # detector whose budget exceeds what reassembly keeps is done when reassembly is.
        if flow.streams is not None:
            seen = len(view.to_server)
            if seen >= self.config.reassembly_budget:
                seen = 1 << 62
        else:
            seen = max(len(view.to_server), len(view.to_client))
        # Both directions closed: every detector is done after this call (see _exhausted).
        both_closed = view.closed_to_server and view.closed_to_client
        for detector in flow.inspecting:
            if client_same and getattr(detector, "client_side_only", False):
                result = NEED_MORE
            else:
                try:
                    result = detector.inspect(view)
                except Exception as exc:  # a detector bug must not take the flow down
                    self.errors["%s: %s" % (detector.name, type(exc).__name__)] += 1
                    continue
            if result is NO_MATCH:               # the common answers are shared constants
                continue
            if result is NEED_MORE:
                if not both_closed and seen < detector.max_bytes:
                    still.append(detector)
                continue
            if result.detections or result.facts or result.app_proto:
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
        elif flow.oneway and flow.streams[1].data:
            self._release_server_bytes(flow, still)
        return changed

    @staticmethod
    def _release_server_bytes(flow: Flow, still: list[Detector]) -> None:
        """A oneway flow whose waiting detectors all read the client's side alone
        (`client_side_only`: a TLS download's last one is the mining backstop) keeps
        none of the server's bytes: ~16 KiB less per open download, for as long as its
        client's side is inspected. The view then shows the server's side empty (and
        closed, as before); the memo goes, as it may hold parses of those bytes."""
        for detector in still:
            if not getattr(detector, "client_side_only", False):
                return
        down = flow.streams[1]
        down.data = bytearray()
        down._bytes = b""
        down.pending = None
        flow.streams[0].memo = None

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
