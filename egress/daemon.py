"""The live daemon's life cycle: start, serve the queue, reload, drain, stop.

Start order matters: load policy and model (a bad file stops us before touching the
kernel), bind the queues and set their flags, THEN install the iptables rules, so no
packet is queued to a queue nobody listens on. Stop is the reverse: remove the rules,
give every packet still in the queue its verdict, flush the engine (one flow event per
flow), unbind.

Signals only set flags; the loop acts on them between packets, so a reload never
interrupts a verdict and no packet is left without one:
- SIGHUP: reload rules and model (a failure keeps the old ones and logs ONE line),
  re-judge live flows (flows that now fall under a block are revoked by rewriting their
  conntrack mark), reopen the EVE file (logrotate).
- SIGTERM / SIGINT: drain and exit 0.

CPU pinning (`cpus`, `egress run --cpus`): the first thing start() does, before any
thread exists (metrics, API, the model's), so every thread inherits it; the threads
already there are pinned too. On a gateway whose NIC interrupts and receive softirqs
(IRQ affinity, RPS) go to other CPUs, the packet path keeps its CPU and its caches.

Time: packet timestamps come from the queue; the flow table is advanced by the wall
clock every `tick` seconds, so idle flows end even when no packet arrives.

Fast-pathed flows: once a flow is allowed onto the kernel fast path the engine sees
none of its packets, so by its own clock the flow goes idle. Such a flow is kept past
its idle timeout while conntrack has the connection open (asked in the tick, a bounded
number of lookups each time), so a reload that now blocks it can still revoke it; its
flow event comes within about one idle timeout of the connection's close, with the
packet counts of what was queued.
"""
from __future__ import annotations

import ipaddress
import logging
import signal
import time
from dataclasses import dataclass, field, replace

from egress.config import EngineConfig, Timeouts
from egress.drivers.enforce import ACTION_MARKS, ConntrackMarker
from egress.drivers.iptables import MARK_ALLOW, MARK_MASK, MARK_ONEWAY, MARK_ONEWAY_WATCH, Iptables, RuleSpec
from egress.drivers.nflog import DEFAULT_WATCH_GROUP, NflogReader
from egress.drivers.nfqueue import QueueDriver
from egress.gc_schedule import FullCollections
from egress.output.eve import EveWriter
from egress.types import Action, Mode

log = logging.getLogger("egress.daemon")


class StartupError(RuntimeError):
    """Bad configuration or input file: reported as one line, exit code 2."""


_KERNEL_PATHED = (MARK_ALLOW, MARK_ONEWAY, MARK_ONEWAY_WATCH)   # connmarks whose packets pass unseen


@dataclass
class DaemonConfig:
    queues: tuple[int, ...] = (0,)
    rules: list[str] = field(default_factory=list)
    model: str | None = None
    sandbox_map: str | None = None
    eve: str | None = None
    metrics: str | None = "127.0.0.1:9108"   # host:port, or None for no endpoint
    sandbox_iface: str | None = None
    sandbox_nets: tuple[str, ...] = ()
    mode: str = "gateway"
    fail_open: bool = False                   # queue full -> accept (else drop)
    bypass: bool = False                      # no daemon bound -> accept (else drop)
    gso: bool = False                         # see egress.drivers.nfqueue: complete packets for the engine
    fast_path: bool = True                    # False: queue every packet (benchmarks, debugging)
    busy_poll: float = 0.0                    # seconds to keep polling the queue after a packet (latency)
    verdict_batch: int = 8                    # verdicts sent to the kernel in one call, at most
    watch_group: int | None = DEFAULT_WATCH_GROUP   # NFLOG group of the watch path (None: keep such flows queued)
    slot: int = 0                             # this worker's slot: connmark, NFLOG group offset, peer address
    peers: str | None = None                  # "TOKEN:COUNT": the workers sharing DNS answers (egress.drivers.peers)
    watch_slots: int = 1                      # slots the installed rules serve (workers)
    copy_range: int = 1500
    queue_maxlen: int = 4096
    exception_action: str = "drop"
    install_rules: bool = True
    signatures: bool = True
    sandbox_api: str | None = None            # HOST:PORT (loopback) or unix:/path for the attribution API
    cpus: tuple[int, ...] = ()                # pin to these CPUs (workers: worker i -> cpus[i % len]); () = no pinning
    flow_timeouts: tuple[tuple[str, float], ...] = ()   # (Timeouts field, seconds) overriding the defaults
    tick: float = 0.25


def one_line(exc: BaseException) -> str:
    """A multi-line error (a PolicyError lists every problem) as one log line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines) or type(exc).__name__


def load_policy(rules: list[str], sandbox_map: str | None, previous=None):
    """A PolicyEngine from the rules files; with `previous`, reload it (keeping what it
    learned, e.g. DNS answers). StartupError with one line when anything is invalid."""
    if not rules and not sandbox_map:
        return None
    from egress.policy import load_policy_engine
    try:
        return load_policy_engine(list(rules), sandbox_map=sandbox_map, previous=previous)
    except (OSError, ValueError) as exc:
        raise StartupError(one_line(exc)) from None


def load_classifier(model: str | None):
    if not model:
        return None
    try:
        from egress.classify import FlowClassifier
    except ImportError as exc:
        raise StartupError("classifier support is not available: %s" % exc) from None
    try:
        return FlowClassifier.load(model)
    except (OSError, ValueError) as exc:
        raise StartupError(one_line(exc)) from None


def pin_cpus(cpus) -> set[int]:
    """Pin this process (every thread it has now; later ones inherit it) to `cpus`.
    Returns the affinity the kernel then reports; StartupError when it refuses."""
    import os
    wanted = set(cpus)
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        tids = [0]
    try:
        os.sched_setaffinity(0, wanted)
        for tid in tids:
            try:
                os.sched_setaffinity(tid, wanted)
            except ProcessLookupError:       # a thread that just ended
                pass
    except OSError as exc:
        raise StartupError("cannot pin to CPU(s) %s: %s" % (",".join(map(str, sorted(wanted))), exc)) from None
    return set(os.sched_getaffinity(0))


def parse_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class Daemon:
    def __init__(self, config: DaemonConfig, engine_factory=None):
        self.config = config
        self.engine_factory = engine_factory
        self.engine = None
        self.driver: QueueDriver | None = None
        self.iptables = Iptables()
        self.marker = ConntrackMarker()
        self.metrics = None
        self.writer: EveWriter | None = None
        self.rules_installed = False
        self._want_reload = False
        self._want_stop = False
        self.reloads = {"ok": 0, "failed": 0}
        self.api = None
        self.peers = None
        self.collections = FullCollections()
        self._held: dict = {}                 # flow key -> fast-pathed flow kept past its idle timeout
        self.hold_counters = {"open": 0, "ended": 0}

    # -- start --------------------------------------------------------------------------

    def start(self) -> None:
        cfg = self.config
        if cfg.cpus:
            pinned = pin_cpus(cfg.cpus)
            log.info("egress: pinned to CPU(s) %s", ",".join(map(str, sorted(pinned))))
        policy = load_policy(cfg.rules, cfg.sandbox_map)
        classifier = load_classifier(cfg.model)
        engine_config = EngineConfig(signatures=cfg.signatures, exception_action=cfg.exception_action,
                                     timeouts=replace(Timeouts(), **dict(cfg.flow_timeouts)))
        if self.engine_factory is not None:
            self.engine = self.engine_factory(engine_config, policy, classifier)
        else:
            from egress.engine import Engine
            self.engine = Engine(engine_config, policy=policy, classifier=classifier)
        table = getattr(self.engine, "table", None)
        if cfg.fast_path and table is not None:
            table.hold = self._hold_fast_pathed
        self.writer = EveWriter(cfg.eve, append=True)
        if cfg.peers:
            self._join_peers(cfg.peers)
        if cfg.sandbox_api:
            if policy is None:
                raise StartupError("--sandbox-api needs --rules or --sandbox-map")
            from egress.policy.api import start_api
            try:
                self.api = start_api(policy, cfg.sandbox_api, current=lambda: self.engine.policy)
            except (OSError, ValueError) as exc:
                raise StartupError("--sandbox-api %s: %s" % (cfg.sandbox_api, one_line(exc))) from None
        metrics_port = None
        if cfg.metrics:
            from egress.metrics import Metrics
            host, port = parse_address(cfg.metrics)
            self.metrics = Metrics(engine_stats=self._engine_stats, queues=cfg.queues)
            self.metrics.serve(host, port)
            if not ipaddress.ip_address(host).is_loopback:
                metrics_port = port      # reachable beyond loopback: keep the sandbox side out
        watch = None
        if cfg.watch_group is not None and cfg.fast_path and cfg.model:
            watch = NflogReader(cfg.watch_group + cfg.slot)
            self.marker.open()
        self.driver = QueueDriver(self.engine, cfg.queues, copy_range=cfg.copy_range, max_len=cfg.queue_maxlen,
                                  fail_open=cfg.fail_open, gso=cfg.gso, exception_action=cfg.exception_action,
                                  observer=self.metrics.observe if self.metrics else None,
                                  fast_path=cfg.fast_path, busy_poll=cfg.busy_poll,
                                  verdict_batch=cfg.verdict_batch, watch=watch, watch_slot=cfg.slot, marker=self.marker)
        self.driver.open()
        if watch is not None:
            try:
                watch.open()
            except OSError as exc:
                raise StartupError("NFLOG group %d for the watch path: %s (another program uses it? "
                                   "choose one with --watch-group)" % (watch.group, exc)) from None
        if cfg.install_rules:
            self.spec = RuleSpec(mode=cfg.mode, queues=cfg.queues, bypass=cfg.bypass,
                                 sandbox_iface=cfg.sandbox_iface, sandbox_nets=cfg.sandbox_nets,
                                 metrics_port=metrics_port, watch_group=cfg.watch_group,
                                 watch_slots=cfg.watch_slots)
            self.iptables.install(self.spec)
            self.rules_installed = True
        log.info("egress: serving queue(s) %s in %s mode, %s, rules %s", ",".join(map(str, cfg.queues)),
                 cfg.mode, "fail-open" if cfg.fail_open else "fail-closed", " ".join(cfg.rules) or "(none)")

    # -- fast-pathed flows that outlive their idle timeout ----------------------------------

    def _hold_fast_pathed(self, flows, now: float) -> list:
        """FlowTable.hold: a flow idle past its timeout whose connection takes the ALLOW
        fast path (the engine sees none of its packets), or the ONEWAY one (none of the
        server's: a download whose client is quiet), stays in the table until the tick
        has asked conntrack about it (check_held): while the connection is open, a
        reload that now blocks it must find it to revoke it."""
        kept = []
        for flow in flows:
            if flow.kernel_mark & MARK_MASK in _KERNEL_PATHED:
                kept.append(flow)
                self._held[flow.key] = flow
        return kept

    def check_held(self, now: float, limit: int = 64) -> None:
        """Ask conntrack about at most `limit` of the flows kept by _hold_fast_pathed (a
        lookup costs ~0.1-0.2 ms, so a tick stays short): an open connection keeps its
        flow for another idle timeout; a closed or vanished one ends it (its flow event
        is written), as does a lookup that fails."""
        held, table = self._held, self.engine.table
        for _ in range(min(limit, len(held))):
            flow = held.pop(next(iter(held)))         # the longest waiting first
            state = self.marker.connection_state(flow)
            if state == "open":
                flow.last = now
                self.hold_counters["open"] += 1
            elif table.end_held(flow, closed=state == "closed"):
                self.hold_counters["ended"] += 1

    def _join_peers(self, spec: str) -> None:
        """Share learned DNS answers with the other workers of this gateway."""
        from egress.drivers.peers import Peers
        token, _, count = spec.rpartition(":")
        try:
            self.peers = Peers(token, self.config.slot, int(count))
        except (OSError, ValueError) as exc:
            raise StartupError("--peers %s: %s" % (spec, exc)) from None
        engine = self.engine
        engine.on_dns_learned = self.peers.publish
        engine.before_new_flow = lambda: self.peers.drain(self._learn_shared)

    def _learn_shared(self, answers, now: float) -> None:
        policy = self.engine.policy
        if policy is not None:
            policy.learn_shared(answers, now)

    def _engine_stats(self) -> dict:
        engine = self.engine
        stats = engine.stats() if hasattr(engine, "stats") else dict(engine.counters)
        if self.driver is not None:
            for name, value in self.driver.stats().items():
                stats["driver." + name] = value
            if self.driver.watch is not None:
                for name, value in self.driver.watch.counters.items():
                    stats["nflog." + name] = value
        for name, value in self.marker.counters.items():
            stats["conntrack." + name] = value
        for name, value in self.collections.counters.items():
            stats["gc." + name] = value
        for name, value in self.hold_counters.items():
            stats["held." + name] = value
        if self.peers is not None:
            for name, value in self.peers.counters.items():
                stats["peers." + name] = value
        return stats

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        signal.signal(signal.SIGTERM, lambda *_: self.request_stop())
        signal.signal(signal.SIGINT, lambda *_: self.request_stop())

    def request_reload(self) -> None:
        self._want_reload = True

    def request_stop(self) -> None:
        self._want_stop = True

    # -- the loop -----------------------------------------------------------------------

    def serve(self, duration: float | None = None) -> None:
        """Answer the queues until stopped (or for `duration` seconds). Full garbage
        collections only happen at moments egress.gc_schedule chooses, not mid-traffic."""
        deadline = None if duration is None else time.monotonic() + duration
        next_tick = 0.0
        collections = self.collections
        collections.start()
        try:
            while not self._want_stop:
                collections.after_poll(self.driver.poll(self.config.tick))
                now = time.time()
                if now >= next_tick:
                    next_tick = now + self.config.tick
                    self.engine.advance(now)
                    if self._held:
                        self.check_held(now)
                self._write_events()
                if self._want_reload:
                    self._want_reload = False
                    self.reload()
                    collections.collect()      # what the old rules and model held goes now
                if deadline is not None and time.monotonic() >= deadline:
                    break
        finally:
            collections.stop()

    def _write_events(self) -> None:
        events = self.engine.drain_events()
        if events:
            self.writer.write(events)
            self.writer.flush()

    # -- reload -------------------------------------------------------------------------

    def reload(self) -> bool:
        cfg = self.config
        try:
            policy = load_policy(cfg.rules, cfg.sandbox_map, previous=self.engine.policy)
            classifier = load_classifier(cfg.model)
        except StartupError as exc:
            self.reloads["failed"] += 1
            if self.metrics:
                self.metrics.reloads.labels(result="failed").inc()
            log.error("egress: reload failed, keeping the previous rules and model: %s", exc)
            return False
        self.engine.swap_policy(policy)
        if hasattr(self.engine, "swap_classifier"):
            self.engine.swap_classifier(classifier)
        if hasattr(self.engine, "inspect"):
            from egress.inspect.registry import reload_domain_lists
            for problem in reload_domain_lists(self.engine.inspect.detectors):
                log.error("egress: reload kept the previous domain list: %s", problem)
        self.revoke_blocked(time.time())
        self.writer.reopen()
        self._write_events()
        self.reloads["ok"] += 1
        if self.metrics:
            self.metrics.reloads.labels(result="ok").inc()
        log.info("egress: reloaded rules %s%s", " ".join(cfg.rules) or "(none)",
                 " and model %s" % cfg.model if cfg.model else "")
        return True

    def revoke_blocked(self, now: float) -> int:
        """Flows that the (new) policy blocks but the kernel may still fast-path: rewrite
        their connmark so the block takes effect at once."""
        if not hasattr(self.engine, "rejudge"):
            return 0
        count = 0
        for flow in self.engine.rejudge(now):
            action = flow.verdict.action if flow.verdict.mode is Mode.ENFORCE else Action.ALLOW
            if action is Action.ALLOW:
                continue
            ok = self.marker.set_mark(flow, action)
            if ok:
                flow.kernel_mark = ACTION_MARKS[action]   # no longer an ALLOW fast-pathed flow to hold
            count += ok
            if self.metrics:
                self.metrics.revocations.labels(result="ok" if ok else "failed").inc()
            log.info("egress: revoked flow %s (%s, rule %s)%s", flow, action.value, flow.verdict.rule,
                     "" if ok else ": " + self.marker.last_error)
        return count

    # -- stop ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Remove the rules, answer what is still queued, flush the engine, unbind."""
        removed = self.rules_installed
        try:
            if self.rules_installed:
                self.iptables.remove()
                self.rules_installed = False
        finally:
            if self.driver is not None:
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline and self.driver.poll(0.05):
                    pass
            if self.engine is not None:
                self.engine.flush()
                if self.writer is not None:
                    self._write_events()
            if self.driver is not None:
                self.driver.close()
            if self.writer is not None:
                self.writer.close()
            if self.api is not None:
                self.api.stop()
            self.marker.close()
            if self.peers is not None:
                self.peers.close()
            if self.engine is not None:
                import json
                log.info("egress: stats %s", json.dumps(self._engine_stats(), sort_keys=True))
            log.info("egress: stopped%s", ", rules removed" if removed else "")


class Supervisor:
    """`egress run --queue A-B --workers`: one worker process per queue, past the GIL.

    Each connection gets a slot in its connmark on its first packet (round robin, see
    egress.drivers.iptables), and both of its directions go to that slot's queue, so
    every worker sees whole flows and keeps its own engine, and one sandbox's
    connections to one server still spread over all workers. Worker i has slot i: its
    queue, its NFLOG watch group (watch_group + i) and its peer address, over which the
    workers share the DNS answers their policies learn (egress.drivers.peers).

    The supervisor validates the rules and model first (exit 2 on bad input), starts the workers (each binds its queue and sets its flags, but installs no rules),
    installs the rules once all are bound, forwards SIGHUP to every worker, restarts a
    worker that dies (a few times), and on SIGTERM removes the rules, then stops the
    workers (each drains its queue and writes its flow events).
    """

    MAX_RESTARTS = 5

    def __init__(self, config: DaemonConfig, worker_argv):
        self.config = config
        self.worker_argv = worker_argv          # callable(index, queue) -> argv of one worker
        self.iptables = Iptables()
        self.workers: dict[int, object] = {}
        self.restarts = 0
        self._want_stop = False
        self._want_reload = False

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGHUP, lambda *_: setattr(self, "_want_reload", True))
        signal.signal(signal.SIGTERM, lambda *_: setattr(self, "_want_stop", True))
        signal.signal(signal.SIGINT, lambda *_: setattr(self, "_want_stop", True))

    def _spawn(self, index: int) -> None:
        import subprocess
        import sys
        queue = self.config.queues[index]
        proc = subprocess.Popen(self.worker_argv(index, queue), stderr=subprocess.PIPE, text=True)
        self.workers[index] = proc
        for line in proc.stderr:                    # until the worker is bound
            sys.stderr.write(_tagged(queue, line))
            if "egress: ready" in line:
                break
        else:
            raise RuntimeError("worker for queue %d exited with %s" % (queue, proc.wait()))
        import threading
        threading.Thread(target=self._relay, args=(queue, proc), daemon=True).start()

    @staticmethod
    def _relay(queue: int, proc) -> None:
        import sys
        for line in proc.stderr:
            sys.stderr.write(_tagged(queue, line))

    def run(self) -> int:
        cfg = self.config
        load_policy(cfg.rules, cfg.sandbox_map)     # StartupError: bad input, before anything starts
        load_classifier(cfg.model)
        try:
            for index in range(len(cfg.queues)):
                self._spawn(index)
            if cfg.install_rules:
                self.iptables.install(RuleSpec(mode=cfg.mode, queues=cfg.queues, bypass=cfg.bypass,
                                               sandbox_iface=cfg.sandbox_iface, sandbox_nets=cfg.sandbox_nets,
                                               watch_group=cfg.watch_group, watch_slots=len(cfg.queues)))
            log.info("egress: %d workers serving queues %s%s", len(cfg.queues), ",".join(map(str, cfg.queues)),
                     "" if not cfg.cpus else ", pinned " + ", ".join(
                         "queue %d -> CPU %d" % (q, cfg.cpus[i % len(cfg.cpus)]) for i, q in enumerate(cfg.queues)))
            import sys
            print("egress: ready", file=sys.stderr, flush=True)
            while not self._want_stop:
                time.sleep(0.1)
                if self._want_reload:
                    self._want_reload = False
                    for proc in self.workers.values():
                        proc.send_signal(signal.SIGHUP)
                for index, proc in list(self.workers.items()):
                    if proc.poll() is not None and not self._want_stop:
                        if self.restarts >= self.MAX_RESTARTS:
                            raise RuntimeError("worker for queue %d keeps dying (exit %s)"
                                               % (cfg.queues[index], proc.returncode))
                        self.restarts += 1
                        log.error("egress: worker for queue %d exited with %s, restarting",
                                  cfg.queues[index], proc.returncode)
                        self._spawn(index)
            return 0
        finally:
            self.stop()

    def stop(self) -> None:
        if self.config.install_rules:
            try:
                self.iptables.remove()
            except Exception as exc:
                log.error("egress: could not remove the rules: %s", exc)
        for proc in self.workers.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.workers.values():
            try:
                proc.wait(15)
            except Exception:
                proc.kill()
        log.info("egress: stopped, rules removed")


def _tagged(queue: int, line: str) -> str:
    """A worker's log line as the supervisor relays it: "egress[queue N]: ..."."""
    return line.replace("egress: ", "egress[queue %d]: " % queue, 1) if line.startswith("egress: ") \
        else "egress[queue %d]: %s" % (queue, line)
