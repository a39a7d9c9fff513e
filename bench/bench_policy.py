"""Cost of the policy: decide() per call, observe() per DNS answer batch, load/check per file.

    python bench/bench_policy.py [--calls 20000]

decide() runs a few times per flow (first packet, each new fact/detection/score), never
per packet, so its cost is per flow. The "decide:" cases decide the same flow again and
again (what the engine does as facts arrive); one case takes a new destination each call. Prints a Markdown table for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from egress.flow.flow import Flow  # noqa: E402
from egress.policy import PolicyEngine, load_policy  # noqa: E402
from egress.types import Detection  # noqa: E402


def flow(dst, dport=443, facts=None, detections=(), ml=None, app_proto=None, pkts=4, payload=517, fid=[0]):
    fid[0] += 1
    f = Flow(fid[0], None, 6, 4, ipaddress.ip_address("10.88.0.5").packed, 40000,
             ipaddress.ip_address(dst).packed, dport, 1000.0, "syn")
    f.facts = dict(facts or {})
    f.detections = list(detections)
    f.ml, f.app_proto, f.pkts_toserver, f.payload_toserver, f.inspecting = ml, app_proto, pkts, payload, [1]
    return f


def timed(fn, n):
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    n = ap.parse_args().calls
    default = str(REPO / "rules" / "default.yaml")
    e = PolicyEngine.load([default])
    answers = [{"name": "pypi.org", "type": "A", "data": "151.101.0.223", "ttl": 300},
               {"name": "files.pythonhosted.org", "type": "CNAME", "data": "dualstack.python.map.fastly.net", "ttl": 300},
               {"name": "dualstack.python.map.fastly.net", "type": "A", "data": "151.101.64.223", "ttl": 300}]
    dns = flow("10.0.0.2", 53, facts={"dns.answers": answers}, app_proto="dns")
    cases = [
        ("TLS, SNI on the allowlist (rule 9 of 13)", flow("151.101.0.223", facts={"tls.sni": "pypi.org"})),
        ("TLS, other SNI -> default", flow("192.0.2.1", facts={"tls.sni": "www.example.com"})),
        ("no facts yet (first packet)", flow("192.0.2.1", pkts=1, payload=0)),
        ("mining detection (rule 1)", flow("192.0.2.1", 3333, detections=[Detection("mining", "stratum.v1.subscribe")])),
        ("classifier score, no name", flow("192.0.2.1", ml={"model": "m", "class": "mining", "scores": {"mining": 0.95}},
                                           pkts=50, payload=9000)),
    ]
    rows = []
    e.observe(dns, 999.0)
    for label, f in cases:
        rows.append(("decide: " + label, timed(lambda f=f: e.decide(f, 1000.0), n)))
    # decide() remembers per flow key (addresses, port) which rules can apply: a new
    # destination on every call is its worst case
    new_dest = [flow(str(ipaddress.ip_address("198.18.0.0") + i), pkts=1, payload=0) for i in range(n)]
    it = iter(new_dest)
    rows.append(("decide: no facts yet, a new destination each call (nothing remembered)",
                 timed(lambda: e.decide(next(it), 1000.0), n)))
    fresh = [flow("10.0.0.2", 53, facts={"dns.answers": answers}, app_proto="dns") for _ in range(n)]
    it = iter(fresh)
    rows.append(("observe: 3 DNS answers (new flow)", timed(lambda: e.observe(next(it), 1000.0), n)))
    rows.append(("attribute (no map)", timed(lambda: e.attribute(cases[0][1]), n)))
    loads = max(1, n // 100)
    rows.append(("load + validate rules/default.yaml", timed(lambda: load_policy([default]), loads)))
    print("| measurement | us/call |\n|---|---:|")
    for label, us in rows:
        print("| %s | %.1f |" % (label, us))
    return 0


if __name__ == "__main__":
    sys.exit(main())
