"""Cost of the SSH tunnel-only heuristic (egress.inspect.ssh._tunnel_only), on real OpenSSH sessions.

    python bench/bench_ssh_tunnel.py [--repeat N]      (root: sshd in a private mount namespace)

Records three sessions with the test lab (tests/inspect/sshlab.py: sshd and ssh on
loopback, through a recording relay): `ssh -N -R` and `ssh -N -L` with two forwarded
connections each, and `ssh host cmd`. Then, with and without the tunnel-only step:
1. per call: the SSH detector on each whole recorded view (8 KiB, 64 sizes);
2. per packet: the recordings replayed as TCP packets through the engine (all
   default detectors), microseconds per packet.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "inspect"))

import sshlab  # noqa: E402
from egress.inspect import ssh  # noqa: E402
from egress.inspect.base import StreamView  # noqa: E402


def record() -> dict:
    recs = {}
    with tempfile.TemporaryDirectory(prefix="egs-bench-") as d, sshlab.SshLab(Path(d)) as lab:
        relay = sshlab.Relay(lab.port)
        echo = sshlab.EchoServer()
        try:
            for name, forward in (("ssh -N -R", "-R"), ("ssh -N -L", "-L")):
                port = sshlab.free_port()
                p = lab.start(lab.ssh(relay.port, "-N", forward, "%d:127.0.0.1:%d" % (port, echo.port),
                                      "root@127.0.0.1"))
                sshlab.wait_listen(port)
                for _ in range(2):
                    time.sleep(1.5)
                    sshlab.through_port(port)
                time.sleep(0.3)
                lab.stop(p)
                time.sleep(0.2)
                recs[name] = relay.recordings[-1]
            lab.run(lab.ssh(relay.port, "root@127.0.0.1", "echo hi"))
            time.sleep(0.2)
            recs["ssh host cmd"] = relay.recordings[-1]
        finally:
            echo.close()
            relay.close()
    return recs


def per_call(view: StreamView, repeat: int) -> float:
    det = ssh.SshDetector()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            det.inspect(view)
        best = min(best, (time.perf_counter() - t) / repeat)
    return best * 1e6


def packets(rec) -> list:
    """The recording as TCP packets (as tests/inspect/protocols_pcap.engine_replay builds them)."""
    from egress.testing.craft import TcpSession
    from egress.types import RawPacket
    streams, at = (bytes(rec.data[0]), bytes(rec.data[1])), [0, 0]
    session = TcpSession(("10.208.0.2", 40000), ("10.208.0.9", 22))
    session.handshake()
    base, t0 = session.t, rec.sizes[0][0]
    for ts, d, n in rec.sizes:
        chunk = streams[d][at[d]:at[d] + n]
        at[d] += n
        session.t = max(session.t, base + (ts - t0))
        session.send(d == 0, chunk, ack=False)
    session.close()
    return [RawPacket(ts, pkt, 101) for ts, pkt in session.packets]


def per_packet(pkts: list, repeat: int) -> float:
    from egress.engine import Engine
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeat):
            engine = Engine()
            for p in pkts:
                engine.process(p)
            engine.flush()
            engine.drain_events()
        best = min(best, (time.perf_counter() - t) / repeat / len(pkts))
    return best * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=2000)
    args = ap.parse_args()
    reason = sshlab.available()
    if reason:
        sys.exit("bench_ssh_tunnel: " + reason)
    recs = record()
    print("| session | detector call, us (without / with tunnel-only) | engine replay, us per packet (without / with) |")
    print("|---|---:|---:|")
    original = ssh._tunnel_shape
    for name, rec in recs.items():
        view, pkts = rec.view(), packets(rec)
        rows = []
        for shape in (lambda *a: None, original):
            ssh._tunnel_shape = shape
            rows.append((per_call(view, args.repeat), per_packet(pkts, max(1, args.repeat // 20))))
        ssh._tunnel_shape = original
        print("| %s | %.1f / %.1f | %.1f / %.1f |" % (name, rows[0][0], rows[1][0], rows[0][1], rows[1][1]))


if __name__ == "__main__":
    main()
