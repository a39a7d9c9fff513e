"""Cost of the mining detectors: microseconds per call, per flow, and per replayed packet.

    python bench/bench_inspect_mining.py [--repeat N] [--no-replay]

1. per call: each mining detector on typical stream prefixes (a Stratum session that
   matches, and the non-mining traffic every flow shows first: a TLS ClientHello, an
   HTTP request, an SSH banner, random binary, a JSON-lines API);
2. per flow: the streams fed packet by packet (1448-byte segments, or message writes
   for the emulated sessions) to all mining detectors until each decides, as the engine
   does; total microseconds per flow;
3. replay: the captures in ../shared/pcaps (when present) through the engine with all
   default detectors, and with the mining detectors removed: packets/s and the added
   cost per packet.
"""
from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from egress.inspect.base import Status, StreamView  # noqa: E402
from egress.inspect.ethminer import EthMinerDetector  # noqa: E402
from egress.inspect.pool_domain import PoolDomainDetector  # noqa: E402
from egress.inspect.pools import PoolDomains  # noqa: E402
from egress.inspect.stratum import StratumDetector  # noqa: E402
from egress.inspect.stratum_v2 import StratumV2Detector  # noqa: E402
from egress.inspect.ws_mining import WebSocketMiningDetector  # noqa: E402
from egress.inspect.xmr import CryptoNoteDetector  # noqa: E402
from egress.sim.session import run_session  # noqa: E402

MINING_NAMES = {"stratum", "cryptonote", "ethminer", "ws_mining", "stratum_v2", "pool_domain"}


POOLS = PoolDomains.load()       # loaded once, as the engine does (a reload swaps it)


def detectors():
    return [StratumDetector(), CryptoNoteDetector(), EthMinerDetector(), WebSocketMiningDetector(),
            StratumV2Detector(), PoolDomainDetector(POOLS)]


def samples() -> dict[str, tuple[bytes, bytes]]:
    rng = random.Random(1)
    stratum = run_session("stratum", duration=1.0, share_interval=0.02, job_interval=0.1, seed=1)
    xmr = run_session("xmr", duration=1.0, share_interval=0.02, job_interval=0.1, seed=2)
    ws = run_session("xmr", variant="coinhive", websocket=True, duration=0.5, share_interval=0.02, seed=3)
    hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + rng.randbytes(506)
    http = (b"GET /simple/requests/ HTTP/1.1\r\nHost: pypi.org\r\nUser-Agent: pip/24.0\r\n"
            b"Accept: text/html\r\nAccept-Encoding: gzip\r\n\r\n")
    api = b"".join(b'{"id":%d,"method":"chat.post","params":{"text":"hello world %d"}}\n' % (i, i)
                   for i in range(60))
    return {
        "stratum session (match)": (stratum.to_server[:8192], stratum.to_client[:8192]),
        "xmrig session (match)": (xmr.to_server[:8192], xmr.to_client[:8192]),
        "coinhive in websocket (match)": (ws.to_server[:8192], ws.to_client[:8192]),
        "TLS ClientHello": (hello, b""),
        "HTTP GET + 200": (http, b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n"
                           + rng.randbytes(1200)),
        "SSH banners": (b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", b"SSH-2.0-OpenSSH_9.6\r\n"),
        "random binary 1448+1448": (rng.randbytes(1448), rng.randbytes(1448)),
        "JSON-lines API 4 KiB": (api[:4096], b'{"id":1,"result":true}\n' * 40),
    }


def per_call(repeat: int) -> list[tuple]:
    rows = []
    for name, (up, down) in samples().items():
        view = StreamView(6, b"\x0a\0\0\1", 40000, b"\x0a\0\0\2", 443, up, down, sizes=[(0.0, 0, len(up))],
                          facts={"tls.sni": "pypi.org"} if name.startswith("TLS") else {})
        for det in detectors():
            status = det.inspect(view).status
            best = float("inf")
            for _ in range(5):               # best of 5 batches: the machine is shared
                t0 = time.perf_counter()
                for _ in range(repeat):
                    det.inspect(view)
                best = min(best, time.perf_counter() - t0)
            rows.append((name, det.name, status.value, best / repeat * 1e6))
    return rows


def per_flow(repeat: int) -> list[tuple]:
    rows = []
    for name, (up, down) in samples().items():
        # packets: alternate 1448-byte segments of each direction (client first)
        segments = []
        for i in range(0, max(len(up), len(down)), 1448):
            if i < len(up):
                segments.append((0, up[i:i + 1448]))
            if i < len(down):
                segments.append((1, down[i:i + 1448]))
        best = float("inf")
        calls = 0
        for _ in range(repeat):
            live = detectors()
            t0 = time.perf_counter()
            streams = [b"", b""]
            app_proto = None
            for direction, data in segments:
                streams[direction] += data
                view = StreamView(6, b"\x0a\0\0\1", 40000, b"\x0a\0\0\2", 443, streams[0], streams[1],
                                  app_proto=app_proto)
                still = []
                for det in live:
                    calls += 1
                    result = det.inspect(view)
                    if result.app_proto and not app_proto:      # the engine passes it to later detectors
                        app_proto = view.app_proto = result.app_proto
                    if result.status is Status.NEED_MORE and \
                            max(len(streams[0]), len(streams[1])) < det.max_bytes:
                        still.append(det)
                live = still
                if not live:
                    break
            best = min(best, time.perf_counter() - t0)
        rows.append((name, len(segments), calls // repeat, best * 1e6))
    return rows


def replay(pcaps: Path, rounds: int) -> list[tuple]:
    from egress.drivers.pcap import read_capture
    from egress.engine import Engine
    from egress.inspect.registry import default_detectors

    packets = []
    for path in sorted(pcaps.glob("*.pcap*")):
        packets.extend(read_capture(path))
    rows = []
    variants = {
        "all default detectors": lambda: default_detectors(),
        "default minus mining": lambda: [d for d in default_detectors() if d.name not in MINING_NAMES],
        "mining detectors only": lambda: [d for d in default_detectors() if d.name in MINING_NAMES],
        "no detectors": lambda: [],
    }
    for name, make in variants.items():
        best = None
        for _ in range(rounds):
            engine = Engine(detectors=make())
            t0 = time.perf_counter()
            for raw in packets:
                engine.process(raw)
            engine.flush()
            engine.drain_events()
            elapsed = time.perf_counter() - t0
            best = elapsed if best is None else min(best, elapsed)
        rows.append((name, len(packets), best, len(packets) / best, best / len(packets) * 1e6))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-replay", action="store_true")
    parser.add_argument("--pcaps", default=str(ROOT.parent / "shared" / "pcaps"))
    args = parser.parse_args()

    print("## per call (us)\n\n| stream | detector | status | us/call |\n|---|---|---|---:|")
    for name, det, status, us in per_call(args.repeat):
        print("| %s | %s | %s | %.1f |" % (name, det, status, us))
    print("\n## per flow, all mining detectors, packet by packet until decided (best run)\n")
    print("| stream | packets | detector calls | us/flow |\n|---|---:|---:|---:|")
    for name, pkts, calls, us in per_flow(max(10, args.repeat // 10)):
        print("| %s | %d | %d | %.1f |" % (name, pkts, calls, us))
    pcaps = Path(args.pcaps)
    if not args.no_replay and pcaps.is_dir():
        print("\n## replay of %s through the engine (best of %d)\n" % (pcaps, args.rounds))
        print("| detectors | packets | seconds | packets/s | us/packet |\n|---|---:|---:|---:|---:|")
        for name, n, sec, pps, us in replay(pcaps, args.rounds):
            print("| %s | %d | %.3f | %s | %.2f |" % (name, n, sec, format(int(pps), ","), us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
