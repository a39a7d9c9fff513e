"""Prometheus metrics of the live daemon (prometheus-client, a private registry).

Exposed (all prefixed `egress_`):
- packets_total{queue}                      packets that got a verdict from us
- verdicts_total{action,rule}               kernel verdicts by action and policy rule
- decision_seconds (histogram)              time from queue callback entry to verdict (decided; under
                                            load it is sent with its batch, see --verdict-batch)
- exceptions_total                          engine/driver errors handled by the exception policy
- revocations_total{result}                 conntrack mark rewrites (ok | failed)
- reloads_total{result}                     SIGHUP reloads (ok | failed)
- flows_total, flows_active, engine_*       read from the engine at scrape time (engine_events
                                            {name="driver.verdict_sends"}: system calls that sent
                                            the verdicts; driver.packets / it = verdicts per call)
- queue_dropped_total{queue,reason}         the kernel's per-queue drops (/proc/net/netfilter/nfnetlink_queue):
                                            reason=queue_full | netlink_buffer
- queue_waiting{queue}                      packets waiting in the queue now

Guarantees: the per-packet cost is one dict increment (verdicts by action and rule), one
bisect into the latency buckets and one float addition, on plain Python objects that
only the packet thread writes (~0.4 us; prometheus-client's Counter.inc and
Histogram.observe take locks and cost ~2 us a packet together, measured). They are
turned into Prometheus series at scrape time, as are the engine and kernel numbers.
The HTTP server runs in a daemon thread; scraping never blocks the packet path
(counters are copied, not locked; a torn read is retried).
"""
from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from egress.drivers.nfqueue import read_queue_stats

LATENCY_BUCKETS = (5e-6, 10e-6, 20e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 2e-3, 5e-3, 10e-3, 50e-3)


class Metrics:
    def __init__(self, engine_stats=None, queues=(0,)):
        disable_created_metrics()       # no *_created series: they only add noise here
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.exceptions = Counter("egress_exceptions", "Errors handled by the exception policy", registry=r)
        self.revocations = Counter("egress_revocations", "Conntrack mark rewrites", ["result"], registry=r)
        self.reloads = Counter("egress_reloads", "SIGHUP reloads", ["result"], registry=r)
        # Written by the packet thread only, read (copied) by the scrape thread.
        self.verdict_counts: dict[tuple, int] = {}          # (action, rule) -> packets
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)   # per bucket, last = +Inf
        self.latency_sum = 0.0
        self.engine_stats = engine_stats
        r.register(_ScrapeCollector(self))

    def observe(self, decision, action, seconds: float) -> None:
        """Called by the queue driver once per packet."""
        key = (action, decision.verdict.rule if decision is not None else "exception-policy")
        counts = self.verdict_counts
        counts[key] = counts.get(key, 0) + 1
        # le buckets are inclusive: bisect_left puts a value equal to a bound into its bucket.
        self.latency_counts[bisect_left(LATENCY_BUCKETS, seconds)] += 1
        self.latency_sum += seconds

    def packet_series(self):
        """packets, verdicts and the latency histogram as metric families (scrape time)."""
        for _ in range(5):
            try:
                verdicts = dict(self.verdict_counts)
                break
            except RuntimeError:    # the packet thread added a key while we copied
                continue
        else:
            verdicts = {}
        latency, total = list(self.latency_counts), self.latency_sum
        packets = CounterMetricFamily("egress_packets", "Packets that got a verdict", labels=["queue"])
        packets.add_metric(["all"], sum(verdicts.values()))
        yield packets
        by_rule = CounterMetricFamily("egress_verdicts", "Kernel verdicts by action and rule", labels=["action", "rule"])
        for (action, rule), count in sorted(verdicts.items(), key=lambda kv: (kv[0][0].value, kv[0][1])):
            by_rule.add_metric([action.value, rule], count)
        yield by_rule
        buckets, running = [], 0
        for bound, count in zip(LATENCY_BUCKETS + (float("inf"),), latency):
            running += count
            buckets.append((floatToGoString(bound), running))
        hist = HistogramMetricFamily("egress_decision_seconds", "Queue callback to verdict")
        hist.add_metric([], buckets, total)
        yield hist

    def serve(self, address: str, port: int):
        from prometheus_client import start_http_server
        return start_http_server(port, addr=address, registry=self.registry)


class _ScrapeCollector:
    """Engine and kernel numbers, read when Prometheus scrapes."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def describe(self):
        return []

    def collect(self):
        yield from self.metrics.packet_series()
        stats = {}
        if self.metrics.engine_stats is not None:
            for _ in range(2):
                try:
                    stats = dict(self.metrics.engine_stats())
                    break
                except RuntimeError:   # the packet thread changed the dict under us
                    continue
        flows = CounterMetricFamily("egress_flows", "Flows seen")
        flows.add_metric([], stats.get("flows", 0))
        yield flows
        active = GaugeMetricFamily("egress_flows_active", "Flows in the flow table")
        active.add_metric([], stats.get("flows.active", 0))
        yield active
        engine = CounterMetricFamily("egress_engine_events", "Engine counters (decode anomalies, alerts, ...)",
                                     labels=["name"])
        for name, value in sorted(stats.items()):
            if name not in ("flows", "flows.active") and isinstance(value, (int, float)):
                engine.add_metric([name], value)
        yield engine
        dropped = CounterMetricFamily("egress_queue_dropped", "Packets the kernel dropped at the queue",
                                      labels=["queue", "reason"])
        waiting = GaugeMetricFamily("egress_queue_waiting", "Packets waiting in the queue", labels=["queue"])
        for num, q in sorted(read_queue_stats().items()):
            dropped.add_metric([str(num), "queue_full"], q["queue_dropped"])
            dropped.add_metric([str(num), "netlink_buffer"], q["user_dropped"])
            waiting.add_metric([str(num)], q["queue_total"])
        yield dropped
        yield waiting
