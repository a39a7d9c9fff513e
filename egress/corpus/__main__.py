"""`python -m egress.corpus generate --out DIR [--scale tiny|small|full] [--seed N] [--only GLOB]`."""
from __future__ import annotations

import argparse
import sys
from collections import Counter


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m egress.corpus")
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate", help="run the scenarios in network namespaces and record them")
    g.add_argument("--out")
    g.add_argument("--scale", choices=("tiny", "small", "full"), default="small")
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--only", action="append", default=[], metavar="GLOB", help="scenario name glob (repeatable)")
    g.add_argument("--concurrency", type=int, default=8)
    g.add_argument("--list", action="store_true", help="list the scenarios and exit")
    a = ap.parse_args(argv)
    from egress.corpus.generate import generate, scenarios
    if a.list:
        for name, label, _, weight in scenarios():
            print("%-50s %-15s x%d" % (name, label, weight))
        return 0
    if not a.out:
        ap.error("--out is required")
    try:
        labels = generate(a.out, a.scale, a.seed, a.only or None, a.concurrency,
                          log=lambda m: print(m, file=sys.stderr, flush=True))
    except (OSError, RuntimeError) as exc:
        print("egress.corpus: %s" % exc, file=sys.stderr)
        return 2
    print("%d captures: %s" % (len(labels), dict(Counter(lab.label for lab in labels))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
