"""The live per-packet path in-process, without a kernel: where a queued packet's time goes.

    python bench/bench_live_path.py [--flows 1500] [--rounds 5]

Feeds the queue driver's callback (`QueueDriver._on_packet`) with stand-ins for
NetfilterQueue packets, built from short TCP connections like bench_live's (handshake,
a request, its echo, close), and only the packets the engine would see live: a flow's
packets until its verdict goes to the connmark, where a WATCH verdict (the classifier
still watches) turns the rest into watch-path copies. Reports microseconds per packet
(minimum and median of `--rounds`) and per connection for:

- the driver alone (an engine stub that allows everything), without and with metrics;
- Engine.process alone: no policy; rules/default.yaml; rules + models/default;
- the whole callback: driver + engine + rules + metrics;

and the cost of one PolicyEngine.decide() on an HTTP flow and on a flow without a name.
No root and no network needed; the kernel's share (netlink receive, verdict,
re-injection) is what bench_live.py measures on top.
"""
from __future__ import annotations

import argparse
import gc
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from egress.config import EngineConfig  # noqa: E402
from egress.drivers.nfqueue import QueueDriver, VerdictBatch  # noqa: E402
from egress.engine import Engine  # noqa: E402
from egress.testing.craft import TcpSession  # noqa: E402
from egress.types import Action, Decision, Mode, RawPacket, Verdict  # noqa: E402

RULES = str(REPO / "rules" / "default.yaml")
MODEL = str(REPO / "models" / "default")
HTTP = b"GET /index.html HTTP/1.1\r\nHost: www.egress.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


class QueuedPacket:
    """What the driver uses of a netfilterqueue.Packet."""
    __slots__ = ("data", "ts", "indev", "mark", "verdict", "id")

    def __init__(self, ts: float, data: bytes, packet_id: int = 1):
        self.data, self.ts, self.indev, self.mark, self.verdict, self.id = data, ts, 0, 0, None, packet_id

    def get_payload(self): return self.data
    def get_timestamp(self): return self.ts
    def get_mark(self): return self.mark
    def set_mark(self, mark): self.mark = mark
    def accept(self): self.verdict = "accept"
    def drop(self): self.verdict = "drop"
    def repeat(self): self.verdict = "repeat"


def connections(n: int, payload: bytes) -> list[list[tuple[float, bytes]]]:
    t0 = time.time() - 10
    out = []
    for i in range(n):
        s = TcpSession(("10.207.1.2", 10000 + i), ("10.207.2.2", 20001), t0=t0 + i * 0.0002, step=0.00002)
        s.handshake(); s.send(True, payload, ack=False); s.send(False, payload, ack=False); s.close()
        out.append(s.packets)
    return out


def make_engine(rules: str | None, model: str | None) -> Engine:
    policy = classifier = None
    if rules:
        from egress.policy import load_policy_engine
        policy = load_policy_engine([rules])
    if model:
        from egress.classify import FlowClassifier
        classifier = FlowClassifier.load(model)
    return Engine(EngineConfig(), policy=policy, classifier=classifier)


def make_driver(engine, metrics: bool) -> QueueDriver:
    observer = None
    if metrics:
        from egress.metrics import Metrics
        observer = Metrics().observe
    return QueueDriver(engine, observer=observer, clock=time.time)


class WatchStub:
    """Stands for the NFLOG reader: the driver then gives watched flows the WATCH mark."""
    sock = None

    def fileno(self): return -1
    def close(self): pass


class MarkerStub:
    """Stands for the conntrack marker: remembers that a flow left the watch path."""
    def __init__(self): self.done = False
    def set_mark(self, flow, action): self.done = True; return True


def queued(conns, rules, model) -> tuple[list[tuple[float, bytes]], int]:
    """The packets the engine sees live and how many of them the kernel queues: each
    flow's packets up to its offloading verdict, except its pure ACKs (the kernel passes
    them: every connection here starts with a SYN); after a WATCH verdict the rest come
    as copies (the watch path), until the driver rewrites the flow's connmark."""
    from egress.decode import decode
    from egress.drivers.iptables import MARK_MASK, MARK_WATCH
    from egress.engine import is_pure_ack
    marker = MarkerStub()
    driver = QueueDriver(make_engine(rules, model), clock=time.time, watch=WatchStub(), marker=marker)
    seen, n_queued = [], 0
    for packets in conns:
        watched, marker.done = False, False
        for ts, data in packets:
            if marker.done:
                break
            if is_pure_ack(decode(RawPacket(ts, data, 101, len(data), None))):
                continue
            seen.append((ts, data))
            if watched:
                driver.on_watched([(ts, data, 0, 0)])
                continue
            pkt = QueuedPacket(ts, data)
            driver._on_packet(pkt)
            n_queued += 1
            if pkt.verdict == "repeat":
                if pkt.mark & MARK_MASK != MARK_WATCH:
                    break
                watched = True
    return seen, n_queued


def per_packet(fn, packets) -> float:
    gc.collect()
    t = time.perf_counter()
    fn(packets)
    return (time.perf_counter() - t) / len(packets) * 1e6


class NullKernel:
    """Takes the verdicts a VerdictBatch sends, as the queue's netlink socket would."""
    def send(self, data): return len(data)


def driver_run(engine, metrics, batch: int = 8):
    """The callback as live reads call it: verdicts go to a VerdictBatch (egress's own
    verdict messages), sent every `batch` packets (a saturated queue's reads)."""
    def run(packets):
        driver = make_driver(engine(), metrics)
        cb, out = driver._on_packet, VerdictBatch(NullKernel(), 0, batch)
        driver._out = out
        for pkt in [QueuedPacket(ts, d, i) for i, (ts, d) in enumerate(packets)]:
            cb(pkt)
            if len(out.pending) >= batch:
                out.flush()
        out.flush()
    return run


def engine_run(rules, model):
    def run(packets):
        process = make_engine(rules, model).process
        for raw in [RawPacket(ts, d, 101, len(d), None) for ts, d in packets]:
            process(raw)
    return run


class AllowAll:
    verdict = Verdict(Action.ALLOW, Mode.ENFORCE, "bench", ())

    def process(self, raw):
        return Decision(Action.ALLOW, self.verdict)


def decide_cost(n: int = 3000) -> dict[str, float]:
    from egress.policy import load_policy_engine
    policy = load_policy_engine([RULES])
    engine = Engine(EngineConfig(), policy=policy)
    out = {}
    for name, payload, port in (("HTTP flow", HTTP, 80), ("flow without a name", b"x", 20001)):
        s = TcpSession(("10.207.1.2", 40000 + port), ("10.207.2.2", port), t0=time.time())
        s.handshake(); s.send(True, payload, ack=False); s.send(False, payload, ack=False)
        for ts, data in s.packets:
            flow = engine.process(RawPacket(ts, data, 101, len(data), None)).flow
        t = time.perf_counter()
        for _ in range(n):
            policy.decide(flow, flow.last_ts if hasattr(flow, "last_ts") else time.time())
        out[name] = (time.perf_counter() - t) / n * 1e6
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flows", type=int, default=1500)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--payload", choices=("byte", "http"), default="byte",
                    help="the request: one byte (no detector concludes before the close) or an HTTP GET")
    args = ap.parse_args()
    conns = connections(args.flows, b"x" if args.payload == "byte" else HTTP)
    (plain, plain_q), (ruled, ruled_q) = queued(conns, None, None), queued(conns, RULES, None)
    try:
        modelled, modelled_q = queued(conns, RULES, MODEL)
    except Exception as exc:         # e.g. a bundle that does not match the code's feature schema
        print("(no model runs: %s)" % str(exc).splitlines()[0])
        modelled, modelled_q = [], 0
    cases = [
        ("driver alone (allow-all engine stub)", driver_run(AllowAll, False), plain),
        ("driver alone + metrics", driver_run(AllowAll, True), plain),
        ("Engine.process, no policy", engine_run(None, None), plain),
        ("Engine.process, rules/default.yaml", engine_run(RULES, None), ruled),
        ("Engine.process, rules + models/default", engine_run(RULES, MODEL), modelled),
        ("callback: driver + engine + rules + metrics", driver_run(lambda: make_engine(RULES, None), True), ruled),
    ]
    cases = [case for case in cases if case[2]]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    for _ in range(args.rounds):
        for name, fn, packets in cases:
            times[name].append(per_packet(fn, packets))
    print("%d connections (%s request); packets per connection the engine sees (queued + watch-path "
          "copies): %.1f + %.1f without rules, %.1f + %.1f with rules, %.1f + %.1f with rules + model"
          % (args.flows, args.payload, plain_q / args.flows, (len(plain) - plain_q) / args.flows,
             ruled_q / args.flows, (len(ruled) - ruled_q) / args.flows,
             modelled_q / args.flows, (len(modelled) - modelled_q) / args.flows))
    print("| per packet the engine sees | us, min | us, median | us per connection (min) |")
    print("|---|---:|---:|---:|")
    counts = {name: len(packets) for name, _, packets in cases}
    for name, values in times.items():
        values.sort()
        print("| %s | %.2f | %.2f | %.0f |" % (name, values[0], values[len(values) // 2],
                                              values[0] * counts[name] / args.flows))
    for name, us in decide_cost().items():
        print("| PolicyEngine.decide, %s (one call) | %.1f | - |" % (name, us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
