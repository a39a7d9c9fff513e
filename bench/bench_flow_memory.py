"""Memory of open downloads while their client's side is still inspected (ONEWAY flows).

    python bench/bench_flow_memory.py [--flows 500]

A download's server side spends its inspection budget first; the flow then stays
inspected on the client's side (egress.inspect.stage) for as long as it is open. This
measures what such a flow holds (tracemalloc, bytes per flow, after a full collection),
for a TLS download (a real ClientHello from Python's ssl module, then 20 KB from the
server) and a plain HTTP one. The baseline is the same packets through an engine
without detectors (`signatures=False`): the cost of tracking the flow alone.
"""
from __future__ import annotations

import argparse
import gc
import ssl
import sys
import tracemalloc
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egress.config import EngineConfig  # noqa: E402
from egress.engine import Engine  # noqa: E402
from egress.testing.craft import TcpSession  # noqa: E402
from egress.types import RawPacket  # noqa: E402


def client_hello(name: str = "files.example") -> bytes:
    """The first flight of a real TLS client (Python's ssl over memory BIOs)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ssl.create_default_context().wrap_bio(incoming, outgoing, server_hostname=name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def downloads(kind: str, count: int) -> list[list[tuple[float, bytes]]]:
    hello = client_hello()
    out = []
    for i in range(count):
        s = TcpSession(("10.0.%d.%d" % (i // 250, i % 250 + 1), 40000 + i % 20000), ("10.9.0.1", 443),
                       t0=1_700_000_000.0 + i * 0.001).handshake()
        if kind == "tls":
            s.send(True, hello)
            s.send(False, b"\x16\x03\x03\x00\x30\x02" + b"s" * 47 + b"\x17\x03\x03\x4e\x20" + b"z" * 20000)
        else:
            s.send(True, b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n")
            s.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + b"z" * 20000)
        out.append(s.packets)
    return out


def bytes_per_flow(engine: Engine, flows) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for packets in flows:
        for ts, data in packets:
            engine.process(RawPacket(ts, data, 101))
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    return sum(stat.size_diff for stat in after.compare_to(before, "filename")) / len(flows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=500)
    args = ap.parse_args()
    print("| open download (%d flows) | tracked only (no detectors) | inspected on the client's side | oneway flows |"
          % args.flows)
    print("|---|---:|---:|---:|")
    for kind in ("tls", "http"):
        flows = downloads(kind, args.flows)
        base = bytes_per_flow(Engine(EngineConfig(signatures=False)), flows)
        engine = Engine()
        inspected = bytes_per_flow(engine, flows)
        print("| %s | %.0f B | %.0f B | %d |" % (kind, base, inspected, engine.stats().get("flows.oneway", 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
