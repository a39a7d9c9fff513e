"""Live gateway benchmark: sbx -> gw (egress run) -> ext in throw-away namespaces.

    python bench/bench_live.py [--seconds 3] [--rounds 3] [--busy-poll 200] [--pinned yes|no|only]
                               [--append BENCHMARKS.md]

Every measurement runs against a baseline through the same namespaces without egress,
in the same run:

- bulk TCP throughput (one connection, sbx -> ext): baseline / egress (fast path on) /
  egress with every packet queued (--no-fast-path);
- bulk TCP download (one connection, ext -> sbx, after a one-line request): the client's
  side of a download stays inspected (egress.inspect.stage, ONEWAY), the server's data
  passes in the kernel;
- latency: TCP ping-pong of 1-byte messages on one connection; egress with every packet
  queued, so each round trip crosses the queue twice: added latency per queued packet =
  (RTT - baseline RTT) / 2, p50 and p99;
- new connections per second (connect, request, echo, the server closes, so does the
  client; 2 client processes with 1 or 8 connections in flight each; a 1-byte request,
  on which no detector can conclude before the close, or an HTTP GET), every connection
  fully inspected by egress until it is decided; without rules, and with
  rules/default.yaml + models/default, with --busy-poll, and with two worker processes
  (--queue 0-1 --workers); and once for `--long` seconds with rules and model (the steady
  state: flows then also end, and their flow events are built, inside the run);
- new connections per second with rules and model, the daemon pinned to the last CPU
  (`--cpus LAST`) and the receive work of the remote hosts' stacks (sbx's and ext's eth0)
  steered by RPS to the other CPUs, baseline rounds included; and two workers pinned one
  per CPU (`--pinned`, see below);
- bulk TCP with rules/default.yaml and models/default loaded: flows must still reach the
  kernel fast path;
- verdicts per second on the queue path (packets egress answered / second, from the
  kernel's queue counters) during the all-queued bulk run;
- small-packet flood: UDP datagrams of 16 bytes, each to a new port (a new flow each), for
  `--seconds`: what was sent, what arrived in ext, what the kernel dropped at the queue
  (queue full / netlink buffer full), what egress answered; fail-closed and fail-open.

Why the pinned runs: here sbx, gw and ext are namespaces on one machine joined by veth.
A veth delivers a packet through the receiving namespace's backlog, and without RPS the
softirq that drains it runs at once on the sending CPU, inside the sender's syscall. A
verdict that egress re-injects is forwarded to a veth, so the whole TCP work of the
receiving host (the server's SYN handling, accept wake-ups, the answer coming back and
being queued again) runs inside the daemon's verdict syscall and is charged to it: work of
the *remote hosts*, which on a real gateway are other machines (the sandbox host, the
Internet servers). RPS on sbx's and ext's eth0 (Topology.set_rps) moves that work to the
other CPUs, and `egress run --cpus` keeps the daemon on its own CPU, as an operator would
keep a gateway's NIC interrupts and softirqs (IRQ affinity, RPS) away from the packet path.
The baseline rounds of these runs use the same RPS setting (the baseline also benefits);
the masks are reset afterwards. Then two workers pinned one per CPU (`--cpus 0,1`), without
RPS: on two CPUs none is free of egress, and RPS on both measured worse than none (the
receive work interrupts the other worker). The other runs are unchanged (no RPS, no pinning).
`--pinned no` skips these runs, `--pinned only` runs only them.

Bounded: every load loop stops after `--seconds` and a packet/connection cap. Traffic only
ever flows between the benchmark's own namespaces (egl2-*, 10.207.0.0/16).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from egress.drivers.netns import Topology  # noqa: E402
from egress.drivers.nflog import DEFAULT_WATCH_GROUP  # noqa: E402

PY = sys.executable

SERVER = r"""
import socket, sys, time, threading
mode, host, port, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(512); s.settimeout(0.2)
print("ready", flush=True)
end = time.time() + seconds
while time.time() < end:
    try:
        c, _ = s.accept()
    except socket.timeout:
        continue
    if mode == "source":
        def source(c):
            buf = b"\0" * (1 << 20)
            try:
                c.recv(4096)
                while True:
                    c.sendall(buf)
            except OSError:
                pass
            c.close()
        threading.Thread(target=source, args=(c,), daemon=True).start()
    elif mode == "sink":
        def sink(c):
            while c.recv(1 << 20):
                pass
            c.close()
        threading.Thread(target=sink, args=(c,), daemon=True).start()
    elif mode == "pingpong":
        def pp(c):
            while True:
                d = c.recv(64)
                if not d:
                    break
                c.sendall(d)
            c.close()
        threading.Thread(target=pp, args=(c,), daemon=True).start()
    else:  # conn: one request, one answer (the same bytes), close
        try:
            c.settimeout(1); d = c.recv(4096); c.sendall(d)
        except OSError:
            pass
        c.close()
"""

BULK = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
buf = b"\0" * (1 << 20); n = 0; t = time.time()
while time.time() - t < seconds:
    s.sendall(buf); n += len(buf)
el = time.time() - t; s.close()
print(n * 8 / el / 1e9)
"""

DOWNLOAD = r"""
import socket, sys, time
host, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
s.sendall(b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n")
n = 0; t = time.time()
while time.time() - t < seconds:
    n += len(s.recv(1 << 20))
el = time.time() - t; s.close()
print(n * 8 / el / 1e9)
"""

PINGPONG = r"""
import socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for i in range(count):
    t = time.perf_counter(); s.sendall(b"x"); s.recv(1); rtts.append((time.perf_counter() - t) * 1e6)
s.close()
rtts = sorted(rtts[50:])
print(rtts[len(rtts) // 2], rtts[int(len(rtts) * 0.99)])
"""

CONNS = r"""
import errno, selectors, socket, sys, time
host, port, seconds, cap, inflight, payload = (sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[4]),
                                               int(sys.argv[5]), sys.argv[6].encode().decode("unicode_escape").encode("latin-1"))
# `inflight` connections at a time, each: connect, send the request, read the echo, close.
sel = selectors.DefaultSelector()
ok = bad = started = 0; t = time.time(); end = t + seconds
def start():
    global started
    s = socket.socket(); s.setblocking(False); started += 1
    err = s.connect_ex((host, port))
    if err not in (0, errno.EINPROGRESS):
        s.close(); return False
    sel.register(s, selectors.EVENT_WRITE, [time.time(), b""])
    return True
for _ in range(inflight):
    bad += not start()
while sel.get_map():
    for key, ev in sel.select(0.5):
        s, state = key.fileobj, key.data
        try:
            if ev & selectors.EVENT_WRITE:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    raise OSError("connect")
                s.send(payload); sel.modify(s, selectors.EVENT_READ, state); continue
            d = s.recv(4096)
            if d:
                # Read until the server's close: a client that closes first keeps its side
                # in TIME_WAIT, and at a few thousand connections/s the port range runs out
                # within seconds (connect() then crawls; measured with egress's latency).
                state[1] += d
                continue
            ok += state[1] == payload; bad += state[1] != payload
        except OSError:
            bad += 1
        sel.unregister(s); s.close()
        if time.time() < end and started < cap:
            bad += not start()
    now = time.time()
    for key in list(sel.get_map().values()):
        if now - key.data[0] > 3:
            sel.unregister(key.fileobj); key.fileobj.close(); bad += 1
print(ok, bad, time.time() - t)
"""

HTTP_REQUEST = "GET /index.html HTTP/1.1\\r\\nHost: www.egress.test\\r\\nUser-Agent: bench\\r\\nAccept: */*\\r\\n\\r\\n"

FLOOD = r"""
import socket, sys, time
host, seconds, cap = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setblocking(False)
n = 0; t = time.time(); payload = b"f" * 16
while time.time() - t < seconds and n < cap:
    try:
        s.sendto(payload, (host, 1024 + n % 60000)); n += 1
    except BlockingIOError:
        time.sleep(0.0005)
print(n)
"""


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (the workers of `egress run --workers`)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(open("/proc/%s/stat" % entry).read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == pid:
                out.append(int(entry))
    return out


class Bench:
    def __init__(self, topo: Topology, seconds: float, workdir: Path):
        self.topo, self.seconds, self.work = topo, seconds, workdir
        self.ext = topo.addr.ext4
        self.gw = None
        self.port = 20000
        self.queues = (0,)          # the rules' queues: (0, 1) for the --workers run
        self.last_cpu_split = [0.0, 0.0]   # the daemon's user and system us/connection in the last conns()

    def server(self, mode: str) -> int:
        self.port += 1
        p = self.topo.popen("ext", [PY, "-c", SERVER, mode, self.ext, str(self.port), "600"], stdout=subprocess.PIPE,
                            text=True)
        assert p.stdout.readline().strip() == "ready"
        return self.port

    def sbx(self, code: str, *args) -> str:
        return self.topo.run("sbx", PY, "-c", code, *map(str, args), timeout=self.seconds * 4 + 30).stdout.strip()

    def start_egress(self, *extra: str) -> None:
        """The daemon without its rules: rules() switches them on and off between rounds,
        so baseline and egress rounds alternate under the same machine load."""
        log = open(self.work / "egress.log", "a")
        self.gw = self.topo.popen("gw", [PY, "-m", "egress.cli", "run", "--sandbox-iface", self.topo.sbx_iface,
                                         "--no-rules", *extra], stdout=subprocess.DEVNULL,
                                  stderr=log)
        deadline = time.monotonic() + 20
        while "egress: ready" not in (self.work / "egress.log").read_text().split("egress: stopped")[-1]:
            if time.monotonic() > deadline or self.gw.poll() is not None:
                raise RuntimeError((self.work / "egress.log").read_text()[-500:])
            time.sleep(0.05)

    def rules(self, on: bool, fail_open: bool = False) -> None:
        from egress.drivers.iptables import Iptables, RuleSpec
        ipt = Iptables(self.topo.ns["gw"])
        if on:
            ipt.install(RuleSpec(sandbox_iface=self.topo.sbx_iface, bypass=fail_open, queues=self.queues,
                                 watch_group=DEFAULT_WATCH_GROUP, watch_slots=len(self.queues)))
        else:
            ipt.remove()

    def stop_egress(self) -> None:
        if self.gw is not None:
            self.gw.send_signal(signal.SIGTERM)
            self.gw.wait(20)
            self.gw = None

    def queue_stats(self) -> dict:
        out = self.topo.run("gw", "cat", "/proc/net/netfilter/nfnetlink_queue", check=False).stdout.split()
        if len(out) < 8:
            return {"dropped": 0, "user_dropped": 0, "seq": 0}
        return {"dropped": int(out[5]), "user_dropped": int(out[6]), "seq": int(out[7])}

    # -- measurements ----------------------------------------------------------------------

    def bulk(self) -> float:
        return float(self.sbx(BULK, self.ext, self.server("sink"), self.seconds))

    def download(self) -> float:
        return float(self.sbx(DOWNLOAD, self.ext, self.server("source"), self.seconds))

    def bulk_with_rate(self) -> tuple[float, float]:
        before = self.queue_stats()["seq"]
        t = time.time()
        gbit = self.bulk()
        rate = (self.queue_stats()["seq"] - before) / (time.time() - t)
        return gbit, rate

    def pingpong(self, count: int = 3000) -> tuple[float, float]:
        p50, p99 = self.sbx(PINGPONG, self.ext, self.server("pingpong"), count).split()
        return float(p50), float(p99)

    def daemon_cpu(self) -> float:
        """CPU seconds (user + system) used so far by the daemon and its workers."""
        if self.gw is None:
            return 0.0
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for pid in [self.gw.pid] + _children(self.gw.pid):
            try:
                fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def daemon_cpu_split(self) -> tuple[float, float]:
        """daemon_cpu() as (user, system) seconds."""
        if self.gw is None:
            return (0.0, 0.0)
        tick = os.sysconf("SC_CLK_TCK")
        user = system = 0.0
        for pid in [self.gw.pid] + _children(self.gw.pid):
            try:
                fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            user += int(fields[11]) / tick
            system += int(fields[12]) / tick
        return (user, system)

    def conns(self, clients: int = 2, inflight: int = 1, payload: str = "x",
              seconds: float | None = None) -> tuple[float, int, float]:
        """New connections per second: `clients` processes with `inflight` connections each;
        with the daemon's CPU microseconds per connection during the run (0 for the baseline)."""
        cpu_before = self.daemon_cpu()
        split_before = self.daemon_cpu_split()
        port = self.server("conn")
        seconds = seconds or self.seconds
        procs = [self.topo.popen("sbx", [PY, "-c", CONNS, self.ext, str(port), str(seconds), "1000000",
                                         str(inflight), payload], stdout=subprocess.PIPE, text=True)
                 for _ in range(clients)]
        total_ok = total_bad = 0
        elapsed = 0.0
        for p in procs:
            ok, bad, el = p.stdout.read().split()
            p.wait(30)
            total_ok, total_bad, elapsed = total_ok + int(ok), total_bad + int(bad), max(elapsed, float(el))
        cpu_us = (self.daemon_cpu() - cpu_before) / max(total_ok, 1) * 1e6
        split_after = self.daemon_cpu_split()
        self.last_cpu_split = [(after - before) / max(total_ok, 1) * 1e6
                               for before, after in zip(split_before, split_after)]
        return total_ok / elapsed, total_bad, cpu_us

    def flood(self) -> dict:
        self.topo.run("ext", "iptables", "-w", "-F", "INPUT")
        self.topo.run("ext", "iptables", "-w", "-A", "INPUT", "-p", "udp")
        before = self.queue_stats()
        sent = int(self.sbx(FLOOD, self.ext, self.seconds, 2_000_000))
        time.sleep(0.5)
        after = self.queue_stats()
        out = self.topo.run("ext", "iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").stdout.splitlines()
        arrived = int(out[2].split()[0])
        return {"sent": sent, "arrived": arrived, "queue_full": after["dropped"] - before["dropped"],
                "netlink_full": after["user_dropped"] - before["user_dropped"], "answered": after["seq"] - before["seq"]}


CONN_VARIANTS = (("1-byte request, 2 clients x 1", 2, 1, "x"),
                 ("1-byte request, 2 clients x 8 in flight", 2, 8, "x"),
                 ("HTTP GET, 2 clients x 8 in flight", 2, 8, HTTP_REQUEST))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=3, help="alternating baseline/egress rounds (median reported)")
    ap.add_argument("--busy-poll", type=float, default=200.0, metavar="USEC",
                    help="the --busy-poll value of the busy-polling runs (default 200; 0: no such runs)")
    ap.add_argument("--long", type=float, default=20.0, metavar="SECONDS",
                    help="one HTTP GET run of this length with rules and model, for the steady state (0: none)")
    ap.add_argument("--pinned", choices=("yes", "no", "only"), default="yes",
                    help="the runs with the daemon pinned (--cpus) and the remote stacks' receive work steered "
                         "to the other CPUs by RPS: yes (default), no, or only these runs")
    ap.add_argument("--append", metavar="FILE", help="append the results as a markdown section")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_live: needs root (network namespaces, NFQUEUE)", file=sys.stderr)
        return 2
    results: dict = {"load_before": os.getloadavg()[0]}
    med = lambda xs: sorted(xs)[len(xs) // 2]
    repo = Path(__file__).resolve().parent.parent
    model_args = ["--rules", str(repo / "rules" / "default.yaml"), "--model", str(repo / "models" / "default")]
    busy = ["--busy-poll", "%g" % args.busy_poll]
    with tempfile.TemporaryDirectory() as tmp, Topology(subnet4="10.207.0.0/16", subnet6="fd07:207::/48",
                                                        prefix="egl2-") as topo:
        work = Path(tmp)
        b = Bench(topo, args.seconds, work)

        def alternating(measure) -> tuple[list, list]:
            """`args.rounds` rounds of `measure()`, baseline then egress, under the same load."""
            base, egress = [], []
            for _ in range(args.rounds):
                b.rules(False); base.append(measure())
                b.rules(True); egress.append(measure())
            return base, egress

        def long_run() -> dict:
            """One HTTP GET run of `--long` seconds, baseline then egress: the steady state."""
            b.rules(False); base = b.conns(2, 8, HTTP_REQUEST, args.long)
            b.rules(True); egress = b.conns(2, 8, HTTP_REQUEST, args.long)
            return {"baseline": base, "egress": egress, "egress_user_sys_us": b.last_cpu_split}

        def bulk_rounds(key: str, measure=None) -> None:
            base, fast = alternating(measure or b.bulk)
            results[key] = {"baseline": med(base), "egress": med(fast), "rounds": {"baseline": base, "egress": fast}}

        def conn_rounds(key: str) -> None:
            out = results.setdefault(key, {})
            for name, clients, inflight, payload in CONN_VARIANTS:
                b.rules(False); base = b.conns(clients, inflight, payload)
                b.rules(True); egress = b.conns(clients, inflight, payload)
                out[name] = {"baseline": base, "egress": egress, "egress_user_sys_us": b.last_cpu_split}

        def goal_runs(key: str) -> None:
            """The goal's own case (HTTP GET, 2 x 8, rules + model) measured again with the
            running daemon: alternating rounds, then the steady state."""
            base, egress = alternating(lambda: b.conns(2, 8, HTTP_REQUEST)[0])
            results[key + "_rounds"] = {"baseline": base, "egress": egress}
            if args.long > 0:
                results[key + "_long"] = long_run()

        def pinned_runs() -> None:
            """Rules + model with the daemon pinned to the last CPU and the remote stacks'
            receive work (sbx's and ext's eth0) steered by RPS to the other CPUs, baselines
            included; then two workers pinned one per CPU, without RPS: with two workers on two
            CPUs no CPU is free of egress, and RPS on every CPU measured worse than none (the
            receive work then interrupts the other worker: on 2 vCPUs, HTTP GET, the workers'
            system time rose from ~117 to ~143 us/connection and connections/s fell by about a
            sixth, ~2,900 -> ~2,400, four runs each). The masks are reset afterwards."""
            cpus = sorted(os.sched_getaffinity(0))
            if len(cpus) < 2:
                results["pinned_skipped"] = "needs at least 2 CPUs, this process may use %d" % len(cpus)
                return
            last, others = cpus[-1], cpus[:-1]
            results["pinned"] = {"daemon": [last], "rps": others, "workers": cpus[:2]}
            try:
                for role in ("sbx", "ext"):
                    topo.set_rps(role, others)
                print("egress with rules and model pinned to CPU %d, RPS of sbx/ext on CPU %s ..."
                      % (last, ",".join(map(str, others))), file=sys.stderr)
                b.start_egress(*model_args, "--cpus", str(last))
                conn_rounds("conns_model_pinned")
                goal_runs("conns_model_pinned")
                b.rules(False)
                b.stop_egress()
                for role in ("sbx", "ext"):
                    topo.set_rps(role, ())
                print("egress with rules and model, two workers pinned to CPUs %d,%d, no RPS ..."
                      % (cpus[0], cpus[1]), file=sys.stderr)
                b.queues = (0, 1)
                b.start_egress(*model_args, "--queue", "0-1", "--workers", "--cpus", "%d,%d" % (cpus[0], cpus[1]))
                conn_rounds("conns_model_workers_pinned")
                b.rules(False)
                b.stop_egress()
            finally:
                b.queues = (0,)
                for role in ("sbx", "ext"):
                    topo.set_rps(role, ())

        if args.pinned == "only":
            try:
                pinned_runs()
            except RuntimeError as exc:        # e.g. a model bundle that does not match the code
                results["model_error"] = str(exc).strip().splitlines()[-1]
                print("bench_live: the model run could not start: %s" % results["model_error"], file=sys.stderr)
        else:
            print("egress without rules or model (fast path) against the baseline, alternating ...", file=sys.stderr)
            b.start_egress()
            bulk_rounds("bulk_plain")
            bulk_rounds("download_plain", b.download)
            conn_rounds("conns_plain")
            b.rules(False); results["flood_base"] = b.flood()
            b.rules(True); results["flood_closed"] = b.flood()
            b.rules(False)
            b.stop_egress()

            print("egress with rules/default.yaml and models/default ...", file=sys.stderr)
            try:
                b.start_egress(*model_args)
            except RuntimeError as exc:            # e.g. a model bundle that does not match the code
                results["model_error"] = str(exc).strip().splitlines()[-1]
                print("bench_live: the model run could not start: %s" % results["model_error"], file=sys.stderr)
            else:
                bulk_rounds("bulk_model")
                bulk_rounds("download_model", b.download)
                conn_rounds("conns_model")
                if args.long > 0:
                    results["conns_model_long"] = {"HTTP GET, 2 clients x 8 in flight, %g s" % args.long: long_run()}
                b.rules(False)
                b.stop_egress()
                if args.busy_poll > 0:
                    print("egress with rules, model and --busy-poll %g ..." % args.busy_poll, file=sys.stderr)
                    b.start_egress(*model_args, *busy)
                    conn_rounds("conns_model_busy")
                    b.rules(False)
                    b.stop_egress()
                print("egress with rules and model, two workers ...", file=sys.stderr)
                b.queues = (0, 1)
                b.start_egress(*model_args, "--queue", "0-1", "--workers")
                conn_rounds("conns_model_workers")
                goal_runs("conns_model_workers")
                b.rules(False)
                b.stop_egress()
                b.queues = (0,)
                if args.pinned == "yes":
                    pinned_runs()

            for key, extra in (("queued", []), ("queued_busy", busy))[:2 if args.busy_poll > 0 else 1]:
                print("egress, every packet queued%s ..." % (" (busy-poll)" if extra else ""), file=sys.stderr)
                b.start_egress("--no-fast-path", *extra)
                b.rules(True)
                gbit, rate = b.bulk_with_rate()
                rtt_base, rtt_q = [], []
                for _ in range(args.rounds):
                    b.rules(False); rtt_base.append(b.pingpong())
                    b.rules(True); rtt_q.append(b.pingpong())
                results[key] = {"bulk": gbit, "verdicts_per_s": rate,
                                "rtt_base": [med([r[0] for r in rtt_base]), med([r[1] for r in rtt_base])],
                                "rtt_queued": [med([r[0] for r in rtt_q]), med([r[1] for r in rtt_q])]}
                b.rules(False)
                b.stop_egress()

            b.start_egress("--fail-open")
            b.rules(True, fail_open=True)
            results["flood_open"] = b.flood()
            b.rules(False)
            b.stop_egress()
    results["load_after"] = os.getloadavg()[0]
    text = report(results, args)
    print(text)
    if args.append:
        with open(args.append, "a") as f:
            f.write("\n" + text)
    return 0


def report(r: dict, args) -> str:
    med = lambda xs: sorted(xs)[len(xs) // 2]
    lines = [
        "## Live gateway (NFQUEUE)",
        "",
        "Command (root; namespaces egl2-* sbx -> gw -> ext on veth, 10.207.0.0/16; %g s per measurement):"
        % args.seconds,
        "",
        "    python bench/bench_live.py --seconds %g --rounds %d --busy-poll %g --long %g%s --append BENCHMARKS.md"
        % (args.seconds, args.rounds, args.busy_poll, args.long,
           "" if args.pinned == "yes" else " --pinned " + args.pinned),
        "",
        "Machine: %d vCPU (%s), kernel %s, Python %s; clients, servers and egress share the CPUs "
        "(load average %.2f before, %.2f after). Run on %s. Baselines are the same traffic through the "
        "same namespaces without egress, in the same run: the daemon stays up (metrics endpoint on) and "
        "its rules are switched off and on between alternating rounds."
        % (os.cpu_count(), platform.processor() or platform.machine(), platform.release(),
           platform.python_version(), r["load_before"], r["load_after"], datetime.date.today().isoformat()),
        "",
        "| measurement | baseline | egress | ratio / added |",
        "|---|---:|---:|---:|",
    ]
    if "model_error" in r:
        lines.append("| with rules/default.yaml + models/default: **the daemon did not start**: %s | - | - | - |"
                     % r["model_error"].replace("|", "/"))
    for key, name in (("bulk_plain", "no rules, no model"), ("bulk_model", "rules/default.yaml + models/default")):
        if key not in r:
            continue
        x = r[key]
        lines.append("| bulk TCP, Gbit/s, fast path, %s (median of %d alternating rounds) | %.2f | %.2f | %.0f %% |"
                     % (name, args.rounds, x["baseline"], x["egress"], 100 * x["egress"] / x["baseline"]))
    for key, name in (("download_plain", "no rules, no model"),
                      ("download_model", "rules/default.yaml + models/default")):
        if key not in r:
            continue
        x = r[key]
        lines.append("| bulk TCP download, Gbit/s, ONEWAY (client's side inspected), %s (median of %d alternating "
                     "rounds) | %.2f | %.2f | %.0f %% |"
                     % (name, args.rounds, x["baseline"], x["egress"], 100 * x["egress"] / x["baseline"]))
    for key, name in (("queued", ""), ("queued_busy", ", --busy-poll %g" % args.busy_poll)):
        if key not in r:
            continue
        x = r[key]
        lines.append("| bulk TCP, Gbit/s, every packet queued%s | - | %.2f | - |" % (name, x["bulk"]))
        lines.append("| verdicts/s on the queue path (all-queued bulk%s) | - | %.0f | - |" % (name, x["verdicts_per_s"]))
        (b50, b99), (q50, q99) = x["rtt_base"], x["rtt_queued"]
        lines.append("| TCP ping-pong RTT p50, us (all queued%s) | %.1f | %.1f | **+%.1f per queued packet** |"
                     % (name, b50, q50, (q50 - b50) / 2))
        lines.append("| TCP ping-pong RTT p99, us (all queued%s) | %.1f | %.1f | +%.1f per queued packet |"
                     % (name, b99, q99, (q99 - b99) / 2))
    for key, name in (("conns_plain", "no rules, no model"), ("conns_model", "rules + model"),
                      ("conns_model_busy", "rules + model, --busy-poll %g" % args.busy_poll),
                      ("conns_model_workers", "rules + model, 2 workers (--queue 0-1 --workers)"),
                      ("conns_model_long", "rules + model, steady state (flows also end in the run)")):
        for variant, x in r.get(key, {}).items():
            (cb, cb_bad, _), (ce, ce_bad, cpu_us) = x["baseline"], x["egress"]
            lines.append("| new connections/s, fully inspected: %s; %s | %.0f | %.0f | %.0f %% (failed: %d / %d; "
                         "daemon CPU %.0f us/connection) |"
                         % (variant, name, cb, ce, 100 * ce / cb, cb_bad, ce_bad, cpu_us))
    pinned = r.get("pinned")
    if "pinned_skipped" in r:
        lines.append("| new connections/s, daemon pinned, remote stacks' receive work on other CPUs (RPS): "
                     "**not run**: %s | - | - | - |" % r["pinned_skipped"])
    for key, name in (() if not pinned else (
            ("conns_model_pinned", "rules + model, daemon pinned to CPU %s (--cpus), RPS of sbx/ext on CPU %s, "
             "baseline too" % (",".join(map(str, pinned["daemon"])), ",".join(map(str, pinned["rps"])))),
            ("conns_model_workers_pinned", "rules + model, 2 workers pinned one per CPU (--cpus %s), no RPS"
             % ",".join(map(str, pinned["workers"]))))):
        for variant, x in r.get(key, {}).items():
            (cb, cb_bad, _), (ce, ce_bad, cpu_us) = x["baseline"], x["egress"]
            user_us, sys_us = x.get("egress_user_sys_us", (0.0, 0.0))
            lines.append("| new connections/s, fully inspected: %s; %s | %.0f | %.0f | %.0f %% (failed: %d / %d; "
                         "daemon CPU %.0f us/connection: user %.0f, system %.0f) |"
                         % (variant, name, cb, ce, 100 * ce / cb, cb_bad, ce_bad, cpu_us, user_us, sys_us))
    for key, name in (("conns_model_workers", "2 workers (--queue 0-1 --workers)"),
                      ("conns_model_pinned", "daemon pinned, RPS as above")):
        if key + "_rounds" in r:
            x = r[key + "_rounds"]
            lines.append("| new connections/s, fully inspected: HTTP GET, 2 clients x 8 in flight; rules + model, %s: "
                         "median of %d alternating rounds (egress: %s) | %.0f | %.0f | %.0f %% |"
                         % (name, len(x["egress"]), ", ".join("%.0f" % v for v in x["egress"]), med(x["baseline"]),
                            med(x["egress"]), 100 * med(x["egress"]) / med(x["baseline"])))
        if key + "_long" in r:
            x = r[key + "_long"]
            (cb, cb_bad, _), (ce, ce_bad, cpu_us) = x["baseline"], x["egress"]
            user_us, sys_us = x.get("egress_user_sys_us", (0.0, 0.0))
            split = ": user %.0f, system %.0f" % (user_us, sys_us) if user_us or sys_us else ""
            lines.append("| new connections/s, fully inspected: HTTP GET, 2 clients x 8 in flight, %g s; rules + model, "
                         "%s, steady state (flows also end in the run) | %.0f | %.0f | %.0f %% "
                         "(failed: %d / %d; daemon CPU %.0f us/connection%s) |"
                         % (args.long, name, cb, ce, 100 * ce / cb, cb_bad, ce_bad, cpu_us, split))
    if pinned:
        lines += ["", "Pinned runs: in these namespaces a verdict re-injected by egress is forwarded to a veth, and "
                  "without RPS the receiving namespace's whole TCP work (the server's SYN handling, accept wake-ups, "
                  "the answer coming back and being queued) runs inside the daemon's verdict syscall, charged to "
                  "the daemon: work of the remote hosts, which on a real gateway are other machines. RPS on sbx's "
                  "and ext's eth0 moves that receive work to other CPUs, and `egress run --cpus` keeps the daemon "
                  "on its own CPU, as an operator keeps NIC interrupts and softirqs (IRQ affinity, RPS) off the "
                  "packet path's CPU. Baseline rounds use the same RPS masks; they are reset afterwards. Two workers "
                  "pinned one per CPU run without RPS: no CPU is free of egress, and RPS on every CPU measured worse "
                  "than none (the receive work then interrupts the other worker)."]
    if "flood_base" in r:                      # not with --pinned only
        lines += ["", "Small-packet flood (16-byte UDP datagrams, each to a new port = a new flow, %g s):" % args.seconds,
                  "", "| run | sent | arrived in ext | dropped: queue full | dropped: netlink buffer | answered by egress |",
                  "|---|---:|---:|---:|---:|---:|"]
    for name, key in (("baseline", "flood_base"), ("egress, fail-closed", "flood_closed"),
                      ("egress, fail-open", "flood_open")):
        if key not in r:
            continue
        f = r[key]
        lines.append("| %s | %d | %d | %d | %d | %d |" % (name, f["sent"], f["arrived"], f["queue_full"],
                                                           f["netlink_full"], f["answered"]))
    lines += ["", "Raw: `%s`" % json.dumps(r), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
