"""Replay every real third-party capture in ../shared/pcaps and find every labelled TCP flow.

FLOWS.tsv names client and server per TCP flow. Where the SYN was captured
(direction_basis syn_seen) we must agree exactly. Where it was not (no_syn),
FLOWS.tsv takes the first packet's sender as the client; egress deliberately
uses its port heuristic instead (egress.flow.orientation), so there we require
the flow to be found and its server to be the side with the service port.

egress does not track the pure ACKs of a flow it knows (egress.engine.is_pure_ack:
nothing to inspect, and the live gateway does not queue them): a flow's counts are its
other packets (plus the pure ACK that started it, for a capture that began mid-stream).
Checked against the capture itself.
"""
from __future__ import annotations

import csv
import ipaddress
from collections import Counter

from egress.decode import decode
from egress.drivers.pcap import read_capture
from egress.engine import Engine, is_pure_ack
from egress.flow.orientation import EPHEMERAL_START


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


def replay_file(path) -> list[dict]:
    engine = Engine()
    for raw in read_capture(path):
        engine.process(raw)
    engine.flush()
    return [e for e in engine.drain_events() if e["event_type"] == "flow"]


def tcp_packets(path) -> Counter:
    """(frozenset of the two endpoints, "tracked" | "pure") -> TCP packets in the capture."""
    out = Counter()
    for raw in read_capture(path):
        pkt = decode(raw)
        if pkt.proto == 6:
            ends = frozenset(((str(ipaddress.ip_address(pkt.src)), pkt.sport),
                              (str(ipaddress.ip_address(pkt.dst)), pkt.dport)))
            out[ends, "pure" if is_pure_ack(pkt) else "tracked"] += 1
    return out


def ends_of(row: dict) -> frozenset:
    return frozenset((endpoint(row["client"]), endpoint(row["server"])))


def test_every_capture_replays_and_every_labelled_tcp_flow_is_found(shared_pcaps, shared_flows):
    files = sorted(p for p in shared_pcaps.iterdir() if p.suffix in (".pcap", ".pcapng"))
    assert files, "no captures in ../shared/pcaps"
    problems = []
    for path in files:
        flows = replay_file(path)
        assert flows, "%s: no flow at all" % path.name
        index = {(e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"]): e for e in flows if e["proto"] == "TCP"}
        for row in shared_flows.get(path.name, []):
            client, server = endpoint(row["client"]), endpoint(row["server"])
            if row["direction_basis"] == "syn_seen":
                if client + server not in index:
                    problems.append("%s: %s -> %s not found as client -> server" % (path.name, row["client"], row["server"]))
                continue
            event = index.get(client + server) or index.get(server + client)
            if event is None:
                problems.append("%s: %s <-> %s not found" % (path.name, row["client"], row["server"]))
                continue
            ports = (event["src_port"], event["dest_port"])
            service_side_is_server = (event["dest_port"] < 1024 <= event["src_port"]
                                      or event["src_port"] >= EPHEMERAL_START > event["dest_port"]
                                      or event["flow"]["initiator"] == "first")
            if not service_side_is_server:
                problems.append("%s: %s judged client -> server by %s" % (path.name, ports, event["flow"]["initiator"]))
    assert not problems, "\n".join(problems)


def test_a_flow_seen_only_as_pure_acks_is_still_a_flow_of_one_counted_packet(shared_pcaps, shared_flows):
    """A capture that began after a connection's last bytes: its first pure ACK starts the
    flow (the gateway queues such ACKs: no SYN went through it), the others are not tracked."""
    found = 0
    for name, rows in shared_flows.items():
        counts = tcp_packets(shared_pcaps / name)
        events = {frozenset(((e["src_ip"], e["src_port"]), (e["dest_ip"], e["dest_port"]))): e
                  for e in replay_file(shared_pcaps / name) if e["proto"] == "TCP"}
        for row in rows:
            if counts[ends_of(row), "tracked"] == 0:
                event = events[ends_of(row)]
                assert event["flow"]["pkts_toserver"] + event["flow"]["pkts_toclient"] == 1
                assert counts[ends_of(row), "pure"] == int(row["pkts"]) > 1
                found += 1
    assert found >= 10


def test_flow_counts_match_the_labelled_packet_counts_where_the_syn_was_seen(shared_pcaps, shared_flows):
    """Per-direction counting: the flow's packets and its pure ACKs add up to what
    FLOWS.tsv counted."""
    mismatches, compared = [], 0
    for name, rows in shared_flows.items():
        flows = replay_file(shared_pcaps / name)
        counts = tcp_packets(shared_pcaps / name)
        index = {(e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"]): e for e in flows if e["proto"] == "TCP"}
        for row in rows:
            event = index.get(endpoint(row["client"]) + endpoint(row["server"]))
            if row["direction_basis"] != "syn_seen" or event is None:
                continue
            compared += 1
            pkts = event["flow"]["pkts_toserver"] + event["flow"]["pkts_toclient"]
            pure = counts[ends_of(row), "pure"]
            if pkts + pure != int(row["pkts"]) or pkts != counts[ends_of(row), "tracked"]:
                mismatches.append("%s %s: %d packets + %d pure ACKs, FLOWS.tsv says %s"
                                  % (name, row["client"], pkts, pure, row["pkts"]))
    assert compared >= 20 and not mismatches, "\n".join(mismatches)


def detected(shared_pcaps, shared_flows):
    """(file, client, server) -> (label, categories seen by the engine) for every FLOWS.tsv row."""
    out = {}
    for name, rows in shared_flows.items():
        flows = replay_file(shared_pcaps / name)
        index = {}
        for e in flows:
            if e["proto"] == "TCP":
                cats = {d["category"] for d in e["detections"]}
                index[(e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"])] = cats
                index[(e["dest_ip"], e["dest_port"], e["src_ip"], e["src_port"])] = cats
        for row in rows:
            key = endpoint(row["client"]) + endpoint(row["server"])
            out[(name, row["client"], row["server"])] = (row["file_label"], row["flow_label_derived"], index.get(key))
    return out


def test_signatures_find_every_mining_and_ssh_flow_and_nothing_else(shared_pcaps, shared_flows):
    """Issue 3's done criterion on real captures: mining flows are mining, ssh flows are ssh,
    and no flow of a benign, other or ssh file is called mining or reverse_tunnel."""
    problems = []
    for (name, client, server), (file_label, flow_label, cats) in detected(shared_pcaps, shared_flows).items():
        where = "%s %s -> %s" % (name, client, server)
        if cats is None:
            problems.append(where + ": flow not found")
            continue
        if flow_label == "mining" and "mining" not in cats:
            problems.append(where + ": mining flow not detected (%s)" % sorted(cats))
        if flow_label in ("ssh", "ssh_partial") and "ssh" not in cats:
            problems.append(where + ": ssh flow not detected as ssh (%s)" % sorted(cats))
        if file_label != "mining" and "mining" in cats:
            problems.append(where + ": called mining in a %s file" % file_label)
        if "reverse_tunnel" in cats or "reverse_shell" in cats:
            problems.append(where + ": called %s" % sorted(cats & {"reverse_tunnel", "reverse_shell"}))
    assert not problems, "\n".join(problems)


def test_no_flow_at_all_in_non_mining_files_is_called_mining(shared_pcaps):
    """Beyond the labelled TCP flows: every flow (UDP, QUIC, ICMP...) of the other files."""
    with open(shared_pcaps / "MANIFEST.tsv") as f:
        labels = {r["file"]: r["label"] for r in csv.DictReader(f, delimiter="\t")}
    offenders = []
    for name, label in labels.items():
        if label == "mining":
            continue
        for e in replay_file(shared_pcaps / name):
            cats = {d["category"] for d in e["detections"]}
            if cats & {"mining", "reverse_tunnel", "reverse_shell"}:
                offenders.append("%s %s:%s -> %s:%s %s" % (name, e["src_ip"], e["src_port"], e["dest_ip"],
                                                           e["dest_port"], sorted(cats)))
    assert not offenders, "\n".join(offenders)
