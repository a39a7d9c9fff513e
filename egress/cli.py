"""`egress` command line: parses arguments and hands over to one command module.

Exit codes (the contract in DESIGN.md): 0 success, 2 bad input (with a one-line
reason on stderr), 1 for anything else that failed.
"""
from __future__ import annotations

import argparse
import importlib
import sys

# (name, module, one-line help). Each module has add_arguments(parser) and run(args) -> int.
COMMANDS = [
    ("replay", "egress.commands.replay", "replay pcap/pcapng files through the engine, write EVE JSON"),
    ("check", "egress.commands.check", "validate rules files (file:line errors), print the policy digest"),
    ("report", "egress.commands.report", "summarize violations per sandbox and episode from EVE JSON"),
    ("run", "egress.commands.run", "run the live gateway (NFQUEUE, iptables rules, SIGHUP reload)"),
    ("iptables", "egress.commands.iptables", "show, install or remove egress's iptables rules (crash clean-up)"),
    ("demo", "egress.commands.demo", "live demo in network namespaces: sandbox, gateway, outside world (root)"),
    ("train", "egress.commands.train", "train the flow classifier from labelled captures, write a model bundle"),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="egress", description="Inline egress firewall and flow classifier for sandboxes.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, module_name, help_text in COMMANDS:
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=(module.__doc__ or help_text).strip().splitlines()[0])
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("egress: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
