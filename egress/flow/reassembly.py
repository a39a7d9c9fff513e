"""In-order reassembly of the first bytes of one TCP direction.

Guarantees:
- `data` is the contiguous byte stream from the first sequence number seen (the
  SYN's ISN + 1 when the handshake was captured), never longer than `budget`.
- Retransmissions and overlaps never change bytes already accepted (first copy
  wins, as most stacks do; a differing overlap is counted in `overlap_conflicts`,
  a classic evasion signal).
- Out-of-order segments are held (at most `max_pending` of them, bytes bounded by
  the budget) and released as soon as the gap fills; beyond that they are dropped
  and counted, never unbounded.
- Sequence arithmetic is modulo 2**32.
- `done` becomes true when the budget is full or the stream was cut (a truncated
  capture of a segment leaves a hole that can never fill): nothing will be added.
"""
from __future__ import annotations

_MOD = 1 << 32
_HALF = 1 << 31


class Reassembler:
    __slots__ = ("base", "data", "pending", "pending_bytes", "budget", "max_pending", "done",
                 "dropped_segments", "overlap_conflicts")

    def __init__(self, budget: int = 8192, max_pending: int = 32):
        self.base: int | None = None     # sequence number of data[0]
        self.data = bytearray()
        self.pending: dict[int, bytes] | None = None   # stream offset -> segment
        self.pending_bytes = 0
        self.budget = budget
        self.max_pending = max_pending
        self.done = budget <= 0
        self.dropped_segments = 0
        self.overlap_conflicts = 0

    def set_isn(self, isn: int) -> None:
        """The SYN tells where the stream starts (ISN + 1)."""
        if self.base is None and not self.data:
            self.base = (isn + 1) % _MOD

    def add(self, seq: int, payload: bytes, truncated: bool = False) -> bool:
        """Add a segment; True when new in-order bytes became available."""
        if self.done or not payload:
            return False
        if self.base is None:
            self.base = seq
        offset = ((seq - self.base + _HALF) % _MOD) - _HALF
        if offset < 0:
            # Starts before the stream: keep only the part that is new or overlaps.
            if offset + len(payload) <= 0:
                return False
            payload = payload[-offset:]
            offset = 0
        grew = self._place(offset, payload)
        if grew and self.pending:
            self._release()
        if truncated and not self.done:
            # The capture cut this segment: the stream has a hole that never fills.
            self.done = True
        return grew

    def _place(self, offset: int, payload: bytes) -> bool:
        have = len(self.data)
        if offset > have:
            self._hold(offset, payload)
            return False
        end = offset + len(payload)
        if end <= have:
            self._check_overlap(offset, payload)
            return False
        if offset < have:
            self._check_overlap(offset, payload[:have - offset])
        room = self.budget - have
        self.data += payload[have - offset:have - offset + room]
        if len(self.data) >= self.budget:
            self.done = True
            self.pending = None
        return True

    def _check_overlap(self, offset: int, payload: bytes) -> None:
        if self.data[offset:offset + len(payload)] != payload:
            self.overlap_conflicts += 1

    def _hold(self, offset: int, payload: bytes) -> None:
        if offset >= self.budget:
            return  # beyond what we keep anyway
        if self.pending is None:
            self.pending = {}
        if len(self.pending) >= self.max_pending or self.pending_bytes + len(payload) > self.budget:
            self.dropped_segments += 1
            return
        old = self.pending.get(offset)
        if old is None or len(payload) > len(old):
            self.pending_bytes += len(payload) - (len(old) if old else 0)
            self.pending[offset] = payload

    def _release(self) -> None:
        """Move held segments that the stream has reached into `data`."""
        while self.pending and not self.done:
            have = len(self.data)
            ready = sorted(off for off in self.pending if off <= have)
            if not ready:
                return
            for off in ready:
                segment = self.pending.pop(off)
                self.pending_bytes -= len(segment)
                self._place(off, segment)
                if self.done:
                    return

    def bytes(self) -> bytes:
        return bytes(self.data)
