"""The watch path, live: once an allowed flow needs no more inline verdicts, its packets
pass in the kernel while copies reach the engine over NFLOG; the classifier still sees
every packet, and when one of its later checkpoints blocks the flow, the connection is
revoked (connmark) and stops getting through."""
from __future__ import annotations

import datetime
import json
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.lab import PY, Gateway

REPO = Path(__file__).resolve().parents[2]
MODEL = REPO / "models" / "default"


# Send a message to the echo server and check that exactly it comes back.
EXCHANGE = """
import json, socket, sys, time
def exchange(s, msg):
    s.sendall(msg)
    got = b""
    while len(got) < len(msg):
        chunk = s.recv(len(msg) - len(got))
        if not chunk:
            break
        got += chunk
    return got == msg
"""

# 2 x 400 request/answer rounds of 100 bytes with the echo server on one connection,
# every answer checked: each message is a packet of its own (no segmentation offload
# merges them), so the first half takes the flow past the classifier's 512-packet
# checkpoint; the pause lets the daemon catch up with the copies (the watch is
# asynchronous) and hand the flow to the fast path before the second half.
PING_PONG = EXCHANGE + """
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ok = 0
for i in range(800):
    if i == 400:
        time.sleep(1.0)
    ok += exchange(s, (b"%04d" % i) * 25)
s.close()
print("intact %d" % ok)
"""


def fast_path_packets(lab) -> int:
    """Packets the gateway's ALLOW-connmark rule accepted (the fast path)."""
    out = lab.topo.run("gw", "iptables", "-w", "-L", "EGRESS-FWD", "-v", "-x", "-n").stdout
    rows = [l.split() for l in out.splitlines() if "ACCEPT" in l and "connmark match  0x9000000/0xf000000" in l]
    assert len(rows) == 1, out
    return int(rows[0][0])


@pytest.fixture
def model(tmp_path):
    if not (MODEL / "metadata.json").exists():
        pytest.skip("no bundled model in models/default")
    return str(shutil.copytree(MODEL, tmp_path / "model"))


def test_tls_miner_is_blocked_by_the_classifier(lab, model):
    # No pool name, no plaintext: only the classifier, over the flow's first dozens of
    # packets, can tell this is mining. A flow of small messages stays in the queue for
    # its first 96 payload packets (the mining backstop reads the client's side that far),
    # so the checkpoint that blocks it usually finds it there and drops it inline; a flow
    # that had left for the watch path is revoked through its connmark instead.
    gw = Gateway(lab.topo, lab.workdir, rules=[str(REPO / "rules" / "default.yaml")], extra=["--model", model],
                 name="watch")
    try:
        record = lab.sim_pool("stratum", 3443, "--tls", "--tls-name", "api.example.test")
        lab.sbx(PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3443" % lab.ext4, "--tls",
                "--tls-name", "api.example.test", "--duration", "5", "--share-interval", "0.05", "--seed", "7",
                timeout=30, check=False)
        time.sleep(0.3)
    finally:
        assert gw.stop() == 0
    (flow,) = gw.flows_to(3443)
    assert flow["verdict"]["action"] == "drop" and flow["verdict"]["rule"] == "block-classified-mining"
    assert flow["ml"]["class"] == "mining"
    counters = gw.stats()
    if counters.get("driver.watched", 0):
        assert counters["nflog.packets"] >= 1
        assert counters["driver.watch_revoked"] == 1 and counters["conntrack.revoked"] == 1
        assert "revoked watched flow" in gw.stderr()
    else:
        assert counters["driver.drop"] >= 1
    # The client kept submitting a share every 50 ms for 5 s (~100); the pool stopped
    # hearing from it once the checkpoint blocked the flow (when depends on how the
    # packets were cut, so the bound is the block's own time, from its alert).
    (block,) = [e for e in gw.events("alert") if e["dest_port"] == 3443
                and e["alert"]["rule"] == "block-classified-mining"]
    blocked_at = datetime.datetime.strptime(block["timestamp"], "%Y-%m-%dT%H:%M:%S.%f+0000").replace(
        tzinfo=datetime.timezone.utc).timestamp()
    heard = [json.loads(l) for l in open(record) if '"dir": "in"' in l]
    submits = [m for m in heard if m["msg"].get("method") == "mining.submit"]
    assert 1 <= len(submits) < 80
    assert heard[-1]["ts"] < blocked_at + 0.5, (heard[-1]["ts"] - blocked_at)


def test_a_watched_conversation_ends_its_watch_on_the_fast_path_intact(lab, model):
    # A long conversation: allowed, watched until the classifier's last checkpoint (512
    # packets), then handed to the ALLOW fast path by a connmark rewrite.
    gw = Gateway(lab.topo, lab.workdir, rules=[str(REPO / "rules" / "default.yaml")], extra=["--model", model],
                 name="watch-bulk")
    try:
        lab.echo(lab.ext4, 7301)
        out = lab.sbx(PY, "-c", PING_PONG, lab.ext4, "7301", timeout=60).stdout.strip()
        assert out == "intact 800"
        time.sleep(0.3)
        fast_path = fast_path_packets(lab)
    finally:
        assert gw.stop() == 0
    (flow,) = gw.flows_to(7301)
    assert flow["verdict"]["action"] == "allow"
    assert flow["flow"]["bypass"] == "kernel"          # its counts stop where the watch ended
    assert flow["flow"]["start"] < flow["flow"]["bypassed_at"] <= flow["flow"]["end"]
    counters = gw.stats()
    assert counters["driver.watched"] >= 1 and counters["driver.watch_ended"] == 1
    assert counters["conntrack.released"] == 1 and counters["conntrack.release_failed"] == 0
    # The engine saw the flow up to the classifier's last look; the second half's 800
    # messages went through the kernel's ALLOW rule, without copies.
    assert counters["nflog.packets"] + counters["driver.packets"] >= 512
    assert fast_path >= 800


# A conversation that turns into mining after a pause (for the daemon's restart): 100
# ordinary messages (past the 96 payload packets of the client's side that the detectors
# read: the flow is then watched), a pause, one more, then a Stratum subscribe on the
# same connection.
TURNS_MINER = EXCHANGE + """
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
ok = sum(exchange(s, (b"%04d" % i) * 25) for i in range(100))
print("paused %d" % ok, flush=True)
sys.stdin.readline()
print("after %d" % exchange(s, b"hello again\\n"), flush=True)
time.sleep(0.5)           # the watch path is asynchronous: give the daemon its reaction time
subscribe = json.dumps({"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.12.1"]}).encode() + b"\\n"
try:
    print("mining %d" % exchange(s, subscribe), flush=True)
except OSError as exc:
    print("mining blocked: %s" % type(exc).__name__, flush=True)
"""


def test_a_watched_connection_from_before_a_restart_is_inspected_again(lab, model):
    # The new daemon never decided this connection: the copies it gets carry only the
    # first bytes of each packet, so it clears the connmark and inspects the rest inline:
    # a Stratum subscribe sent later on the same connection is found and blocked inline.
    # (Until the daemon has reacted to the first copy, packets still pass unjudged.)
    import subprocess
    rules = [str(REPO / "rules" / "default.yaml")]
    lab.echo(lab.ext4, 7302)
    first = Gateway(lab.topo, lab.workdir, rules=rules, extra=["--model", model], name="watch-before")
    client = lab.topo.popen("sbx", [PY, "-c", TURNS_MINER, lab.ext4, "7302"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert client.stdout.readline().strip() == "paused 100"
        assert first.stop() == 0
        assert first.stats()["driver.watched"] >= 1
        second = Gateway(lab.topo, lab.workdir, rules=rules, extra=["--model", model], name="watch-after")
        try:
            client.stdin.write("go\n")
            client.stdin.flush()
            assert client.stdout.readline().strip() == "after 1"
            assert client.stdout.readline().strip().startswith("mining blocked")
            client.wait(10)
        finally:
            assert second.stop() == 0
    finally:
        if client.poll() is None:
            client.kill()
    counters = second.stats()
    assert counters["driver.watch_requeued"] == 1 and counters["conntrack.requeued"] == 1
    (flow,) = second.flows_to(7302)
    assert flow["verdict"]["action"] == "drop" and flow["verdict"]["rule"] == "block-mining"
