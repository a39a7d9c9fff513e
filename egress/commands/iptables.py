"""Show or remove egress's iptables/ip6tables rules (e.g. after a crash).

`egress iptables remove [--netns NAME]`   delete every rule tagged `egress` and the EGRESS-* chains
`egress iptables show [--netns NAME]`     list them
`egress iptables install ...`             install them without running the daemon (testing, appliances)

Idempotent: removing twice is fine. Touches nothing that is not egress's own.
"""
from __future__ import annotations

import argparse
import sys

from egress.drivers.iptables import Iptables, IptablesError, RuleSpec
from egress.drivers.nflog import DEFAULT_WATCH_GROUP


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("remove", "show", "install"))
    p.add_argument("--netns", metavar="NAME", help="run inside this network namespace (ip netns exec)")
    p.add_argument("--queue", default="0", help="install: queue number or A-B")
    p.add_argument("--mode", choices=("gateway", "sidecar"), default="gateway")
    p.add_argument("--sandbox-iface", metavar="IFACE")
    p.add_argument("--sandbox-net", action="append", default=[], metavar="CIDR")
    p.add_argument("--fail-open", action="store_true", help="install: --queue-bypass")
    p.add_argument("--watch-group", default=str(DEFAULT_WATCH_GROUP), metavar="N|off",
                   help="install: the daemon's NFLOG watch group (default %d; 'off': no watch rules)"
                        % DEFAULT_WATCH_GROUP)
    p.add_argument("--watch-slots", type=int, default=1, help="install: workers with their own watch group")


def run(args: argparse.Namespace) -> int:
    ipt = Iptables(args.netns)
    try:
        if args.action == "remove":
            n = ipt.remove()
            print("egress: removed %d rule(s) and the EGRESS chains" % n if n else "egress: no egress rules installed")
        elif args.action == "show":
            for line in ipt.ours():
                print(line)
        else:
            from egress.commands.run import parse_queues, parse_watch_group
            ipt.install(RuleSpec(mode=args.mode, queues=parse_queues(args.queue), bypass=args.fail_open,
                                 sandbox_iface=args.sandbox_iface, sandbox_nets=tuple(args.sandbox_net),
                                 watch_group=parse_watch_group(args.watch_group), watch_slots=args.watch_slots))
    except (IptablesError, ValueError, argparse.ArgumentTypeError) as exc:
        print("egress: %s" % exc, file=sys.stderr)
        return 1
    return 0
