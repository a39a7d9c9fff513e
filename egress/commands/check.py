"""Validate rules files (and a sandbox map): `egress check RULES... [--sandbox-map FILE]`.

Exit 0 when valid, printing one line: what was loaded and the policy digest.
Exit 2 when not, printing one `file:line: reason` line per problem on stderr
(every problem, not just the first).
"""
from __future__ import annotations

import argparse
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("rules", nargs="+", metavar="RULES", help="policy YAML files, merged in order")
    p.add_argument("--sandbox-map", metavar="FILE", help="also validate an address -> sandbox/episode map")
    p.add_argument("--quiet", "-q", action="store_true", help="no output when valid")


def run(args: argparse.Namespace) -> int:
    from egress.policy import PolicyError, load_policy, load_sandbox_map

    errors: list[str] = []
    policy = None
    entries = None
    try:
        policy = load_policy(args.rules)
    except PolicyError as exc:
        errors.extend(exc.lines())
    if args.sandbox_map:
        try:
            entries = load_sandbox_map(args.sandbox_map)
        except PolicyError as exc:
            errors.extend(exc.lines())
    if errors:
        for line in errors:
            print(line, file=sys.stderr)
        return 2
    if not args.quiet:
        extra = ", sandbox map: %d entr%s" % (len(entries), "y" if len(entries) == 1 else "ies") if entries is not None else ""
        print("ok: %s%s" % (policy.summary(), extra))
    return 0
