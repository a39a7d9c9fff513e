"""The flow table: packets -> bidirectional flows, with bounded memory and packet-time expiry.

Guarantees:
- One Flow per 5-tuple at a time (both directions map to it); a TCP SYN that
  opens a new connection on a known 5-tuple (port reuse) ends the old flow and starts a
  new one: after a close, and also when the close was never seen (the live gateway hands
  decided flows to the kernel, so their FINs never reach the engine). A new connection is
  told from a retransmitted SYN by its initial sequence number.
- `track()` updates counters and TCP state and returns (flow, direction, is_new);
  it never raises on any decoded Packet.
- Expiry is driven by packet time only (`expire(now)`), with the timeouts in
  `egress.config.Timeouts`; ended flows are handed to `on_end` exactly once. One sweep
  looks at no more than `EngineConfig.sweep_budget` flows, going round the table, so
  that a full table never stalls the packets queued behind a sweep; a flow's own next
  packet ends it at once whenever its timeout has passed (see track()).
- At most `max_flows` flows: creating one more evicts the least recently seen
  flow (ended with reason "forced"), counted in `evicted`.
- A flow that has gone idle in the engine's view but whose connection lives on where
  the engine does not see it (the live gateway's kernel fast path) is kept when the
  `hold` hook says so (see expire()): its verdict can still be revoked. Held flows
  still end at the absolute timeout, when closed, and by eviction.
"""
from __future__ import annotations

import hashlib
from hashlib import blake2b as _blake2b
from typing import Callable

from egress.config import EngineConfig
from egress.flow.flow import (END_CLOSED, END_EVICTED, END_REUSED, END_SHUTDOWN, END_TIMEOUT, STATE_CLOSED,
                              STATE_ESTABLISHED, STATE_NEW, Flow)
from egress.flow.orientation import sender_is_client
from egress.types import ACK, FIN, PROTO_TCP, PROTO_UDP, RST, SYN, TO_CLIENT, TO_SERVER, Packet

_PORTED = (PROTO_TCP, PROTO_UDP, 132)
_STATEFUL = SYN | FIN | RST     # flags that can change the TCP state of an established flow
_SEQ_MASK = 0xFFFFFFFF


def flow_id_for(key: tuple, start: float) -> int:
    """A stable flow id: the same traffic replayed twice gets the same ids.

    52 bits so that JSON consumers that parse numbers as doubles keep it exact.
    The hashed text is repr((key, round(start, 6))) (flow_id_reference), built faster.
    """
    digest = _blake2b(("(%r, %s)" % (key, _rounded_text(start))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 52) - 1)


def flow_id_reference(key: tuple, start: float) -> int:
    """The definition `flow_id_for` must equal (tests/flow/test_flow_id.py)."""
    digest = hashlib.blake2b(repr((key, round(start, 6))).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & ((1 << 52) - 1)


def _rounded_text(start: float) -> str:
    """repr(round(start, 6)) without the round trip through a new float.

    For a float in [1, 2**32) (every packet time from 1970 to 2106) both "%.6f" and
    round() give the correctly rounded 6-decimal number, and repr() of that float is
    those digits without trailing zeros: a double there is finer than 1e-6, so no
    other 6-decimal number, and so no shorter string, maps to it."""
    if type(start) is float and 1.0 <= start < 4294967296.0:
        text = ("%.6f" % start).rstrip("0")
        return text + "0" if text[-1] == "." else text
    return repr(round(start, 6))


class FlowTable:
    def __init__(self, config: EngineConfig, on_end: Callable[[Flow], None]):
        self.config = config
        self.timeouts = config.timeouts
        self.on_end = on_end
        # Insertion order is kept as "least recently seen first": track() moves a
        # flow to the end at most once per second of packet time (cheap LRU).
        self.flows: dict[tuple, Flow] = {}
        t = config.timeouts
        self._min_idle = min(t.tcp_new, t.tcp_established, t.tcp_closed, t.udp, t.other, t.absolute)
        self.created = 0
        self.evicted = 0
        self.expired = 0
        self._to_sweep: list[tuple] = []    # keys left in the current round, oldest last
        # hold(flows, now) -> the flows of `flows` (idle past their timeout) not to end
        # now, because their connection may live on outside the engine's view. Whoever
        # set the hook moves `last` of a kept flow to the time it confirmed the
        # connection alive, or ends it with end_held(); until then the flow stays idle
        # and is offered again on the next round. None: idle flows end.
        self.hold: Callable[[list[Flow], float], list[Flow]] | None = None
        self.held = 0                       # times a flow was kept by `hold`

    def __len__(self) -> int:
        return len(self.flows)

    # -- per packet ----------------------------------------------------------------

    def track(self, pkt: Packet) -> tuple[Flow, int, bool]:
        proto = pkt.proto
        src, dst = pkt.src, pkt.dst
        if proto in _PORTED:
            a, b = (src, pkt.sport), (dst, pkt.dport)
        else:
            a, b = (src, 0), (dst, 0)
        key = (proto, a, b) if a <= b else (proto, b, a)
        flows = self.flows
        flow = flows.get(key)
        is_new = False
        ts = pkt.ts
        flags = pkt.flags
        # Cheap pre-check first: most packets are neither late, nor a SYN, nor on a closed flow.
        if flow is not None and (ts - flow.last > self._min_idle or flow.state == STATE_CLOSED
                                 or flags & SYN):
            ended = self._starts_over(flow, pkt, ts)
            if ended:
                self._end(flow, ended)
                flow = None
        if flow is None:
            flow = self._create(key, pkt, a, b)
            is_new = True
        elif ts - flow.last > 1.0:
            # Refresh the LRU position; bounded cost: at most once a second per flow.
            del flows[key]
            flows[key] = flow
        # A flow from an address:port to itself has identical directions: all toserver.
        direction = TO_SERVER if (src == flow.client_ip and a[1] == flow.client_port) else TO_CLIENT
        if src == dst and a[1] == b[1]:
            direction = TO_SERVER
        if ts > flow.last:
            flow.last = ts
        size = pkt.ip_len
        plen = len(pkt.payload)
        if direction == TO_SERVER:
            flow.pkts_toserver += 1
            flow.bytes_toserver += size
            flow.payload_toserver += plen
        else:
            flow.pkts_toclient += 1
            flow.bytes_toclient += size
            flow.payload_toclient += plen
        if plen and flow.first_payload_dir < 0:
            flow.first_payload_dir = direction
        if proto == PROTO_TCP and (flags & _STATEFUL or flow.state is STATE_NEW):
            self._tcp_state(flow, flags, direction, pkt.seq, plen)
        return flow, direction, is_new

    def lookup(self, pkt: Packet) -> Flow | None:
        """The flow this packet belongs to, if any, changing nothing (for pure ACKs,
        which the engine does not track: see egress.engine)."""
        proto = pkt.proto
        if proto in _PORTED:
            a, b = (pkt.src, pkt.sport), (pkt.dst, pkt.dport)
        else:
            a, b = (pkt.src, 0), (pkt.dst, 0)
        return self.flows.get((proto, a, b) if a <= b else (proto, b, a))

    def _starts_over(self, flow: Flow, pkt: Packet, ts: float) -> str:
        """Why this packet cannot belong to `flow` ("" when it does): the flow outlived
        its timeout between two sweeps, or the packet opens a new TCP connection."""
        if ts - flow.last > self._idle_timeout(flow) or ts - flow.start > self.timeouts.absolute:
            return END_CLOSED if flow.state == STATE_CLOSED else END_TIMEOUT
        if flow.proto != PROTO_TCP or pkt.flags & (SYN | ACK | RST) != SYN:
            return ""
        if flow.state == STATE_CLOSED:
            return END_CLOSED
        if pkt.src == flow.client_ip and pkt.sport == flow.client_port:
            # The client again: a retransmission carries the first SYN's sequence number.
            if flow.isn >= 0:
                return END_REUSED if pkt.seq != flow.isn else ""
            return END_REUSED if flow.state != STATE_NEW else ""
        # The server side opening: a simultaneous open while new, port reuse after that.
        return END_REUSED if flow.state != STATE_NEW else ""

    @staticmethod
    def data_after_fin(flow: Flow, pkt: Packet, direction: int) -> bool:
        """True when this payload lies beyond its sender's FIN. A real TCP stack never
        sends that, so the FIN was one the receiver did not take (an old timestamp, a TTL
        that runs out past the gateway): a way to make an inspector stop looking while
        the connection goes on. (Retransmitted data from before the FIN is fine.)"""
        fin = flow.fin_seq[direction]
        return fin >= 0 and 0 < ((pkt.seq + len(pkt.payload) - fin) & _SEQ_MASK) < 0x80000000

    def _create(self, key: tuple, pkt: Packet, a: tuple, b: tuple) -> Flow:
        if len(self.flows) >= self.config.max_flows:
            oldest_key = next(iter(self.flows))
            self.evicted += 1
            self._end(self.flows[oldest_key], END_EVICTED)
        sender_client, how = sender_is_client(pkt.proto, pkt.flags, a[1], b[1])
        client, server = (a, b) if sender_client else (b, a)
        flow = Flow(flow_id_for(key, pkt.ts), key, pkt.proto, pkt.version, client[0], client[1],
                    server[0], server[1], pkt.ts, how)
        self.flows[key] = flow
        self.created += 1
        return flow

    @staticmethod
    def _tcp_state(flow: Flow, flags: int, direction: int, seq: int, plen: int) -> None:
        if flags & RST:
            flow.rst = True
            flow.state = STATE_CLOSED
            return
        if flags & SYN:
            if flags & ACK:
                flow.synack = True
                if flow.syn and flow.state == STATE_NEW:
                    # The server answered: established. Not the client's last ACK of the
                    # handshake, which is a pure ACK and not tracked (egress.engine), so a
                    # connection that stays silent after its handshake still gets the
                    # established timeout.
                    flow.state = STATE_ESTABLISHED
            else:
                flow.syn = True
                if direction == TO_SERVER and flow.isn < 0:
                    flow.isn = seq
        elif flow.state == STATE_NEW and flags & ACK and (flow.synack or not flow.syn):
            # Handshake completed, or a mid-stream pickup that carries ACKs.
            flow.state = STATE_ESTABLISHED
        if flags & FIN:
            if flow.fin_seq is None:
                flow.fin_seq = [-1, -1]
            if flow.fin_seq[direction] < 0:
                flow.fin_seq[direction] = (seq + plen) & _SEQ_MASK    # the FIN's own number
            if direction == TO_SERVER:
                flow.fin_toserver = True
            else:
                flow.fin_toclient = True
            if flow.fin_toserver and flow.fin_toclient:
                flow.state = STATE_CLOSED

    # -- expiry --------------------------------------------------------------------

    def _idle_timeout(self, flow: Flow) -> float:
        t = self.timeouts
        if flow.proto == PROTO_TCP:
            if flow.state == STATE_CLOSED:
                return t.tcp_closed
            return t.tcp_established if flow.state == STATE_ESTABLISHED else t.tcp_new
        return t.udp if flow.proto == PROTO_UDP else t.other

    def expire(self, now: float) -> int:
        """End flows idle past their timeout (or older than the absolute limit), looking
        at the next `sweep_budget` flows of the current round (a round starts with the
        flows the table holds when the previous one ends). Measured: looking at 200,000
        flows takes ~33 ms, a stall no queued packet should wait behind."""
        pending = self._to_sweep
        if not pending:
            pending.extend(reversed(self.flows))
        budget = self.config.sweep_budget
        batch = pending[-budget:]
        del pending[-budget:]
        batch.reverse()                     # least recently seen first, as in the table
        absolute = self.timeouts.absolute
        flows = self.flows
        # A flow idle for no longer than the shortest timeout cannot be idle past its own:
        # the cheap test first, _idle_timeout only for the others.
        min_idle = self._min_idle
        ended = [f for f in map(flows.get, batch) if f is not None
                 and ((now - f.last > min_idle and now - f.last > self._idle_timeout(f))
                      or now - f.start > absolute)]
        if ended and self.hold is not None:
            idle = [f for f in ended if now - f.start <= absolute and f.state != STATE_CLOSED]
            kept = self.hold(idle, now) if idle else ()
            if kept:
                kept_ids = {id(f) for f in kept}
                ended = [f for f in ended if id(f) not in kept_ids]
                self.held += len(kept_ids)
        for flow in ended:
            self._end(flow, END_CLOSED if flow.state == STATE_CLOSED else END_TIMEOUT)
        self.expired += len(ended)
        return len(ended)

    def end_held(self, flow: Flow, closed: bool = False) -> bool:
        """End a flow that `hold` kept, now that its connection is gone (closed: it
        was seen closing). False when the flow is not in the table any more."""
        if self.flows.get(flow.key) is not flow:
            return False
        self._end(flow, END_CLOSED if closed else END_TIMEOUT)
        self.expired += 1
        return True

    def flush(self) -> None:
        """End all flows (shutdown or end of replay)."""
        self._to_sweep.clear()
        for flow in list(self.flows.values()):
            self._end(flow, END_SHUTDOWN)

    def _end(self, flow: Flow, reason: str) -> None:
        if self.flows.get(flow.key) is flow:
            del self.flows[flow.key]
        flow.end_reason = reason
        self.on_end(flow)
