"""Benchmark: capture reading alone, reading + decode(), and tcpdump over the same files.

    python bench/bench_decode.py [--packets 1000000] [--flows 100000] [--shared DIR] [--keep DIR]
                                 [--repeat 3] [--no-tcpdump-print]

Generates a large realistic capture (egress.testing.craft.generate_bulk_capture), and
concatenates ../shared/pcaps (when present) into one pcapng repeated to a useful size,
then prints one table row per (file, measurement). Importable: measure_reader(),
measure_decode(), measure_tcpdump(), shared_concat() return plain dicts/paths so the
replay benchmark can reuse them. Single-threaded; rates are per CPU second (process time,
and the children's rusage for tcpdump) so a busy machine does not skew them; wall time is
shown too. Each measurement is the best of --repeat runs.
"""
from __future__ import annotations

import argparse
import collections
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from egress.decode import decode
from egress.drivers.pcap import CaptureError, iter_capture_paths, read_capture
from egress.testing import craft

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_PCAPS = REPO_ROOT.parent / "shared" / "pcaps"


def measure_reader(path) -> dict:
    """Raw reader alone: records/s (every record's bytes are sliced out, nothing decoded)."""
    n = nbytes = 0
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for rec in read_capture(path):
            n += 1
            nbytes += len(rec.data)
    except CaptureError:
        pass
    cpu, dt = time.process_time() - c0, time.perf_counter() - t0
    return {"what": "reader", "records": n, "bytes": nbytes, "seconds": dt, "cpu": cpu,
            "per_s": n / cpu if cpu else 0.0}


def measure_decode(path) -> dict:
    """Reader + decode(): packets/s, plus the anomaly counts seen."""
    n = 0
    anomalies: collections.Counter = collections.Counter()
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        for rec in read_capture(path):
            p = decode(rec)
            n += 1
            if p.anomalies:
                anomalies.update(p.anomalies)
    except CaptureError:
        pass
    cpu, dt = time.process_time() - c0, time.perf_counter() - t0
    return {"what": "reader+decode", "records": n, "seconds": dt, "cpu": cpu,
            "per_s": n / cpu if cpu else 0.0, "anomalies": dict(anomalies)}


def measure_tcpdump(path, mode: str = "write") -> dict | None:
    """tcpdump baseline: mode "write" = `tcpdump -r FILE -w /dev/null` (read + write back),
    "print" = `tcpdump -nr FILE > /dev/null` (read + decode + format). None without tcpdump."""
    exe = shutil.which("tcpdump")
    if exe is None:
        return None
    cmd = [exe, "-r", str(path), "-w", "/dev/null"] if mode == "write" else [exe, "-nr", str(path)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        print("tcpdump failed on %s: %s" % (path, done.stderr.decode(errors="replace").strip()
                                            .splitlines()[-1:]), file=sys.stderr)
        return None
    return {"what": "tcpdump -r -w /dev/null" if mode == "write" else "tcpdump -nr >/dev/null",
            "seconds": dt, "cpu": cpu}


def shared_concat(out_path, source=SHARED_PCAPS, min_records: int = 200_000) -> Path | None:
    """The Ethernet records of every capture in `source` in one pcapng (nanosecond
    resolution), repeated until it holds at least `min_records`. Only Ethernet, because
    libpcap (hence the tcpdump baseline) refuses a pcapng whose interfaces differ in link
    type. None when `source` has no Ethernet captures."""
    records = []
    for path in iter_capture_paths([source]) if Path(source).is_dir() else []:
        try:
            for rec in read_capture(path):
                if rec.linktype == 1:
                    records.append(rec)
        except CaptureError:
            pass
    if not records:
        return None
    with open(out_path, "wb") as f:
        f.write(craft.pcapng_shb() + craft.pcapng_idb(1, tsresol=9))
        written = 0
        while written < min_records:
            f.write(b"".join(craft.pcapng_epb(r.ts, r.data, 0, 9, r.wire_len) for r in records))
            written += len(records)
    return Path(out_path)


def best_of(repeat: int, fn, *args) -> dict | None:
    """The fastest of `repeat` runs: other processes on the machine only ever add time."""
    runs = [fn(*args) for _ in range(max(1, repeat))]
    if any(r is None for r in runs):
        return None
    return min(runs, key=lambda r: r["cpu"])


def bench_file(path, label: str, repeat: int = 3, tcpdump_print: bool = True) -> list[dict]:
    rows = [best_of(repeat, measure_reader, path), best_of(repeat, measure_decode, path),
            best_of(repeat, measure_tcpdump, path, "write")]
    if tcpdump_print:                       # slow (tens of seconds on 1M packets): run once
        rows.append(measure_tcpdump(path, "print"))
    for row in list(rows):
        if row is not None:
            row["file"] = label
    rows = [r for r in rows if r is not None]
    n = rows[0]["records"]
    for row in rows:
        row.setdefault("records", n)
        row["per_s"] = n / row["cpu"] if row["cpu"] else 0.0
        row["us_per_pkt"] = 1e6 * row["cpu"] / n if n else 0.0
    return rows


def print_table(rows: list[dict], out=sys.stdout) -> None:
    """records/s and us/record are per CPU second (one core), robust to a busy machine."""
    print("| file | measurement | records | wall s | cpu s | records/s (cpu) | us/record (cpu) |",
          file=out)
    print("|---|---|---:|---:|---:|---:|---:|", file=out)
    for r in rows:
        print("| %s | %s | %d | %.3f | %.3f | %s | %.2f |" % (
            r["file"], r["what"], r["records"], r["seconds"], r["cpu"], format(int(r["per_s"]), ","),
            r["us_per_pkt"]), file=out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=1_000_000, help="size of the generated capture")
    ap.add_argument("--flows", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--shared", default=str(SHARED_PCAPS), help="real captures to concatenate")
    ap.add_argument("--keep", help="directory to write the captures to (kept); default: a temp dir")
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement; the fastest counts")
    ap.add_argument("--no-tcpdump-print", action="store_true", help="skip the slow `tcpdump -nr` baseline")
    args = ap.parse_args(argv)

    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="egress-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    try:
        bulk = workdir / "bulk.pcap"
        per_flow = max(1, args.packets // args.flows)
        t0 = time.perf_counter()
        n = craft.generate_bulk_capture(bulk, args.flows, per_flow, seed=args.seed)
        gen = time.perf_counter() - t0
        print("generated %s: %d packets, %d flows, %.1f MB in %.1f s" % (
            bulk, n, args.flows, bulk.stat().st_size / 1e6, gen), file=sys.stderr)
        print_ = not args.no_tcpdump_print
        rows += bench_file(bulk, "generated %dk pkts" % (n // 1000), args.repeat, print_)
        shared = shared_concat(workdir / "shared.pcapng", args.shared)
        if shared is not None:
            rows += bench_file(shared, "shared/pcaps concatenated", args.repeat, print_)
        else:
            print("no captures in %s: skipped the real-capture rows" % args.shared, file=sys.stderr)
        print("python %s, %d cpu(s), best of %d runs" % (sys.version.split()[0], os.cpu_count() or 0,
                                                          args.repeat))
        print_table(rows)
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
