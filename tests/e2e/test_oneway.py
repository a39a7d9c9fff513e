"""ONEWAY, live: a server that spends its side's inspection budget first (a pool's long
banner, a download) cannot end the inspection of the client's side. The gateway then
queues only the client's packets: the miner's late login is still dropped inline (the
pool never hears it), and a download's data passes in the kernel, intact."""
from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.e2e.lab import PY, Gateway

REPO = Path(__file__).resolve().parents[2]
RULES = str(REPO / "rules" / "default.yaml")
MODEL = REPO / "models" / "default"
BLOB = bytes(range(256)) * 8192          # 2 MiB: ~1,450 packets from the server

# In ext: answers each request on a connection: "GET /big" with BLOB, "GET /drip" with
# 600 messages of 100 bytes 1 ms apart (each a packet of its own, which GRO cannot
# merge), anything else with a short answer; bounded in time.
DOWNLOAD_SERVER = """
import socket, sys, threading, time
blob = bytes(range(256)) * 8192
s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(4); s.settimeout(0.2)
print("ready", flush=True)
def serve(c):
    c.settimeout(10)
    buf = b""
    try:
        while True:
            while b"\\n" not in buf:
                d = c.recv(4096)
                if not d:
                    return
                buf += d
            line, _, buf = buf.partition(b"\\n")
            if line.startswith(b"GET /drip"):
                c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 60000\\r\\n\\r\\n")
                for i in range(600):
                    c.sendall(b"%099d\\n" % i)
                    time.sleep(0.001)
                continue
            body = blob if line.startswith(b"GET /big") else b"ok\\n"
            c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body)
    except OSError:
        pass
    finally:
        c.close()
end = time.time() + 60
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""

# In sbx: one connection: download BLOB (its sha256 printed), the drip (600 small
# packets), then a Stratum login on the same connection, which must get no answer.
CLIENT = """
import hashlib, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
def answer():
    head = b""
    while b"\\r\\n\\r\\n" not in head:
        d = s.recv(1)
        if not d:
            raise EOFError
        head += d
    n = int(head.split(b"Content-Length: ")[1].split(b"\\r\\n")[0])
    body = b""
    while len(body) < n:
        d = s.recv(min(65536, n - len(body)))
        if not d:
            raise EOFError
        body += d
    return body
s.sendall(b"GET /big HTTP/1.1\\n")
print("download", hashlib.sha256(answer()).hexdigest(), flush=True)
s.sendall(b"GET /drip HTTP/1.1\\n")
print("drip", answer() == b"".join(b"%099d\\n" % i for i in range(600)), flush=True)
s.settimeout(3)
s.sendall(b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\\n')
try:
    print("login answered", answer()[:20], flush=True)
except (OSError, EOFError) as e:
    print("login", type(e).__name__, flush=True)
"""


def download_server(lab, port: int, host: str | None = None) -> None:
    proc = lab.topo.popen("ext", [PY, "-c", DOWNLOAD_SERVER, host or lab.ext4, str(port)], stdout=subprocess.PIPE,
                          text=True)
    assert proc.stdout.readline().strip() == "ready"


def extra_for(model: bool, tmp_path) -> list[str]:
    if not model:
        return []
    if not (MODEL / "metadata.json").exists():
        pytest.skip("no bundled model in models/default")
    return ["--model", str(shutil.copytree(MODEL, tmp_path / "model"))]


@pytest.mark.parametrize("model,v6", [(False, False), (True, False), (False, True)],
                         ids=["signatures", "signatures+model", "signatures-ipv6"])
def test_a_download_passes_in_the_kernel_and_a_login_after_it_is_still_dropped(lab, tmp_path, model, v6):
    port = 7401 if model else 7403 if v6 else 7400
    host = lab.ext6 if v6 else lab.ext4
    gw = Gateway(lab.topo, lab.workdir, rules=[RULES], extra=extra_for(model, tmp_path),
                 name="oneway-dl-%d-%d" % (model, v6))
    try:
        download_server(lab, port, host)
        out = lab.sbx(PY, "-c", CLIENT, host, str(port), timeout=40).stdout.split("\n")
    finally:
        assert gw.stop() == 0
    assert out[0] == "download " + hashlib.sha256(BLOB).hexdigest()
    assert out[1] == "drip True"
    assert out[2] in ("login timeout", "login TimeoutError"), out
    (flow,) = gw.flows_to(port)
    assert flow["verdict"]["action"] == "drop" and flow["verdict"]["rule"] == "block-mining"
    counters = gw.stats()
    assert counters["flows.oneway"] == 1 and counters["driver.oneway"] >= 1
    # the server's ~2,000 data packets passed in the kernel: what was queued is the
    # handshake, the first 8 KiB of the answer, the client's requests and the closes
    assert counters["driver.packets"] < 100, counters
    if not model:
        assert counters.get("nflog.packets", 0) == 0
    else:
        # copies for the classifier until its last packet checkpoint (512), during the
        # drip; then the connmark loses its copy bit and the rest of the drip passes
        # without copies (GRO merges the 2 MiB into a few dozen packets)
        assert counters["driver.oneway_unwatched"] == 1 and counters["conntrack.unwatched"] == 1
        assert 400 <= counters["nflog.packets"] < 600 + 100, counters


def test_a_pool_behind_a_long_banner_never_hears_the_login(lab):
    gw = Gateway(lab.topo, lab.workdir, rules=[RULES], name="oneway-pool")
    try:
        record = lab.sim_pool("stratum", 3339, "--banner", "9000")
        result = lab.sbx(PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3339" % lab.ext4,
                         "--after-banner", "9000", "--duration", "2", "--share-interval", "0.2", timeout=20)
    finally:
        assert gw.stop() == 0
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["sent"] >= 1 and summary["received"] == 0 and summary["shares"] == 0, summary
    assert not [line for line in open(record) if '"dir": "in"' in line]
    (flow,) = gw.flows_to(3339)
    assert flow["verdict"]["action"] == "drop" and flow["verdict"]["rule"] == "block-mining"
    assert any(d["signature"].startswith("stratum") for d in flow["detections"])
    counters = gw.stats()
    assert counters["flows.oneway"] == 1 and counters["driver.oneway"] == 1


def test_oneway_flows_keep_their_worker(lab, tmp_path):
    # Two workers, connections given to them in turn: a ONEWAY mark carries the flow's
    # slot, so the client's later packets (the drip's request, the login) reach the worker
    # that knows the flow. A wrong slot would show as a second, mid-stream flow.
    eve = tmp_path / "w.json"
    gw = Gateway(lab.topo, lab.workdir, rules=[RULES], extra=["--queue", "0-1", "--workers", "--eve", str(eve)],
                 name="oneway-workers")
    try:
        download_server(lab, 7402)
        outs = [lab.sbx(PY, "-c", CLIENT, lab.ext4, "7402", timeout=40).stdout.split("\n") for _ in range(2)]
    finally:
        assert gw.stop() == 0
    for out in outs:
        assert out[:2] == ["download " + hashlib.sha256(BLOB).hexdigest(), "drip True"]
        assert out[2] in ("login timeout", "login TimeoutError"), out
    flows = {name: [e for e in map(json.loads, (tmp_path / name).read_text().splitlines())
                    if e["event_type"] == "flow" and e["dest_port"] == 7402] for name in ("w.q0.json", "w.q1.json")}
    assert [len(f) for f in flows.values()] == [1, 1], flows
    for (flow,) in flows.values():
        assert flow["flow"]["initiator"] == "syn" and flow["verdict"]["rule"] == "block-mining"
