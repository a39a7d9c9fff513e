"""How long one timeout sweep holds the engine (and so every queued packet behind it).

    python bench/bench_sweep.py [--flows 200000] [--sweeps 300]

Fills a flow table with `--flows` TCP flows (a SYN each, 0.1 ms apart), then times
`FlowTable.expire()`:

- idle: a sweep while no flow is due (the table is full of live flows);
- mass expiry: sweeps 0.1 s apart from the moment every flow's timeout has passed, each
  followed by draining the flow events (the work a flow's end costs);

with the bounded sweep (EngineConfig.sweep_budget flows per call, the default) and, as
the baseline in the same run, a sweep that looks at the whole table at once (the budget
set to the table's size, which is what every sweep did before the budget existed); both
with Python's automatic garbage collection, and the bounded sweep once more under the
live daemon's schedule (egress.gc_schedule: no automatic full collection), whose pauses
are then the sweep's own. Reports the maximum, p99 and median milliseconds per sweep.
CPU-bound, no root needed.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egress.config import EngineConfig  # noqa: E402
from egress.engine import Engine  # noqa: E402
from egress.gc_schedule import FullCollections  # noqa: E402
from egress.testing import craft  # noqa: E402
from egress.types import RawPacket  # noqa: E402

T0 = 1_700_000_000.0


def filled(flows: int, budget: int) -> Engine:
    engine = Engine(dataclasses.replace(EngineConfig(), sweep_budget=budget, max_flows=flows + 1,
                                        sweep_interval=1e9), detectors=[], observers=[])
    for i in range(flows):
        syn = craft.tcp("10.%d.%d.%d" % (1 + i // 62500, i // 250 % 250, i % 250 + 1), "10.255.0.1",
                        1024 + i % 60000, 443, "S", seq=1)
        engine.process(RawPacket(T0 + i * 0.0001, syn, 101))
    return engine


def timed_sweeps(engine: Engine, start: float, count: int) -> list[float]:
    out = []
    for k in range(count):
        t = time.perf_counter()
        engine.table.expire(start + k * 0.1)
        engine.drain_events()
        out.append((time.perf_counter() - t) * 1e3)
        if not engine.table.flows:
            break
    return out


def summary(ms: list[float]) -> str:
    ms = sorted(ms)
    return "%.1f / %.1f / %.1f" % (ms[-1], ms[min(len(ms) - 1, int(len(ms) * 0.99))], ms[len(ms) // 2])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=200_000)
    ap.add_argument("--sweeps", type=int, default=300)
    args = ap.parse_args()
    budget = EngineConfig().sweep_budget
    idle_at = T0 + args.flows * 0.0001 + 1          # every flow seen within the last 30 s
    due_at = T0 + args.flows * 0.0001 + 31          # tcp_new (30 s) passed for all of them
    print("%d flows; milliseconds per sweep: max / p99 / median\n" % args.flows)
    print("| sweep | garbage collection | idle table | mass expiry |")
    print("|---|---|---:|---:|")
    runs = (("whole table at once (baseline)", args.flows, False),
            ("bounded: %d flows per sweep" % budget, budget, False),
            ("bounded: %d flows per sweep" % budget, budget, True))
    for name, size, scheduled in runs:
        gc.collect()
        engine = filled(args.flows, size)
        schedule = FullCollections()
        if scheduled:
            schedule.start()
        try:
            idle = timed_sweeps(engine, idle_at, min(args.sweeps, 20))
            mass = timed_sweeps(engine, due_at, args.sweeps)
        finally:
            schedule.stop()
        print("| %s | %s | %s | %s |" % (name, "daemon's schedule" if scheduled else "automatic",
                                          summary(idle), summary(mass)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
