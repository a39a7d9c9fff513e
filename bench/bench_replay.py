"""Replay speed and memory: decode + flow tracking, full engine, against baselines in the same run.

    python bench/bench_replay.py [--flows 20000] [--pkts-per-flow 25] [--repeat 3] [--shared ../shared/pcaps]

Measures packets per CPU second (best of --repeat runs, one process, one core; CPU
time rather than wall time, because these machines are shared and noisy) for:
  tcpdump -r FILE -w /dev/null          baseline: libpcap reading the file
  tcpdump -nr FILE > /dev/null          baseline: libpcap reading and printing each packet
  reader                                egress.drivers.pcap alone
  reader + decode
  reader + decode + flow tracking       the issue's goal: >= 300,000 packets/s
  engine, no detectors                  + inspect stage, policy hook, decisions
  engine, all detectors                 + every protocol detector
and the memory per tracked flow (tracemalloc, after creating --mem-flows flows),
with and without inspection buffers. Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from egress.config import EngineConfig
from egress.decode import decode
from egress.drivers.pcap import iter_capture_paths, read_capture
from egress.engine import Engine
from egress.flow.table import FlowTable
from egress.testing import craft


def best_of(repeat: int, fn) -> float:
    """Best CPU seconds (this process) of `repeat` runs: robust on a shared, noisy machine."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def tcpdump_seconds(path: Path, args: list[str], repeat: int) -> float | None:
    """Best CPU seconds of a tcpdump child (user + system, from the children's rusage)."""
    tcpdump = shutil.which("tcpdump")
    if tcpdump is None:
        return None
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        with open(os.devnull, "wb") as devnull:
            subprocess.run([tcpdump, *args[:1], str(path), *args[1:]], stdout=devnull, stderr=devnull, check=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best = min(best, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
    return best


def measure(paths: list[Path], repeat: int) -> tuple[int, list[tuple[str, float | None]]]:
    count = sum(1 for p in paths for _ in read_capture(p))

    def reader():
        for p in paths:
            for _ in read_capture(p):
                pass

    def reader_decode():
        for p in paths:
            for raw in read_capture(p):
                decode(raw)

    def reader_decode_track():
        table = FlowTable(EngineConfig(), lambda flow: None)
        track = table.track
        for p in paths:
            for raw in read_capture(p):
                pkt = decode(raw)
                if pkt.proto >= 0:
                    track(pkt)

    def engine(detectors):
        def run():
            e = Engine(EngineConfig(), detectors=detectors, observers=None if detectors is None else [])
            for p in paths:
                for raw in read_capture(p):
                    e.process(raw)
            e.flush()
        return run

    rows: list[tuple[str, float | None]] = []
    if len(paths) == 1:
        rows.append(("tcpdump -r FILE -w /dev/null", tcpdump_seconds(paths[0], ["-r", "-w", os.devnull], repeat)))
        rows.append(("tcpdump -nr FILE > /dev/null", tcpdump_seconds(paths[0], ["-nr"], repeat)))
    rows.append(("reader", best_of(repeat, reader)))
    rows.append(("reader + decode", best_of(repeat, reader_decode)))
    rows.append(("reader + decode + flow tracking", best_of(repeat, reader_decode_track)))
    rows.append(("engine, no detectors", best_of(repeat, engine([]))))
    rows.append(("engine, all detectors", best_of(repeat, engine(None))))
    return count, rows


def memory_per_flow(n_flows: int, inspect: bool) -> float:
    """Bytes of Python heap per tracked flow: one SYN per flow, nothing ever expires."""
    packets = [craft.tcp("10.200.%d.%d" % (i >> 8 & 255, i & 255), "10.201.0.1", 10000 + i % 50000, 443, "S")
               for i in range(n_flows)]
    from egress.types import RawPacket
    config = EngineConfig(max_flows=n_flows + 1)
    engine = Engine(config, detectors=None if inspect else [], observers=[])
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i, data in enumerate(packets):
        engine.process(RawPacket(1000.0 + i * 1e-5, data, 101))
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(engine.table) == n_flows
    return (after - before) / n_flows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=20000)
    ap.add_argument("--pkts-per-flow", type=int, default=25)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--mem-flows", type=int, default=100000)
    ap.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "pcaps")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        bulk = Path(tmp) / "bulk.pcap"
        n = craft.generate_bulk_capture(bulk, args.flows, args.pkts_per_flow, seed=1)
        print("## Replay (`python bench/bench_replay.py --flows %d --pkts-per-flow %d --repeat %d`)\n"
              % (args.flows, args.pkts_per_flow, args.repeat))
        print("Generated capture: %d packets, %d flows (%.1f MB), Python %s, %s\n" % (
            n, args.flows, bulk.stat().st_size / 1e6, sys.version.split()[0], os.uname().machine))
        sets = [("generated bulk capture", [bulk])]
        if args.shared.is_dir():
            sets.append(("../shared/pcaps (all files)", iter_capture_paths([str(args.shared)])))
        for title, paths in sets:
            count, rows = measure(paths, args.repeat)
            print("### %s: %d packets\n" % (title, count))
            print("| stage | CPU seconds | packets/s | us/packet |")
            print("|---|---:|---:|---:|")
            for name, seconds in rows:
                if seconds is None:
                    print("| %s | n/a (not installed) | | |" % name)
                else:
                    print("| %s | %.3f | %s | %.2f |" % (name, seconds, format(int(count / seconds), ","), seconds / count * 1e6))
            print()
    print("### Memory per tracked flow (tracemalloc, %d flows)\n" % args.mem_flows)
    print("| configuration | bytes/flow |")
    print("|---|---:|")
    print("| decode + flow tracking (no detectors) | %.0f |" % memory_per_flow(args.mem_flows, inspect=False))
    print("| with inspection buffers (all detectors, SYN only) | %.0f |" % memory_per_flow(args.mem_flows, inspect=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
