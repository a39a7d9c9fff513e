"""The mining emulators over loopback: they talk, stop by themselves, record, and are detected.

Each pool/miner pair runs for well under a second through a recording relay; the
bytes that crossed the wire must be detected by the right mining detector, the TLS
variants must NOT be visible to the plaintext detectors (but their SNI names a pool),
and the CLI used by the live and classifier helpers must work as documented.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from egress.inspect.base import Status, StreamView
from egress.inspect.ethminer import EthMinerDetector
from egress.inspect.stratum import StratumDetector
from egress.inspect.ws_mining import WebSocketMiningDetector
from egress.inspect.xmr import CryptoNoteDetector
from egress.sim.session import run_session

PLAINTEXT = [StratumDetector(), CryptoNoteDetector(), EthMinerDetector(), WebSocketMiningDetector()]

CASES = [
    # kind, variant, detector, headline signature, methods the pool must have received
    ("stratum", "btc", "stratum", "stratum.v1.subscribe", {"mining.subscribe", "mining.authorize", "mining.submit"}),
    ("stratum", "ethstratum", "stratum", "ethstratum.subscribe", {"mining.subscribe", "mining.submit"}),
    ("xmr", "xmrig", "cryptonote", "cryptonote.login", {"login", "submit", "keepalived"}),
    ("xmr", "coinhive", "cryptonote", "browser_miner.auth", {"auth", "submit"}),
    ("ethproxy", "ethproxy", "ethminer", "ethproxy.submitLogin",
     {"eth_submitLogin", "eth_getWork", "eth_submitWork", "eth_submitHashrate"}),
]


def matches(up: bytes, down: bytes) -> dict[str, str]:
    view = StreamView(6, b"\x7f\x00\x00\x01", 1, b"\x7f\x00\x00\x01", 2, up[:8192], down[:8192])
    out = {}
    for det in PLAINTEXT:
        result = det.inspect(view)
        if result.status is Status.MATCH:
            out[det.name] = result.detections[0].signature
    return out


@pytest.mark.parametrize("kind,variant,detector,sig,methods", CASES, ids=[c[0] + "-" + c[1] for c in CASES])
def test_plain_session_is_detected(kind, variant, detector, sig, methods):
    s = run_session(kind, variant=variant, duration=0.6, share_interval=0.05, job_interval=0.15,
                    periodic_interval=0.1, seed=11)
    assert methods <= set(s.pool_methods), s.pool_methods
    assert s.client_summary["shares"] >= 3 and "error" not in s.client_summary
    assert s.client_summary["received"] >= 3, "the miner received no work"
    assert matches(s.to_server, s.to_client) == {detector: sig}


@pytest.mark.parametrize("kind,variant,detector,sig,methods", CASES, ids=[c[0] + "-" + c[1] for c in CASES])
def test_websocket_session_is_detected(kind, variant, detector, sig, methods):
    s = run_session(kind, variant=variant, websocket=True, duration=0.4, share_interval=0.05, seed=12)
    assert s.to_server.startswith(b"GET / HTTP/1.1\r\n")
    assert methods & set(s.pool_methods)
    found = matches(s.to_server, s.to_client)
    assert found.get("ws_mining") == "mining.websocket" and set(found) == {"ws_mining"}


@pytest.mark.parametrize("kind,variant", [("stratum", "btc"), ("xmr", "xmrig"), ("ethproxy", "ethproxy")])
def test_tls_session_is_invisible_to_plaintext_detectors(kind, variant):
    s = run_session(kind, variant=variant, tls=True, duration=0.4, share_interval=0.05, seed=13)
    assert "error" not in s.client_summary and s.pool_methods      # it did mine, inside TLS
    assert s.to_server[:1] == b"\x16"                                # a TLS handshake record
    assert matches(s.to_server, s.to_client) == {}


def test_tls_session_sni_names_the_pool():
    pytest.importorskip("egress.inspect.tls")
    from egress.inspect.registry import default_detectors
    s = run_session("xmr", tls=True, duration=0.3, seed=14, client_kwargs={"server_hostname": "xmr-eu1.nanopool.org"})
    view = StreamView(6, b"\x7f\x00\x00\x01", 1, b"\x7f\x00\x00\x01", 2, s.to_server[:8192], s.to_client[:8192])
    found = []
    for det in default_detectors():                    # merge facts in order, as the engine's stage does
        if 6 not in det.protocols:
            continue
        result = det.inspect(view)
        for key, value in result.facts.items():
            view.facts.setdefault(key, value)
        if result.app_proto and not view.app_proto:
            view.app_proto = result.app_proto
        found += [d.signature for d in result.detections if d.category == "mining"]
    assert found == ["mining.pool_domain"], (found, view.facts.get("tls.sni"))


def test_limits_stop_the_client_and_are_recorded(tmp_path):
    record = tmp_path / "client.jsonl"
    t0 = time.monotonic()
    s = run_session("stratum", duration=5.0, share_interval=0.01, seed=15,
                    client_kwargs={"max_messages": 6, "record_path": str(record)})
    assert time.monotonic() - t0 < 4.0                 # the message budget ended it, not the duration
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    sent = [e["msg"] for e in lines if e["dir"] == "out"]
    assert len(sent) == 6 and sent[0]["method"] == "mining.subscribe"
    assert s.pool_methods.count("mining.submit") == 4


def run_cli(*args):
    return subprocess.Popen([sys.executable, "-m", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_cli_pool_and_client(tmp_path):
    record = tmp_path / "pool.jsonl"
    pool = run_cli("egress.sim.stratum", "pool", "--listen", "127.0.0.1:0", "--duration", "3",
                   "--job-interval", "0.2", "--record", str(record))
    try:
        first = json.loads(pool.stdout.readline())
        assert first["event"] == "listening"
        host, port = first["address"]
        client = subprocess.run([sys.executable, "-m", "egress.sim.stratum", "client", "--connect",
                                 "%s:%d" % (host, port), "--duration", "0.8", "--share-interval", "0.1"],
                                capture_output=True, text=True, timeout=20)
        assert client.returncode == 0, client.stderr
        summary = json.loads(client.stdout.strip().splitlines()[-1])
        assert summary["shares"] >= 3 and summary["methods_received"]["mining.notify"] >= 1
        out, _ = pool.communicate(timeout=20)
        assert pool.returncode == 0
    finally:
        if pool.poll() is None:
            pool.kill()
            pool.wait()
    methods = [json.loads(line)["msg"].get("method") for line in record.read_text().splitlines()
               if json.loads(line)["dir"] == "in"]
    assert methods[:2] == ["mining.subscribe", "mining.authorize"] and "mining.submit" in methods


def test_cli_client_reports_a_refused_connection():
    result = subprocess.run([sys.executable, "-m", "egress.sim.xmr", "client", "--connect", "127.0.0.1:1",
                             "--duration", "1"], capture_output=True, text=True, timeout=20)
    assert result.returncode == 1
    assert "connect to 127.0.0.1:1 failed" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_stratum_v2_shape_session():
    from egress.engine import Engine
    from egress.sim.session import to_packets
    from egress.types import RawPacket
    s = run_session("stratum_v2", duration=0.6, share_interval=0.05, job_interval=0.2, seed=16)
    assert s.pool_methods[:3] == ["handshake", "SetupConnection", "OpenStandardMiningChannel"]
    assert "SubmitSharesStandard" in s.pool_methods and "error" not in s.client_summary
    assert s.chunks[0][1:] == (0, 64) and s.chunks[1][1:] == (1, 234)
    assert matches(s.to_server, s.to_client) == {}                  # no plaintext to see
    engine = Engine()
    for ts, data in to_packets(s, server=("10.203.0.3", 443)):
        engine.process(RawPacket(ts, data, 101))
    engine.flush()
    flows = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert [d["signature"] for d in flows[0]["detections"]] == ["stratum.v2.noise_handshake"]


def test_a_pool_with_a_long_banner_still_gets_mined_and_the_login_is_still_found(repo_root):
    """The pool talks first (9 KiB of text lines, past the detectors' depth); the miner
    lets them pass before its login and mines; the engine, fed the session as packets,
    still drops it (the server's side is spent, the client's is still read)."""
    from egress.engine import Engine
    from egress.policy import load_policy_engine
    from egress.sim.session import to_packets
    from egress.types import Action, RawPacket
    s = run_session("stratum", duration=0.6, share_interval=0.05, seed=14, pool_kwargs={"banner": 9000},
                    client_kwargs={"after_banner": 9000})
    assert s.to_client.startswith(b"# pool message of the day") and len(s.to_client) > 9000
    assert {"mining.subscribe", "mining.submit"} <= set(s.pool_methods)
    assert "error" not in s.client_summary and s.client_summary["shares"] >= 3
    engine = Engine(policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]))
    decisions = [engine.process(RawPacket(ts, p, 101)) for ts, p in to_packets(s)]
    assert any(d.oneway for d in decisions)
    assert decisions[-1].action is Action.DROP and decisions[-1].verdict.rule == "block-mining"


def test_websocket_mining_after_a_big_download_on_the_same_connection_is_dropped(repo_root):
    """A keep-alive connection: a 30 KB download first (its answer spends the server's
    budget), then the emulated miner's WebSocket session; the 101 and the pool's frames
    are never inspected, the miner's own frames are."""
    from egress.engine import Engine
    from egress.policy import load_policy_engine
    from egress.testing.craft import TcpSession
    from egress.types import Action, RawPacket
    s = run_session("stratum", websocket=True, duration=0.4, share_interval=0.05, seed=12)
    t = TcpSession(("10.200.0.2", 40000), ("10.200.1.2", 80)).handshake()
    t.send(True, b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n")
    t.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + b"z" * 30000)
    at, streams = [0, 0], (s.to_server, s.to_client)
    for _ts, direction, length in s.chunks:
        t.send(direction == 0, streams[direction][at[direction]:at[direction] + length])
        at[direction] += length
    engine = Engine(policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]))
    decisions = [engine.process(RawPacket(ts, p, 101)) for ts, p in t.packets]
    assert decisions[-1].action is Action.DROP and decisions[-1].verdict.rule == "block-mining"
    (found,) = [d for d in decisions[-1].flow.detections if d.signature == "mining.websocket"]
    assert found.evidence["server_side"] == "unseen"
