"""Run the live gateway: bind NFQUEUE, install egress's iptables rules, enforce verdicts.

`egress run [--queue N|A-B] [--rules FILE]... [--model DIR] [--eve FILE] [--metrics HOST:PORT]
            [--sandbox-iface IFACE] [--sandbox-net CIDR]... [--fail-open|--fail-closed]
            [--mode gateway|sidecar] [--cpus LIST]`

Run it inside the gateway's network namespace (or the sandbox's, for --mode sidecar).
`--cpus LIST` (e.g. `1`, `0-1`, `0,2-3`) pins the daemon to those CPUs; with --workers,
worker i gets the single CPU LIST[i % len(LIST)]. Like Suricata's cpu-affinity: the packet
path keeps its caches warm, and the operator can keep the NIC's interrupt and softirq work
(IRQ affinity, RPS) on the other CPUs. A list that is malformed or names a CPU this process
may not use (os.sched_getaffinity) is bad input: one line, exit 2.

SIGHUP reloads rules and model and reopens the EVE file; SIGTERM drains, removes the
rules and exits 0. Exit 2 with a one-line reason on bad input, 1 on other failures.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from egress.daemon import Daemon, DaemonConfig, StartupError
from egress.drivers.nflog import DEFAULT_WATCH_GROUP


def parse_queues(text: str) -> tuple[int, ...]:
    first, _, last = text.partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError:
        raise argparse.ArgumentTypeError("queue must be N or A-B, not %r" % text) from None
    if not 0 <= lo <= hi <= 65535:
        raise argparse.ArgumentTypeError("bad queue range %r" % text)
    return tuple(range(lo, hi + 1))


def parse_watch_group(text: str) -> int | None:
    if text in ("off", "none"):
        return None
    try:
        group = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("watch group must be a number or 'off', not %r" % text) from None
    if not 0 <= group <= 65535 - 16:
        raise argparse.ArgumentTypeError("watch group must be 0..%d" % (65535 - 16))
    return group


def parse_cpus(text: str) -> tuple[int, ...]:
    """A CPU list as taskset/cpuset write it: "1", "0-1", "0,2-3" -> the CPUs in the order
    given (the order of --workers' round robin). ValueError with a one-line reason."""
    cpus: list[int] = []
    for item in text.split(","):
        first, dash, last = item.strip().partition("-")
        try:
            lo, hi = int(first), int(last) if dash else int(first)
        except ValueError:
            raise ValueError("CPU list must be N, A-B or a comma-separated list of them, not %r" % text) from None
        if lo < 0 or hi < lo:
            raise ValueError("bad CPU range %r in %r" % (item.strip(), text))
        for cpu in range(lo, hi + 1):
            if cpu in cpus:
                raise ValueError("CPU %d twice in %r" % (cpu, text))
            cpus.append(cpu)
    return tuple(cpus)


def check_cpus(text: str, available: set[int] | None = None) -> tuple[int, ...]:
    """parse_cpus, and every CPU must be one this process may run on (sched_getaffinity):
    ValueError with a one-line reason otherwise."""
    cpus = parse_cpus(text)
    available = set(os.sched_getaffinity(0)) if available is None else set(available)
    missing = [cpu for cpu in cpus if cpu not in available]
    if missing:
        raise ValueError("CPU %s not available (this process may use %s)"
                         % (",".join(map(str, missing)), format_cpus(sorted(available))))
    return cpus


def parse_verdict_batch(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("verdict batch must be a number, not %r" % text) from None
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError("verdict batch must be 1..1024, not %d" % n)
    return n


def parse_flow_timeout(text: str) -> tuple[str, float]:
    """NAME=SECONDS with NAME a field of egress.config.Timeouts (tcp_established=600)."""
    from dataclasses import fields
    from egress.config import Timeouts
    names = [f.name for f in fields(Timeouts)]
    name, eq, value = text.partition("=")
    if not eq or name.strip() not in names:
        raise argparse.ArgumentTypeError("flow timeout must be NAME=SECONDS with NAME one of %s, not %r"
                                         % (", ".join(names), text))
    try:
        seconds = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError("flow timeout %s: %r is not a number of seconds" % (name, value)) from None
    if not 0 < seconds < 10 ** 9:
        raise argparse.ArgumentTypeError("flow timeout %s must be more than 0 seconds" % name)
    return name.strip(), seconds


def format_cpus(cpus) -> str:
    """(0, 1, 2, 5) -> "0-2,5"."""
    out: list[str] = []
    cpus = list(cpus)
    i = 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        out.append(str(cpus[i]) if i == j else "%d-%d" % (cpus[i], cpus[j]))
        i = j + 1
    return ",".join(out)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--queue", type=parse_queues, default=(0,), metavar="N|A-B",
                   help="NFQUEUE number or range (a range spreads connections round robin; default 0)")
    p.add_argument("--rules", action="append", default=[], metavar="FILE", help="policy YAML (repeatable)")
    p.add_argument("--model", metavar="DIR", help="classifier model bundle")
    p.add_argument("--sandbox-map", metavar="FILE", help="address -> sandbox/episode mapping file")
    p.add_argument("--eve", metavar="FILE", help="EVE JSON output file ('-' for stdout)")
    p.add_argument("--sandbox-api", metavar="HOST:PORT|unix:PATH",
                   help="serve the attribution API (register sandboxes/episodes, query violations) on a "
                        "loopback address or a unix socket")
    p.add_argument("--metrics", default="127.0.0.1:9108", metavar="HOST:PORT",
                   help="Prometheus endpoint (default 127.0.0.1:9108; 'off' for none). A non-loopback "
                        "address gets an INPUT rule dropping the sandbox side's access to it")
    p.add_argument("--sandbox-iface", metavar="IFACE", help="the gateway's interface toward the sandboxes")
    p.add_argument("--sandbox-net", action="append", default=[], metavar="CIDR",
                   help="sandbox address range (repeatable; used when no --sandbox-iface is given)")
    p.add_argument("--mode", choices=("gateway", "sidecar"), default="gateway",
                   help="gateway: FORWARD traffic; sidecar: OUTPUT/INPUT of this namespace")
    fail = p.add_mutually_exclusive_group()
    fail.add_argument("--fail-open", dest="fail_open", action="store_true",
                      help="accept traffic when the daemon is gone (--queue-bypass) or the queue is full")
    fail.add_argument("--fail-closed", dest="fail_open", action="store_false",
                      help="drop in both cases (default)")
    p.add_argument("--on-error", choices=("drop", "allow"), default="drop",
                   help="what an internal error does to the packet's flow (default drop)")
    p.add_argument("--gso", action="store_true",
                   help="queue GSO super-packets unsegmented (cheaper, but the engine sees only their first "
                        "--copy-range bytes; default: the kernel segments them)")
    p.add_argument("--no-fast-path", action="store_true",
                   help="never hand decided flows to the kernel (connmark): queue every packet (benchmarks)")
    p.add_argument("--busy-poll", type=float, default=0.0, metavar="USEC",
                   help="after a packet, keep polling the queue for USEC microseconds before sleeping "
                        "(lower latency per queued packet at the cost of CPU; default 0)")
    p.add_argument("--verdict-batch", type=parse_verdict_batch, default=8, metavar="N",
                   help="send up to N verdicts to the kernel in one system call while packets that had "
                        "already arrived are handled; the first packet of each read is answered at once "
                        "(default 8; 1: one call per packet)")
    p.add_argument("--flow-timeout", type=parse_flow_timeout, action="append", default=[], metavar="NAME=SECONDS",
                   help="a flow timeout of the engine (repeatable): tcp_new, tcp_established, tcp_closed, udp, other, "
                        "absolute (defaults 30, 600, 10, 120, 30, 86400). A fast-pathed connection outlives its "
                        "idle timeout in the flow table while conntrack has it open, so a reload can still revoke it")
    p.add_argument("--watch-group", type=parse_watch_group, default=DEFAULT_WATCH_GROUP, metavar="N|off",
                   help="NFLOG group of the watch path (default %d): once an allowed flow needs no more "
                        "inline verdicts but the classifier still watches it, its packets pass in the "
                        "kernel and copies come here; 'off' keeps such flows in the queue" % DEFAULT_WATCH_GROUP)
    # Set by the supervisor of --workers for each worker: its slot and its peers.
    p.add_argument("--slot", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--peers", metavar="TOKEN:COUNT", help=argparse.SUPPRESS)
    p.add_argument("--copy-range", type=int, default=1500, help="bytes of each packet copied to us (<= 1500)")
    p.add_argument("--queue-maxlen", type=int, default=4096, help="kernel queue length")
    p.add_argument("--no-rules", action="store_true",
                   help="do not install iptables rules (they exist already, e.g. from `egress iptables install` "
                        "with the same --queue and --watch-group)")
    p.add_argument("--no-signatures", action="store_true", help="protocol detectors off (classifier alone)")
    p.add_argument("--workers", action="store_true",
                   help="with a queue range: one worker process per queue (scale-out past the GIL); each "
                        "writes FILE.qN for --eve FILE and serves metrics on PORT+index")
    p.add_argument("--cpus", metavar="LIST",
                   help="pin the daemon to these CPUs (e.g. 1, 0-1, 0,2); with --workers, worker i gets CPU "
                        "LIST[i %% len(LIST)]. Keeps the packet path's caches warm and leaves the other CPUs "
                        "to NIC interrupts and softirq work (IRQ affinity, RPS)")
    p.add_argument("--verbose", "-v", action="store_true")


def config_from_args(args: argparse.Namespace) -> DaemonConfig:
    return DaemonConfig(
        queues=tuple(args.queue), rules=list(args.rules), model=args.model, sandbox_map=args.sandbox_map,
        eve=args.eve, metrics=None if args.metrics in ("off", "none", "") else args.metrics,
        sandbox_iface=args.sandbox_iface, sandbox_nets=tuple(args.sandbox_net), mode=args.mode,
        fail_open=args.fail_open, bypass=args.fail_open, gso=args.gso, copy_range=args.copy_range,
        queue_maxlen=args.queue_maxlen, exception_action=args.on_error, install_rules=not args.no_rules,
        signatures=not args.no_signatures, fast_path=not args.no_fast_path, sandbox_api=args.sandbox_api,
        busy_poll=max(0.0, args.busy_poll) / 1e6, verdict_batch=args.verdict_batch,
        watch_group=args.watch_group, slot=args.slot,
        peers=args.peers, cpus=parse_cpus(args.cpus) if args.cpus else (), flow_timeouts=tuple(args.flow_timeout))


def worker_argv(args: argparse.Namespace, index: int, queue: int) -> list[str]:
    """The command line of one worker of `--workers`: this one, for a single queue, without rules."""
    argv = [sys.executable, "-m", "egress.cli", "run", "--queue", str(queue), "--no-rules",
            "--mode", args.mode, "--on-error", args.on_error, "--copy-range", str(args.copy_range),
            "--queue-maxlen", str(args.queue_maxlen), "--fail-open" if args.fail_open else "--fail-closed",
            "--busy-poll", "%g" % args.busy_poll, "--verdict-batch", str(args.verdict_batch)]
    argv += ["--slot", str(index), "--peers", "%d:%d" % (os.getpid(), len(args.queue))]
    argv += ["--watch-group", "off" if args.watch_group is None else str(args.watch_group)]
    for path in args.rules:
        argv += ["--rules", path]
    if args.cpus:
        cpus = parse_cpus(args.cpus)
        argv += ["--cpus", str(cpus[index % len(cpus)])]
    for name, seconds in args.flow_timeout:
        argv += ["--flow-timeout", "%s=%r" % (name, seconds)]
    for flag, value in (("--model", args.model), ("--sandbox-map", args.sandbox_map)):
        if value:
            argv += [flag, value]
    if args.eve:
        base, dot, ext = args.eve.rpartition(".")
        argv += ["--eve", args.eve if args.eve == "-" else ("%s.q%d.%s" % (base, queue, ext) if dot
                                                             else "%s.q%d" % (args.eve, queue))]
    metrics = None if args.metrics in ("off", "none", "") else args.metrics
    if metrics:
        host, _, port = metrics.rpartition(":")
        metrics = "%s:%d" % (host, int(port) + index)
    argv += ["--metrics", metrics or "off"]
    for flag, on in (("--gso", args.gso), ("--no-fast-path", args.no_fast_path),
                     ("--no-signatures", args.no_signatures), ("-v", args.verbose)):
        if on:
            argv.append(flag)
    return argv


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s",
                        stream=sys.stderr)
    logging.getLogger("egress.daemon").setLevel(logging.INFO)
    if args.cpus:
        try:
            check_cpus(args.cpus)
        except ValueError as exc:
            print("egress: --cpus %s: %s" % (args.cpus, exc), file=sys.stderr)
            return 2
    if args.workers and len(args.queue) > 1:
        return run_workers(args)
    daemon = Daemon(config_from_args(args))
    daemon.install_signal_handlers()
    try:
        daemon.start()
        print("egress: ready", file=sys.stderr, flush=True)
        daemon.serve()
    except StartupError as exc:
        print("egress: %s" % exc, file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError) as exc:
        print("egress: %s" % exc, file=sys.stderr)
        return 1
    finally:
        daemon.stop()
    return 0


def run_workers(args: argparse.Namespace) -> int:
    from egress.daemon import Supervisor
    supervisor = Supervisor(config_from_args(args), lambda index, queue: worker_argv(args, index, queue))
    supervisor.install_signal_handlers()
    try:
        return supervisor.run()
    except StartupError as exc:
        print("egress: %s" % exc, file=sys.stderr)
        return 2
    except (OSError, RuntimeError, ValueError) as exc:
        print("egress: %s" % exc, file=sys.stderr)
        return 1
