"""Replay pcap/pcapng files through the engine and report what it would have done live.

`egress replay [--rules FILE] [--model DIR] [--eve FILE|-] PCAP|DIR...`

Each file is an independent capture (its flows end when the file ends) unless
`--join` says the files are consecutive pieces of one capture. A broken file
gives a one-line error and the flows read so far; the exit code is then 2.

Files often overlap (the same traffic captured twice, or one capture cut from
another): a flow already reported from an earlier file (same 5-tuple, time spans
that overlap) is one flow seen again, so it gets no second flow event; the
summary counts such duplicates.
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path
from typing import IO

from egress.config import EngineConfig
from egress.engine import Engine
from egress.output.eve import EveWriter


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("pcaps", nargs="+", metavar="PCAP", help="capture files or directories (searched recursively)")
    p.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="policy YAML (repeatable); default: no policy, everything allowed")
    p.add_argument("--model", metavar="DIR", help="classifier model bundle (models/NAME)")
    p.add_argument("--sandbox-map", metavar="FILE", help="address -> sandbox/episode mapping file")
    p.add_argument("--eve", metavar="FILE", help="write EVE JSON lines here ('-' for stdout)")
    p.add_argument("--join", action="store_true", help="treat the files as one continuous capture")
    p.add_argument("--no-signatures", action="store_true", help="switch the protocol detectors off (classifier alone)")
    p.add_argument("--quiet", "-q", action="store_true", help="no summary")


def run(args: argparse.Namespace) -> int:
    from egress.drivers.pcap import CaptureError, iter_capture_paths, read_capture

    try:
        paths = iter_capture_paths(args.pcaps)
        policy = _load_policy(args)
        classifier = _load_classifier(args)
    except (OSError, ValueError) as exc:
        return _fail(exc)
    if not paths:
        return _fail("no capture files found in " + " ".join(args.pcaps))

    config = EngineConfig(signatures=not args.no_signatures)
    writer = EveWriter(args.eve, append=False)
    report = sys.stderr if args.eve == "-" else sys.stdout
    summary = Summary()
    progress = Progress(sys.stderr)
    failed = []
    engine = None
    for path in paths:
        if engine is None or not args.join:
            engine = Engine(config, policy=policy, classifier=classifier)
        try:
            for raw in read_capture(path):
                engine.process(raw)
                progress.tick(path)
                if engine.events:
                    _emit(engine, writer, summary)
        except CaptureError as exc:
            failed.append(str(exc))
            print("egress: " + str(exc), file=sys.stderr)
        except OSError as exc:
            failed.append("%s: %s" % (path, exc.strerror or exc))
            print("egress: %s: %s" % (path, exc.strerror or exc), file=sys.stderr)
        if not args.join:
            _finish(engine, writer, summary)
    if args.join and engine is not None:
        _finish(engine, writer, summary)
    progress.clear()
    writer.close()
    if not args.quiet:
        summary.print(report, len(paths), failed)
    return 2 if failed else 0


def _load_policy(args):
    if not args.rules and not args.sandbox_map:
        return None
    from egress.policy import load_policy_engine
    return load_policy_engine(args.rules, sandbox_map=args.sandbox_map)


def _load_classifier(args):
    if not args.model:
        return None
    from egress.classify import FlowClassifier
    return FlowClassifier.load(args.model)


def _emit(engine: Engine, writer: EveWriter, summary: "Summary") -> None:
    events = [e for e in engine.drain_events() if not summary.seen_before(e)]
    writer.write(events)
    summary.add(events)


def _finish(engine: Engine, writer: EveWriter, summary: "Summary") -> None:
    engine.flush()
    _emit(engine, writer, summary)
    summary.add_stats(engine.stats())


def _fail(reason) -> int:
    print("egress: %s" % reason, file=sys.stderr)
    return 2


class Summary:
    """Counts for the terminal: flows by application protocol, verdicts, top detections."""

    def __init__(self):
        self.flows = 0
        self.app_protos: Counter[str] = Counter()
        self.actions: Counter[str] = Counter()
        self.detections: Counter[str] = Counter()
        self.alerts = 0
        self.stats: Counter[str] = Counter()
        self.duplicates = 0
        self._spans: dict[tuple, list[tuple[str, str]]] = {}

    def seen_before(self, event: dict) -> bool:
        """True for a flow event of a flow an earlier file already reported (counted)."""
        if event["event_type"] != "flow":
            return False
        key = (event["proto"], event["src_ip"], event["src_port"], event["dest_ip"], event["dest_port"])
        start, end = event["flow"]["start"], event["flow"]["end"]
        spans = self._spans.setdefault(key, [])
        # ISO timestamps of one format compare correctly as text.
        if any(start <= e and s <= end for s, e in spans):
            self.duplicates += 1
            return True
        spans.append((start, end))
        return False

    def add(self, events: list[dict]) -> None:
        for event in events:
            if event["event_type"] == "alert":
                self.alerts += 1
                continue
            if event["event_type"] != "flow":
                continue
            self.flows += 1
            self.app_protos[event["app_proto"]] += 1
            verdict = event["verdict"]
            label = verdict["action"] if verdict["mode"] == "enforce" else verdict["action"] + " (audit)"
            self.actions[label] += 1
            for d in event["detections"]:
                self.detections["%s/%s" % (d["category"], d["signature"])] += 1

    def add_stats(self, stats: dict) -> None:
        self.stats.update(stats)

    def print(self, out: IO[str], files: int, failed: list[str]) -> None:
        w = out.write
        w("replayed %d file(s), %d packets, %d flows, %d alerts%s%s\n" % (
            files, self.stats["packets"], self.flows, self.alerts,
            ", %d flow(s) seen again in a later file" % self.duplicates if self.duplicates else "",
            ", %d file(s) with errors" % len(failed) if failed else ""))
        _table(w, "flows by app_proto", self.app_protos)
        _table(w, "verdicts", self.actions)
        _table(w, "top detections", self.detections, limit=10)
        anomalies = Counter({k: v for k, v in self.stats.items() if k.startswith(("decode.", "inspect.errors", "engine."))})
        _table(w, "anomalies", anomalies, limit=10)


def _table(w, title: str, counts: Counter, limit: int = 20) -> None:
    if not counts:
        return
    w("  %s:\n" % title)
    for name, n in counts.most_common(limit):
        w("    %-40s %8d\n" % (name, n))


class Progress:
    """A one-line progress indicator on a terminal; silent when stderr is not one."""

    def __init__(self, out: IO[str]):
        self.out = out
        self.enabled = out.isatty()
        self.count = 0
        self.next_at = time.monotonic() + 1.0

    def tick(self, path: Path) -> None:
        self.count += 1
        if not self.enabled or self.count & 0x3FFF:
            return
        now = time.monotonic()
        if now >= self.next_at:
            self.next_at = now + 0.5
            self.out.write("\r%s: %d packets" % (path.name, self.count))
            self.out.flush()

    def clear(self) -> None:
        if self.enabled and self.count > 0x3FFF:
            self.out.write("\r\033[K")
            self.out.flush()
