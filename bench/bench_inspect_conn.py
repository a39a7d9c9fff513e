"""Detector cost per new connection: the engine with all detectors, none, and each one alone.

    python bench/bench_inspect_conn.py [--flows 800] [--rounds 3] [--payload byte,http] [--json] [--breakdown]

Builds short TCP connections as bench_live_path.py does (handshake, a request, its
echo, close: 9 packets), feeds every packet to a fresh `Engine` without policy and
model, and reports microseconds per connection (minimum of `--rounds`) for: all default
detectors, none, and each detector alone on top of none. The difference "all - none"
is what inspection costs a new connection. `--breakdown` times each detector's calls
inside the all-detectors run instead.

To compare with an older commit in the same run, copy its tree and this file there:

    git archive <commit> | tar -x -C /tmp/before && cp bench/bench_inspect_conn.py /tmp/before/bench/
    python /tmp/before/bench/bench_inspect_conn.py --json > before.json

(the script imports the `egress` package of the tree it lives in). No root, no network.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from egress.config import EngineConfig  # noqa: E402
from egress.engine import Engine  # noqa: E402
from egress.inspect.registry import default_detectors  # noqa: E402
from egress.testing.craft import TcpSession  # noqa: E402
from egress.types import RawPacket  # noqa: E402

HTTP = b"GET /index.html HTTP/1.1\r\nHost: www.egress.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
PAYLOADS = {"byte": b"x", "http": HTTP}


def connections(n: int, payload: bytes) -> list[list[RawPacket]]:
    """The same connections as bench_live_path.connections(), as engine input."""
    t0 = time.time() - 10
    out = []
    for i in range(n):
        s = TcpSession(("10.207.1.2", 10000 + i), ("10.207.2.2", 20001), t0=t0 + i * 0.0002, step=0.00002)
        s.handshake(); s.send(True, payload, ack=False); s.send(False, payload, ack=False); s.close()
        out.append([RawPacket(ts, d, 101, len(d), None) for ts, d in s.packets])
    return out


def per_connection(detectors, conns) -> float:
    engine = Engine(EngineConfig(), detectors=detectors)
    process = engine.process
    gc.collect()
    t = time.perf_counter()
    for packets in conns:
        for raw in packets:
            process(raw)
    return (time.perf_counter() - t) / len(conns) * 1e6


class Timed:
    """A detector whose inspect() calls are timed (for the breakdown of the "all" run)."""

    def __init__(self, detector, spent: dict[str, float]):
        self.detector, self.spent = detector, spent
        self.name, self.protocols, self.max_bytes = detector.name, detector.protocols, detector.max_bytes
        spent.setdefault(self.name, 0.0)

    def inspect(self, view):
        t = time.perf_counter()
        try:
            return self.detector.inspect(view)
        finally:
            self.spent[self.name] += time.perf_counter() - t


def breakdown(payload: str, flows: int, rounds: int) -> dict[str, float]:
    """us per connection spent inside each detector's inspect(), all detectors running
    (so the shared parses land on whichever detector asks first); minimum of `rounds`."""
    conns = connections(flows, PAYLOADS[payload])
    best: dict[str, float] = {}
    for _ in range(rounds):
        spent: dict[str, float] = {}
        per_connection([Timed(d, spent) for d in default_detectors()], conns)
        for name, seconds in spent.items():
            us = seconds / flows * 1e6
            best[name] = min(best.get(name, us), us)
    return best


def measure(payload: str, flows: int, rounds: int) -> dict[str, float]:
    conns = connections(flows, PAYLOADS[payload])
    names = [d.name for d in default_detectors()]
    cases = {"all": lambda: default_detectors(), "none": lambda: []}
    for name in names:
        cases[name] = lambda name=name: [d for d in default_detectors() if d.name == name]
    times: dict[str, list[float]] = {name: [] for name in cases}
    per_connection(cases["all"](), conns)          # warm-up: imports, lists, caches
    for _ in range(rounds):
        for name, make in cases.items():
            times[name].append(per_connection(make(), conns))
    return {name: min(values) for name, values in times.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=800)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--payload", default="byte,http")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    ap.add_argument("--breakdown", action="store_true",
                    help="instead: us per connection inside each detector, all detectors running")
    args = ap.parse_args()
    if args.breakdown:
        results = {p: breakdown(p, args.flows, args.rounds) for p in args.payload.split(",")}
    else:
        results = {p: measure(p, args.flows, args.rounds) for p in args.payload.split(",")}
    if args.json:
        print(json.dumps(results))
        return 0
    if args.breakdown:
        names = list(next(iter(results.values())))
        print("us per connection inside each detector, all detectors running (%d connections, minimum of %d "
              "rounds)" % (args.flows, args.rounds))
        print("| request | sum | " + " | ".join(names) + " |")
        print("|---|" + "---:|" * (len(names) + 1))
        for payload, row in results.items():
            print("| %s | %.0f | %s |" % (payload, sum(row.values()), " | ".join("%.1f" % row[n] for n in names)))
        return 0
    names = list(next(iter(results.values())))
    print("us per connection (%d connections, minimum of %d rounds; detector columns: alone on top of none)"
          % (args.flows, args.rounds))
    print("| request | all - none | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * (len(names) + 1))
    for payload, row in results.items():
        cells = ["%.0f" % (row["all"] - row["none"])] + ["%.0f" % row[n] for n in names]
        print("| %s | %s |" % (payload, " | ".join(cells)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
