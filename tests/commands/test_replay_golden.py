"""Golden replays: captures the project writes, replayed through `egress replay`,
compared with committed baselines (tests/golden/*.json), Zeek-style.

The same traffic written in four link types / file formats must give identical
flow events: the decoder is invisible above the packet.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from egress.cli import main
from tests.golden.scenarios import write_all_formats

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
CHECK_EVE = Path(__file__).resolve().parents[3] / "shared" / "tools" / "check_eve.py"

# Fields that describe what happened, not when the test ran.
KEEP = ("event_type", "src_ip", "src_port", "dest_ip", "dest_port", "proto", "app_proto", "flow",
        "verdict", "detections", "ml", "anomalies", "flow_id")


def replay(tmp_path, *args) -> list[dict]:
    out = tmp_path / ("eve-%d.json" % len(list(tmp_path.glob("eve-*.json"))))
    assert main(["replay", "--quiet", "--eve", str(out), *args]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def normalized(events: list[dict]) -> list[dict]:
    flows = [{k: e[k] for k in KEEP if k in e} for e in events if e["event_type"] == "flow"]
    return sorted(flows, key=lambda e: (e["flow"]["start"], e["src_port"], e["dest_port"], e["proto"]))


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    return write_all_formats(tmp_path_factory.mktemp("golden"))


def test_every_format_and_link_type_gives_the_same_flows(tmp_path, captures):
    results = {name: normalized(replay(tmp_path, path)) for name, path in captures.items()}
    reference = results["raw.pcap"]
    assert len(reference) == 7
    for name, flows in results.items():
        assert flows == reference, name


def test_mixed_traffic_matches_the_baseline(tmp_path, captures, repo_root):
    flows = normalized(replay(tmp_path, "--rules", str(repo_root / "rules" / "default.yaml"), captures["ether.pcap"]))
    baseline = GOLDEN / "mixed.flows.json"
    if os.environ.get("EGRESS_UPDATE_GOLDEN"):
        baseline.write_text(json.dumps(flows, indent=1, sort_keys=True) + "\n")
    assert flows == json.loads(baseline.read_text())


def test_orientation_and_counts_of_the_mixed_traffic(tmp_path, captures):
    """What the baseline must say, spelled out, so a wrong baseline cannot slip in."""
    flows = {(f["proto"], f["dest_port"]): f for f in normalized(replay(tmp_path, captures["raw.pcap"]))}
    mid = flows[("TCP", 443)] if flows[("TCP", 443)]["src_port"] == 51000 else None
    dns = flows[("UDP", 53)]
    assert (dns["src_ip"], dns["src_port"], dns["dest_ip"]) == ("10.200.0.2", 41000, "10.200.0.1")
    assert dns["flow"]["pkts_toserver"] == 1 and dns["flow"]["pkts_toclient"] == 1
    pool = flows[("TCP", 3333)]
    assert pool["src_ip"] == "10.200.0.2" and pool["flow"]["state"] == "closed"
    v6 = flows[("TCP", 80)]
    assert v6["src_ip"] == "fd00:200::2" and v6["flow"]["state"] == "closed"
    if mid is not None:   # the capture started mid-connection; port 443 is still the server
        assert mid["flow"]["initiator"] == "port"
    icmp = flows[("ICMP", 0)]
    assert icmp["flow"]["pkts_toserver"] == 1 and icmp["flow"]["pkts_toclient"] == 1


def test_eve_output_passes_the_shared_contract_checker(tmp_path, captures):
    if not CHECK_EVE.is_file():
        pytest.skip("../shared/tools/check_eve.py is not present next to the checkout")
    out = tmp_path / "eve.json"
    assert main(["replay", "--quiet", "--eve", str(out), *captures.values()]) == 0
    result = subprocess.run([sys.executable, str(CHECK_EVE), str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_a_directory_is_searched_and_a_cut_off_file_gives_the_flows_read_so_far(tmp_path, captures, capsys):
    data = Path(captures["ether.pcap"]).read_bytes()
    broken = tmp_path / "dir" / "cut.pcap"
    broken.parent.mkdir()
    broken.write_bytes(data[: len(data) - 7])
    out = tmp_path / "eve.json"
    code = main(["replay", "--eve", str(out), str(broken.parent)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "cut.pcap" in err
    flows = [json.loads(l) for l in out.read_text().splitlines() if '"flow"' in l]
    assert len(flows) == 7


def test_not_a_capture_is_a_one_line_error(tmp_path, capsys):
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"this is not a capture file at all")
    assert main(["replay", str(junk)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
