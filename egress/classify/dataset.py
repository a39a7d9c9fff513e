"""Labelled feature rows from captures, through the same engine and accumulator that serve.

Guarantees:
- Features come from replaying each capture through `egress.engine.Engine` with a
  `FeatureRecorder` as its classifier: the rows are exactly the vectors the live
  classifier scores (at every checkpoint and at flow end), by construction.
- A labels file (labels.tsv, tab-separated, header `file flow label scenario group`)
  labels either one flow of a capture ("TCP 10.0.0.1:40000 10.0.0.2:3333", client
  first) or every flow of it ("*"); flows with no label are skipped (unknown).
- `shared_labels(dir)` turns ../shared/pcaps' MANIFEST.tsv + FLOWS.tsv into the same
  form: mining flows -> mining, every flow of a benign/other file -> benign (crypto
  peer-to-peer and node RPC are hard negatives), SSH sessions -> benign; unlabelled
  flows of mining or ssh files are skipped.
- Rows carry the group (capture source / scenario variant) used to split train and
  test, so one flow (or one scenario run) never lands on both sides.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from egress.classify.classifier import FeatureRecorder
from egress.features.schema import FEATURE_NAMES

LABEL_FIELDS = ("file", "flow", "label", "scenario", "group")


@dataclass
class Row:
    file: str           # capture file (relative to the corpus root when possible)
    flow: str           # "TCP 10.0.0.1:40000 10.0.0.2:3333"
    stage: str          # checkpoint: "n8", "n32", ..., "end"
    label: str
    scenario: str
    group: str
    source: str         # where the capture came from: "corpus" or a shared source name
    vector: list


@dataclass(frozen=True)
class Label:
    file: str
    flow: str
    label: str
    scenario: str
    group: str


def flow_text(flow) -> str:
    if flow.client_port or flow.server_port:
        return "%s %s:%d %s:%d" % (flow.proto_name, flow.src_ip, flow.client_port, flow.dest_ip, flow.server_port)
    return "%s %s %s" % (flow.proto_name, flow.src_ip, flow.dest_ip)


def read_labels(path) -> list[Label]:
    path = Path(path)
    out = []
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t")
        missing = set(LABEL_FIELDS) - set(reader.fieldnames or ())
        if missing:
            raise ValueError("%s: missing columns %s" % (path, ", ".join(sorted(missing))))
        for i, rec in enumerate(reader, start=2):
            if not rec["file"] or not rec["label"]:
                raise ValueError("%s:%d: empty file or label" % (path, i))
            out.append(Label(rec["file"], rec["flow"] or "*", rec["label"], rec["scenario"] or "",
                             rec["group"] or rec["scenario"] or rec["file"]))
    return out


def write_labels(path, labels: list[Label]) -> None:
    with Path(path).open("w", newline="") as fh:
        w = csv.writer(fh, delimiter="\t", lineterminator="\n")
        w.writerow(LABEL_FIELDS)
        for lab in labels:
            w.writerow([lab.file, lab.flow, lab.label, lab.scenario, lab.group])


def shared_labels(shared: Path) -> list[Label]:
    """Labels for ../shared/pcaps, grouped by capture source (ndpi, peafowl, sv, joy)."""
    shared = Path(shared)
    manifest = {}
    with (shared / "MANIFEST.tsv").open(newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            manifest[rec["file"]] = rec["label"]
    out = []
    for name, file_label in sorted(manifest.items()):
        source = name.split("__", 1)[0]
        if file_label in ("benign", "other"):
            out.append(Label(name, "*", "benign", "shared:%s:%s" % (file_label, name), "shared:" + source))
    with (shared / "FLOWS.tsv").open(newline="") as fh:
        for rec in csv.DictReader(fh, delimiter="\t"):
            name, derived = rec["file"], rec["flow_label_derived"]
            source = name.split("__", 1)[0]
            if manifest.get(name) not in ("mining", "ssh"):
                continue
            if derived == "mining":
                label = "mining"
            elif derived == "ssh":
                label = "benign"
            else:
                continue
            out.append(Label(name, "TCP %s %s" % (_endpoint(rec["client"]), _endpoint(rec["server"])), label,
                             "shared:%s:%s" % (manifest[name], name), "shared:" + source))
    return out


def _endpoint(text: str) -> str:
    """FLOWS.tsv writes IPv6 endpoints as addr:port without brackets; normalise to ours."""
    host, _, port = text.rpartition(":")
    return "%s:%s" % (host, port)


def extract(path, signatures: bool = True, checkpoints=(8, 32, 128, 512),
            time_checkpoints=(10.0, 60.0, 300.0), time_scale: float = 1.0,
            rtt: float = 0.0) -> list[tuple[str, str, list]]:
    """(flow text, stage, vector) for every checkpoint of every flow of one capture.

    `time_scale` stretches the capture's clock (every gap times the factor): the corpus
    runs its scenarios faster than life (a job every second instead of every 30), and
    stretching every class alike keeps absolute timing from telling the classes apart.
    `rtt` (seconds) then puts the far end that much further away (see `with_rtt`)."""
    from egress.config import EngineConfig
    from egress.drivers.pcap import CaptureError, read_capture
    from egress.engine import Engine
    from egress.types import RawPacket

    recorder = FeatureRecorder(checkpoints, time_checkpoints)
    engine = Engine(EngineConfig(signatures=signatures), classifier=recorder)
    t0 = None
    packets = []
    try:
        for raw in read_capture(path):
            if time_scale != 1.0:
                if t0 is None:
                    t0 = raw.ts
                raw = RawPacket(t0 + (raw.ts - t0) * time_scale, raw.data, raw.linktype, raw.wire_len)
            packets.append(raw)
    except CaptureError:
        pass          # a cut-off capture still gives the flows read so far
    if rtt > 0.0:
        packets = with_rtt(packets, rtt)
    for raw in packets:
        engine.process(raw)
        if engine.events:
            engine.drain_events()
    engine.flush()
    engine.drain_events()
    return [(flow_text(flow), stage, vec) for flow, stage, vec in recorder.rows]


def with_rtt(packets: list, rtt: float) -> list:
    """The same packets as seen from a sandbox whose peers are `rtt` seconds (round trip)
    away: every time the server answers something of the client's (a SYN, a request, a
    share), the answer and everything after it in that flow come `rtt` later. The corpus
    runs on one host (round trip ~0), so without this, messages a real path merges into
    one burst (two jobs 0.3 s apart behind a 300 ms round trip) always stay apart; the
    server's unasked pushes keep their spacing, as on a real path."""
    from egress.decode import decode
    from egress.types import RawPacket

    state: dict = {}       # flow key -> [client (addr, port), offset, client spoke since the server last did]
    out = []
    for i, raw in enumerate(packets):
        pkt = decode(raw)
        if pkt.proto not in (6, 17):
            out.append((raw.ts, i, raw))
            continue
        a, b = (pkt.src, pkt.sport), (pkt.dst, pkt.dport)
        key = (pkt.proto,) + ((a, b) if a <= b else (b, a))
        st = state.get(key)
        if st is None:
            st = state[key] = [a, 0.0, False]
        syn = pkt.proto == 6 and pkt.flags & 0x02
        speaks = bool(pkt.payload) or syn
        if a == st[0]:
            if speaks:
                st[2] = True
        elif speaks and st[2]:
            st[1] += rtt
            st[2] = False
        out.append((raw.ts + st[1], i, raw))
    out.sort(key=lambda x: (x[0], x[1]))
    return [RawPacket(ts, raw.data, raw.linktype, raw.wire_len) for ts, _, raw in out]


def labelled_rows(root: Path, labels: list[Label], source: str, signatures: bool = True,
                  log=None, time_scales=(1.0,), workers: int = 1) -> list[Row]:
    """Rows for every labelled flow of the captures named in `labels` (paths relative to root),
    once per time scale (a stretched copy's file is named "FILE@xSCALE"; a scale may be a
    (stretch, round trip) pair: "FILE@xSCALE+rttR"). `workers` > 1
    extracts captures in parallel processes; the rows come back in the same order."""
    by_file: dict[str, list[Label]] = {}
    for lab in labels:
        by_file.setdefault(lab.file, []).append(lab)
    jobs = []
    for name in sorted(by_file):
        path = Path(root) / name
        if not path.is_file():
            if log:
                log("skip %s: missing" % path)
            continue
        for scale in time_scales:
            jobs.append((path, signatures, scale))     # a float, or (clock stretch, round trip)
    if workers > 1 and len(jobs) > 1:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_extract_job, jobs, chunksize=4))
    else:
        results = [_extract_job(job) for job in jobs]

    rows: list[Row] = []
    for (path, _, scale), extracted in zip(jobs, results):
        name = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        exact = {lab.flow: lab for lab in by_file[name] if lab.flow != "*"}
        whole = next((lab for lab in by_file[name] if lab.flow == "*"), None)
        src = source if source != "shared" else "shared:" + name.split("__", 1)[0]
        stretch, rtt = scale if isinstance(scale, tuple) else (scale, 0.0)
        tag = name if stretch == 1.0 and not rtt else "%s@x%g" % (name, stretch)
        if rtt:
            tag += "+rtt%g" % rtt
        for flow, stage, vec in extracted:
            lab = exact.get(flow) or whole
            if lab is None:
                continue
            rows.append(Row(tag, flow, stage, lab.label, lab.scenario, lab.group, src, vec))
    assert all(len(r.vector) == len(FEATURE_NAMES) for r in rows)
    return rows


def _extract_job(job) -> list:
    path, signatures, scale = job
    stretch, rtt = scale if isinstance(scale, tuple) else (scale, 0.0)
    return extract(path, signatures, time_scale=stretch, rtt=rtt)
