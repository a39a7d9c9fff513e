"""Cost of the protocol detectors (TLS/QUIC, HTTP, DNS, SSH, reverse shell, tunnel): per call,
per flow, and per replayed packet.

    python bench/bench_inspect_protocols.py [--repeat N] [--no-replay]

1. per call: each protocol detector on typical views (a TLS ClientHello + ServerHello,
   an HTTP request/response, a DNS query/answer, an SSH session of 8 KiB each way, a
   QUIC v1 Initial, random binary);
2. per flow: real flows of ../shared/pcaps (when present) fed packet by packet as the
   engine does (each call re-reads the growing prefix), until each detector decides or
   its budget is spent; total microseconds per flow per detector;
3. replay: all captures through the engine with all default detectors, and with the
   protocol detectors removed: packets/s and the added cost per packet.
"""
from __future__ import annotations

import argparse
import random
import struct
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "inspect"))

from egress.inspect.base import Status, StreamView  # noqa: E402
from egress.inspect.dns import DnsDetector  # noqa: E402
from egress.inspect.http import HttpDetector  # noqa: E402
from egress.inspect.shell import ReverseShellDetector  # noqa: E402
from egress.inspect.ssh import SshDetector  # noqa: E402
from egress.inspect.tls import TlsDetector  # noqa: E402
from egress.inspect.tunnel import TunnelDetector  # noqa: E402

PROTOCOL_NAMES = {"tls", "http", "dns", "ssh", "reverse_shell", "tunnel"}
SHARED = ROOT.parent / "shared" / "pcaps"
V4A, V4B = b"\x0a\0\0\1", b"\x0a\0\0\2"


def detectors():
    return [TlsDetector(), HttpDetector(), DnsDetector(), SshDetector(), ReverseShellDetector(), TunnelDetector()]


def _pcap_view(name: str, pick) -> StreamView | None:
    try:
        from protocols_pcap import read_flows
    except ImportError:
        return None
    path = SHARED / name
    if not path.is_file():
        return None
    for f in read_flows(path):
        if pick(f):
            return f.view(closed=False)
    return None


def samples() -> dict[str, StreamView]:
    rng = random.Random(1)
    out = {}
    tls = _pcap_view("ndpi__443-curl.pcap", lambda f: f.proto == 6)
    if tls is not None:
        out["TLS ClientHello+ServerHello (curl)"] = tls
    ssh = _pcap_view("joy__kali-normal-ssh.pcap", lambda f: f.proto == 6 and f.server[1] == 22)
    if ssh is not None:
        out["SSH session 8 KiB each way"] = ssh
    dns = _pcap_view("ndpi__dns.pcap", lambda f: f.proto == 17 and len(f.datagrams) >= 2)
    if dns is not None:
        out["DNS query+answer (8 A records)"] = dns
    quic = _pcap_view("ndpi__quic-v2.pcapng", lambda f: f.proto == 17)
    if quic is not None:
        out["QUIC v2 Initial (decrypt)"] = quic
    http = (b"GET /simple/requests/ HTTP/1.1\r\nHost: pypi.org\r\nUser-Agent: pip/24.0\r\n"
            b"Accept: text/html\r\nAccept-Encoding: gzip\r\n\r\n")
    out["HTTP GET + 200"] = StreamView(6, V4A, 40000, V4B, 80, http,
                                       b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + rng.randbytes(1200))
    out["random binary 1448+1448"] = StreamView(6, V4A, 40000, V4B, 443, rng.randbytes(1448), rng.randbytes(1448))
    return out


def per_call(repeat: int) -> list[tuple]:
    rows = []
    for name, view in samples().items():
        for det in detectors():
            if view.proto not in det.protocols:
                continue
            status = det.inspect(view).status
            best = float("inf")
            for _ in range(5):               # best of 5 batches: the machine is shared
                t0 = time.perf_counter()
                for _ in range(repeat):
                    det.inspect(view)
                best = min(best, (time.perf_counter() - t0) / repeat)
            rows.append((name, det.name, status.value, best * 1e6))
    return rows


def per_flow(max_flows: int = 200) -> dict[str, list[float]]:
    """Microseconds per flow for each detector, calls made as the inspect stage makes them."""
    try:
        from protocols_pcap import growing_views, read_flows
    except ImportError:
        return {}
    costs: dict[str, list[float]] = {d.name: [] for d in detectors()}
    flows = []
    for path in sorted(SHARED.glob("*.pcap*")):
        flows += [f for f in read_flows(path) if f.sizes]
    for f in flows[:max_flows]:
        full = f.view(closed=False)
        # one call per payload packet (the stage's granularity): grow per packet, not per byte
        views = list(growing_views(full, fine=0))
        for det in detectors():
            if full.proto not in det.protocols:
                continue
            t0 = time.perf_counter()
            for v in views:
                r = det.inspect(v)
                if r.status is not Status.NEED_MORE or max(len(v.to_server), len(v.to_client)) >= det.max_bytes:
                    break
            costs[det.name].append((time.perf_counter() - t0) * 1e6)
    return costs


def replay(rounds: int = 3) -> list[tuple]:
    from egress.drivers.pcap import read_capture
    from egress.engine import Engine
    from egress.inspect.registry import default_detectors
    packets = []
    for path in sorted(SHARED.glob("*.pcap*")):
        packets += list(read_capture(path))
    rows = []
    for label, keep in (("all default detectors", lambda d: True),
                        ("without the protocol detectors", lambda d: d.name not in PROTOCOL_NAMES)):
        best = float("inf")
        for _ in range(rounds):
            engine = Engine(detectors=[d for d in default_detectors() if keep(d)])
            t0 = time.perf_counter()
            for raw in packets:
                engine.process(raw)
            engine.flush()
            engine.drain_events()
            best = min(best, time.perf_counter() - t0)
        rows.append((label, len(packets), len(packets) / best, best / len(packets) * 1e6))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=300)
    ap.add_argument("--no-replay", action="store_true")
    args = ap.parse_args()
    print("## per call (best of 5 x %d)\n" % args.repeat)
    print("| sample | detector | status | us/call |\n|---|---|---|---:|")
    for name, det, status, us in per_call(args.repeat):
        print("| %s | %s | %s | %.1f |" % (name, det, status, us))
    if SHARED.is_dir():
        costs = per_flow()
        print("\n## per flow (real flows, one call per payload packet until decided)\n")
        print("| detector | flows | mean us/flow | max us/flow |\n|---|---:|---:|---:|")
        for name, vals in costs.items():
            if vals:
                print("| %s | %d | %.0f | %.0f |" % (name, len(vals), sum(vals) / len(vals), max(vals)))
        if not args.no_replay:
            rows = replay()
            print("\n## replay of ../shared/pcaps (best of 3)\n")
            print("| engine | packets | packets/s | us/packet |\n|---|---:|---:|---:|")
            for label, n, pps, us in rows:
                print("| %s | %d | %.0f | %.1f |" % (label, n, pps, us))
            print("\nadded by the protocol detectors: %.1f us/packet" % (rows[0][3] - rows[1][3]))


if __name__ == "__main__":
    main()
