"""When the live daemon lets Python's cyclic garbage collector walk its whole heap.

Guarantees:
- No automatic full (generation 2) collection while the daemon serves: CPython's would
  walk every object the flow table holds, ~200 ms with 200,000 flows (measured in
  bench/bench_sweep.py), during which no queued packet gets a verdict. Nor an automatic
  generation-1 collection: it walks every object that outlived one young collection,
  that is the recent flows' state, up to ~2 ms at a time and ~5 us per short connection
  (measured on bench_live's connections: 48 collections, 46.5 ms, for 9,000
  connections). Only the youngest generation stays automatic: it is cheap (<= 0.15 ms)
  and frees the short-lived cycles (an exception's traceback, say); what outlives it is
  left to the chosen full collections below.
- Full collections happen at chosen moments instead: after the queues were idle for
  `idle` seconds (at most every `min_interval`), after a reload, and in any case every
  `max_interval` (a bounded pause, but a rare one under constant load).
- What start-up built (modules, the model, the rules) is frozen out of the collector's
  sight (gc.freeze), so those collections only walk what serving created.
- Counted: `gc.full` collections and `gc.cyclic` objects they freed. The engine's data
  path builds no reference cycles (tests/test_gc_schedule.py replays real captures and
  finds no cyclic garbage), so everything it drops is freed by reference counting and
  `gc.cyclic` should stay near 0: a growing count is a leak to look at.
- `stop()` gives the interpreter its automatic collections back.
"""
from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Callable

_NEVER = 1 << 30       # a generation-2 threshold that is never reached


class FullCollections:
    def __init__(self, idle: float = 1.0, min_interval: float = 60.0, max_interval: float = 600.0,
                 clock: Callable[[], float] = time.monotonic):
        self.idle = idle
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.clock = clock
        self.counters: Counter[str] = Counter()
        self._saved: tuple | None = None
        self._last = self._busy = 0.0

    def start(self) -> None:
        if self._saved is None:
            self._saved = gc.get_threshold()
            young = self._saved[0]
            gc.collect()
            gc.freeze()
            gc.set_threshold(young, _NEVER, _NEVER)
        self._last = self._busy = self.clock()

    def after_poll(self, handled: int) -> bool:
        """Called after each poll of the queues with the packets it handled; True when it
        ran a full collection."""
        now = self.clock()
        if handled:
            self._busy = now
        since = now - self._last
        if since >= self.max_interval or (since >= self.min_interval and now - self._busy >= self.idle):
            self.collect()
            return True
        return False

    def collect(self) -> None:
        self.counters["full"] += 1
        self.counters["cyclic"] += gc.collect()
        self._last = self.clock()

    def stop(self) -> None:
        if self._saved is not None:
            gc.set_threshold(*self._saved)
            gc.unfreeze()
            self._saved = None
