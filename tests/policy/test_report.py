"""egress report: violations per sandbox and episode, table and JSON, from hand-written EVE
and from a real replay through the engine with a policy and a sandbox map."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from egress.cli import main
from egress.commands.report import collect, summarize
from egress.testing.craft import TcpSession, write_pcap

REPO = Path(__file__).resolve().parents[2]


def ev(kind, flow_id, action="allow", mode="enforce", rule="default", sandbox=None, detections=(), **extra):
    e = {"timestamp": "2026-01-01T00:00:%02d.000000+0000" % flow_id, "event_type": kind, "flow_id": flow_id,
         "src_ip": "10.0.0.1", "src_port": 40000 + flow_id, "dest_ip": "192.0.2.1", "dest_port": 443,
         "proto": "TCP", "app_proto": None, "verdict": {"action": action, "mode": mode, "rule": rule, "reasons": []},
         "detections": [dict(category=c, signature=s) for c, s in detections]}
    if sandbox:
        e["sandbox"] = {"id": sandbox[0], "episode": sandbox[1]}
    e.update(extra)
    return e


def write(path, events):
    path.write_text("".join(json.dumps(e) + "\n" for e in events))
    return str(path)


@pytest.fixture
def eve(tmp_path):
    a, b = ("sbx-1", "ep-1"), ("sbx-1", "ep-2")
    return write(tmp_path / "eve.json", [
        ev("alert", 1, "drop", rule="block-mining", sandbox=a, detections=[("mining", "stratum.v1.subscribe")]),
        ev("flow", 1, "drop", rule="block-mining", sandbox=a, detections=[("mining", "stratum.v1.subscribe")]),
        ev("flow", 2, sandbox=a),
        ev("flow", 3, "reject", rule="deny-ssh", sandbox=a),
        ev("flow", 4, "drop", mode="audit", rule="would-block", sandbox=b),
        ev("alert", 5, "allow", rule="watch", sandbox=b),
        ev("flow", 5, "allow", rule="watch", sandbox=b),
        ev("flow", 6),
        {"timestamp": "x", "event_type": "stats"},
    ])


def test_summary_groups_by_sandbox_and_episode(eve):
    flows, events = collect([eve])
    report = summarize(flows.values(), events)
    assert (report["events"], report["flows"], report["violations"]) == (9, 6, 4)
    groups = {(g["sandbox"], g["episode"]): g for g in report["groups"]}
    g1 = groups[("sbx-1", "ep-1")]
    assert (g1["flows"], g1["violations"], g1["enforced"]) == (3, 2, {"drop": 1, "reject": 1})
    assert g1["rules"] == {"block-mining": 1, "deny-ssh": 1} and g1["categories"] == {"mining": 1}
    g2 = groups[("sbx-1", "ep-2")]
    assert (g2["violations"], g2["audit"], g2["enforced"]) == (2, {"drop": 1}, {"alert": 1})
    assert groups[(None, None)]["violations"] == 0


def test_json_output_filters_and_details(eve, capsys):
    assert main(["report", "--json", "--sandbox", "sbx-1", "--episode", "ep-1", "--details", eve]) == 0
    out = json.loads(capsys.readouterr().out)
    assert len(out["groups"]) == 1 and out["violations"] == 2
    assert sorted(d["flow_id"] for d in out["groups"][0]["details"]) == [1, 3]


def test_table_output(eve, capsys):
    assert main(["report", eve]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["SANDBOX", "EPISODE", "FLOWS", "VIOL"]
    assert lines[1].split()[:4] == ["sbx-1", "ep-1", "3", "2"]
    assert lines[-1] == "9 event(s), 6 flow(s), 4 violation(s)"


@pytest.mark.parametrize("content,fragment", [
    ('{"event_type": "flow"}\n{oops\n', ":2: not JSON"),
    ('[1, 2]\n', ":1: not an EVE event"),
])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, content, fragment):
    path = tmp_path / "bad.json"
    path.write_text(content)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and fragment in err


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["report", str(tmp_path / "none.json")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_report_on_replay_output_with_sandbox_map(tmp_path, capsys):
    """Replay a crafted capture under a policy and a sandbox map, then report on its EVE."""
    ssh = TcpSession(("10.88.0.7", 40001), ("192.0.2.10", 22)).handshake()
    ssh.send(True, b"SSH-2.0-OpenSSH_9.2p1\r\n").send(False, b"SSH-2.0-OpenSSH_9.2p1\r\n").close()
    web = TcpSession(("10.88.0.8", 40002), ("192.0.2.20", 8080), t0=1_700_000_001.0).handshake()
    web.send(True, b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").close()
    pcap = tmp_path / "cap.pcap"
    write_pcap(pcap, ssh.packets + web.packets, linktype=101)
    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\npolicies:\n  p:\n    mode: enforce\n    rules:\n"
                     "      - name: no-ssh-port\n        action: reject\n        ports: [22]\n    default: allow\n")
    smap = tmp_path / "map.yaml"
    smap.write_text("version: 1\nentries:\n  - {cidr: 10.88.0.7, sandbox: sbx-7, episode: ep-1}\n"
                    "  - {cidr: 10.88.0.8, sandbox: sbx-8, episode: ep-1}\n")
    out = tmp_path / "eve.json"
    assert main(["replay", "-q", "--rules", str(rules), "--sandbox-map", str(smap), "--eve", str(out), str(pcap)]) == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert {e["sandbox"]["id"] for e in events if e["event_type"] == "flow"} == {"sbx-7", "sbx-8"}
    capsys.readouterr()
    assert main(["report", "--json", str(out)]) == 0
    report = json.loads(capsys.readouterr().out)
    groups = {g["sandbox"]: g for g in report["groups"]}
    assert groups["sbx-7"]["violations"] == 1 and groups["sbx-7"]["enforced"] == {"reject": 1}
    assert groups["sbx-7"]["rules"] == {"no-ssh-port": 1} and groups["sbx-7"]["episode"] == "ep-1"
    assert groups["sbx-8"]["violations"] == 0 and groups["sbx-8"]["flows"] == 1
