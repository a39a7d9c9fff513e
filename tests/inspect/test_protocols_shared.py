"""The protocol detectors on every real capture in ../shared/pcaps, through the real engine.

Checks (issue 3's "done when" for SSH and reverse tunnels):
- every TCP flow FLOWS.tsv labels `ssh` gets an "ssh" detection (and app_proto ssh);
- no flow in any file is called reverse_tunnel or reverse_shell;
- the TLS flows FLOWS.tsv annotates with an SNI report that SNI;
- the engine's counters show no detector raising.
"""
from __future__ import annotations

import pytest

from egress.drivers.pcap import read_capture
from egress.engine import Engine


def endpoint(text: str) -> tuple[str, int]:
    host, port = text.rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def replayed(shared_pcaps):
    """file name -> (flow events, counters)."""
    out = {}
    for path in sorted(p for p in shared_pcaps.iterdir() if p.suffix in (".pcap", ".pcapng")):
        engine = Engine()
        for raw in read_capture(path):
            engine.process(raw)
        engine.flush()
        flows = [e for e in engine.drain_events() if e["event_type"] == "flow"]
        out[path.name] = (flows, dict(engine.counters))
    return out


def find(flows, row):
    client, server = endpoint(row["client"]), endpoint(row["server"])
    for e in flows:
        if e["proto"] != "TCP":
            continue
        key = (e["src_ip"], e["src_port"], e["dest_ip"], e["dest_port"])
        if key == client + server or key == server + client:
            return e
    return None


def categories(event) -> set:
    return {d["category"] for d in event.get("detections", [])}


def test_every_ssh_labelled_flow_is_detected_as_ssh(replayed, shared_flows):
    missing, checked = [], 0
    for name, rows in shared_flows.items():
        flows, _ = replayed[name]
        for row in rows:
            if row["flow_label_derived"] != "ssh":
                continue
            checked += 1
            event = find(flows, row)
            if event is None or "ssh" not in categories(event) or event.get("app_proto") != "ssh":
                missing.append("%s %s -> %s: %s" % (name, row["client"], row["server"],
                                                   event and (event.get("app_proto"), categories(event))))
    assert checked >= 20
    assert not missing, "\n".join(missing)


def test_no_flow_anywhere_is_a_reverse_tunnel_or_reverse_shell(replayed):
    bad = []
    for name, (flows, _) in replayed.items():
        for e in flows:
            hit = categories(e) & {"reverse_tunnel", "reverse_shell"}
            if hit:
                bad.append("%s %s:%s -> %s:%s %s" % (name, e["src_ip"], e["src_port"], e["dest_ip"],
                                                    e["dest_port"], e["detections"]))
    assert not bad, "\n".join(bad)


def test_annotated_sni_is_reported(replayed, shared_flows):
    wrong, checked = [], 0
    for name, rows in shared_flows.items():
        flows, _ = replayed[name]
        for row in rows:
            if not row["flow_evidence"].startswith("SNI "):
                continue
            event = find(flows, row)
            if event is None or row["direction_basis"] != "syn_seen":
                continue
            checked += 1
            sni = (event.get("tls") or {}).get("sni")
            if sni != row["flow_evidence"][4:]:
                wrong.append("%s %s: %r" % (name, row["client"], sni))
    assert checked >= 5
    assert not wrong, "\n".join(wrong)


def test_detectors_never_raise_on_real_traffic(replayed):
    errors = {name: {k: v for k, v in counters.items() if k.startswith("inspect.errors")}
              for name, (_, counters) in replayed.items()}
    assert not any(errors.values()), errors
