"""The mining detectors on the real third-party captures in ../shared/pcaps, through the engine.

Every TCP flow FLOWS.tsv labels `mining` must carry a mining detection; no flow of a
file labelled benign, other (crypto P2P and node JSON-RPC: the hard negatives) or ssh
may carry one. Skipped, with the reason, when ../shared/pcaps is absent.
"""
from __future__ import annotations

import csv
from collections import defaultdict

import pytest

from egress.drivers.pcap import read_capture
from egress.engine import Engine

pytestmark = pytest.mark.shared


def mining_flows(path) -> dict[tuple, list[str]]:
    """(client ip, port, server ip, port) -> mining signatures, for every flow of a capture."""
    engine = Engine()
    for raw in read_capture(path):
        engine.process(raw)
    engine.flush()
    out = {}
    for event in engine.drain_events():
        if event["event_type"] != "flow":
            continue
        key = (event["src_ip"], event["src_port"], event["dest_ip"], event["dest_port"])
        out[key] = [d["signature"] for d in event.get("detections", []) if d["category"] == "mining"]
    return out


@pytest.fixture(scope="module")
def manifest(shared_pcaps):
    labels, rows = {}, defaultdict(list)
    with open(shared_pcaps / "MANIFEST.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            labels[row["file"]] = row["label"]
    with open(shared_pcaps / "FLOWS.tsv") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            rows[row["file"]].append(row)
    return labels, rows


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def test_every_labelled_mining_flow_is_detected(shared_pcaps, manifest):
    labels, rows = manifest
    files = sorted({r["file"] for rs in rows.values() for r in rs if r["flow_label_derived"] == "mining"})
    assert files, "FLOWS.tsv has no mining flow"
    missed, table = [], []
    for name in files:
        flows = mining_flows(shared_pcaps / name)
        for row in rows[name]:
            if row["flow_label_derived"] != "mining":
                continue
            client, server = endpoint(row["client"]), endpoint(row["server"])
            sigs = flows.get(client + server) or flows.get(server + client)
            table.append((name, row["client"], row["server"], sigs))
            if not sigs:
                missed.append("%s %s -> %s" % (name, row["client"], row["server"]))
    assert not missed, "mining flows not detected: %s" % missed
    assert len(table) >= 9


def test_no_flow_of_a_non_mining_file_is_called_mining(shared_pcaps, manifest):
    labels, _ = manifest
    wrong = []
    checked = 0
    for name, label in sorted(labels.items()):
        if label == "mining" or not (shared_pcaps / name).exists():
            continue
        for key, sigs in mining_flows(shared_pcaps / name).items():
            checked += 1
            if sigs:
                wrong.append("%s %s: %s" % (name, key, sigs))
    assert checked > 50
    assert not wrong, "called mining: %s" % wrong


def test_mining_flows_are_found_from_the_middle_of_the_session(shared_pcaps, manifest):
    """The capture starts late: the SYN, subscribe/login and the first answers are cut away."""
    from egress.decode import decode
    _, rows = manifest
    missed = []
    for name in ("ndpi__mining.pcapng", "peafowl__stratum.pcap", "peafowl__monero.pcap", "peafowl__ethereum.pcap"):
        seen: dict = {}
        engine = Engine()
        for raw in read_capture(shared_pcaps / name):
            pkt = decode(raw)
            if pkt.proto == 6:
                key = tuple(sorted([(pkt.src, pkt.sport), (pkt.dst, pkt.dport)]))
                seen[key] = seen.get(key, 0) + 1
                if seen[key] <= 12:
                    continue
            engine.process(raw)
        engine.flush()
        found = {}
        for event in engine.drain_events():
            if event["event_type"] == "flow":
                sigs = [d["signature"] for d in event.get("detections", []) if d["category"] == "mining"]
                found[(event["src_port"], event["dest_port"])] = sigs
        for row in rows[name]:
            if row["flow_label_derived"] != "mining" or int(row["pkts"]) < 40:
                continue
            cport, sport = endpoint(row["client"])[1], endpoint(row["server"])[1]
            if not (found.get((cport, sport)) or found.get((sport, cport))):
                missed.append("%s %s -> %s" % (name, row["client"], row["server"]))
    assert not missed, "not found mid-session: %s" % missed
