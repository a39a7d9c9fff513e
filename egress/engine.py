"""The sans-IO engine: one packet in, one Decision out; events out on demand.

    raw packet -> decode -> flow table -> inspect -> features/classify -> policy -> Decision

Guarantees:
- `process()` returns exactly one Decision per packet and never raises: an
  internal error follows the configured exception policy (default: drop the
  flow, fail closed), is counted, and the engine carries on.
- The engine never touches sockets, clocks, signals or files: time comes from
  the packets (`RawPacket.ts`) and from `advance(now)`, so replaying a capture
  gives the verdicts the live daemon gave, minus the kernel's part.
- The policy is consulted on a flow's first packet and again only when
  something it reads changed (a detection, a fact, a classifier score).
- A decoy close cannot end inspection early: a TCP flow that closes while it is
  inspected is never offloaded (it stays queued, where its last ACKs cost little),
  and data beyond a FIN, which no real stack sends, puts the whole flow under the
  exception policy with an alert ("data-after-fin" anomaly).
- A pure ACK (TCP, flags exactly ACK among FIN SYN RST PSH ACK URG, no payload, a
  window that is not zero) of a known flow changes nothing: it gets the flow's standing
  verdict and moves no counter, timer, TCP state or feature. It carries no byte to
  inspect, and the live gateway does not queue it on a connection whose SYN it saw
  (egress.drivers.iptables), which saves four of a short connection's ten trips through
  the queue: replay ignores it too, so both give the same verdicts. A pure ACK of no
  known flow (a connection picked up mid-stream, bare ACKs used as a covert channel)
  starts a flow like any packet, and the gateway queues it. A zero window (a stalled
  receiver, a feature) and ECN's ECE/CWR bits do not make an ACK pure.
- Every flow ends exactly once (closed, timed out, evicted or flushed) and then
  yields exactly one "flow" event; "alert" events are written when a detection
  or a non-allow verdict first appears on a flow.
"""
from __future__ import annotations

import logging
from collections import Counter
from typing import Any

from egress.config import EngineConfig
from egress.decode import decode
from egress.flow.flow import Flow
from egress.flow.table import FlowTable
from egress.inspect.base import Detector
from egress.inspect.stage import InspectStage
from egress.output import eve
from egress.features import payload_len
from egress.types import ACK, FIN, PROTO_TCP, PSH, RST, SYN, URG, Action, Decision, Mode, RawPacket, Verdict

log = logging.getLogger("egress.engine")

# Enum members as plain module constants: `Action.ALLOW` is a class attribute lookup
# through the enum's metaclass, several times slower than a global, on every packet.
_ALLOW = Action.ALLOW
_ENFORCE = Mode.ENFORCE
NO_POLICY = Verdict(Action.ALLOW, Mode.ENFORCE, "no-policy", ("no policy loaded",))
_VERDICT_COUNTER = {action: "verdict." + action.value for action in Action}
_VERDICT_ALLOW = _VERDICT_COUNTER[Action.ALLOW]
FRAGMENT = Verdict(Action.ALLOW, Mode.ENFORCE, "fragment", ("later IP fragment, no ports",))
UNTRACKED = Verdict(Action.ALLOW, Mode.ENFORCE, "not-ip", ("not an IP packet",))
_TCP_FLAGS = FIN | SYN | RST | PSH | ACK | URG     # what iptables' `--tcp-flags ALL` looks at (not ECE, CWR)


class Engine:
    def __init__(self, config: EngineConfig | None = None, detectors: list[Detector] | None = None,
                 policy: Any = None, classifier: Any = None, observers: list[Any] | None = None):
        self.config = config or EngineConfig()
        if detectors is None:
            from egress.inspect.registry import default_detectors
            detectors = default_detectors()
        if not self.config.signatures:
            detectors = []
        if observers is None:
            observers = _default_observers() if self.config.signatures else []
        self.inspect = InspectStage(detectors, self.config)
        self.observers = observers
        self.policy = policy
        self.classifier = classifier
        self.table = FlowTable(self.config, self._on_flow_end)
        self.counters: Counter[str] = Counter()
        self.events: list[dict] = []
        self._next_sweep = 0.0
        self._now = 0.0
        self._flow: Flow | None = None      # the flow of the packet being processed (exception policy)
        # Live workers that split one gateway's flows share what their policies learn from
        # DNS (egress.drivers.peers): answers learned here are handed on, and the answers
        # the others learned are taken in before a new flow is judged.
        self.on_dns_learned: Any = None     # callable(answers, now)
        self.before_new_flow: Any = None    # callable()
        drop = self.config.exception_action == "drop"
        self._exception_verdict = Verdict(Action.DROP if drop else Action.ALLOW, Mode.ENFORCE,
                                          "exception-policy", ("internal error",), final=drop)
        self._evasion_verdict = Verdict(Action.DROP if drop else Action.ALLOW, Mode.ENFORCE, "exception-policy",
                                        ("TCP data beyond a FIN (a decoy close)",), final=drop)

    # -- the pipeline -----------------------------------------------------------------

    def process(self, raw: RawPacket) -> Decision:
        self._flow = None
        try:
            return self._process(raw)
        except Exception as exc:  # exception policy: never fatal, never silent
            self.counters["engine.exceptions"] += 1
            count = self.counters["engine.exceptions"]
            if count <= 10 or count % 1000 == 0:   # a bug an attacker can trigger must not flood the log
                log.exception("engine error #%d, applying the exception policy: %s", count, exc)
            return self._fail(self._flow)

    def _fail(self, flow: Flow | None, verdict: Verdict | None = None) -> Decision:
        """The exception policy applies to the whole flow: a half-inspected flow must not
        slip through on its next packet. The verdict stays until the flow ends.

        Also for a flow whose inspection cannot be trusted any more: TCP data beyond a
        FIN (FlowTable.data_after_fin), so a FIN the receiver did not take, sent to make
        the detectors conclude while the connection goes on."""
        verdict = verdict or self._exception_verdict
        if flow is None:
            return Decision(verdict.action, verdict)
        flow.verdict = verdict
        flow.verdict_dirty = False
        self.inspect.finish(flow)
        flow.features = None
        return Decision(verdict.action, verdict, flow, offload=True)

    def _process(self, raw: RawPacket) -> Decision:
        counters = self.counters
        counters["packets"] += 1
        pkt = decode(raw)
        if pkt.anomalies:
            for name in pkt.anomalies:
                counters["decode." + name] += 1
        if pkt.proto < 0:
            return self._undecodable(pkt)
        if pkt.fragment and pkt.sport == 0 and pkt.dport == 0 and pkt.proto in (6, 17):
            # A later IP fragment has no ports: it cannot be placed in a flow. Live, the
            # kernel's conntrack defragments before the queue, so only captures get here.
            counters["fragments.untracked"] += 1
            return Decision(Action.ALLOW, FRAGMENT)
        now = pkt.ts
        if now > self._now:
            self._now = now
        if now >= self._next_sweep:
            self.advance(now)
        if pkt.proto == PROTO_TCP and pkt.flags & _TCP_FLAGS == ACK and is_pure_ack(pkt):
            known = self.table.lookup(pkt)
            if known is not None:
                return self._pure_ack(known, now)

        flow, direction, is_new = self.table.track(pkt)
        self._flow = flow
        verdict = flow.verdict
        if verdict is self._exception_verdict or verdict is self._evasion_verdict:
            return self._fail(flow, verdict)
        if pkt.payload and flow.fin_seq is not None and self.table.data_after_fin(flow, pkt, direction):
            self.counters["evasion.data_after_fin"] += 1
            flow.add_anomaly("data-after-fin")
            self._alert_on_change(flow, verdict, self._evasion_verdict)
            return self._fail(flow, self._evasion_verdict)
        if is_new:
            if self.before_new_flow is not None:
                self.before_new_flow()
            flow.in_iface = raw.iface
            self._start(flow, now)
        if pkt.anomalies:
            for name in pkt.anomalies:
                flow.add_anomaly(name)
        if flow.inspecting and self.inspect.on_packet(flow, pkt, direction):
            flow.verdict_dirty = True
            for observer in self.observers:
                found = observer.on_facts(flow, now)
                if found:
                    flow.detections.extend(found)
            if self.policy is not None and "dns.answers" in flow.facts:     # _has_dns_answers
                if self.policy.observe(flow, now) and self.on_dns_learned is not None:
                    self.on_dns_learned(flow.facts["dns.answers"], now)
        if flow.features is not None and self.classifier.on_packet(flow, pkt, direction):
            flow.verdict_dirty = True
        return self._decide(flow, now)

    def _pure_ack(self, flow: Flow, now: float) -> Decision:
        """A pure ACK (see is_pure_ack) of a known flow gets the flow's standing verdict
        and changes nothing: no flow counter, timer, state or feature moves."""
        self.counters["packets.pure_ack"] += 1
        decision = self._decide(flow, now, counted=False)
        self.counters[_VERDICT_COUNTER[decision.action]] += 1
        return decision

    def _start(self, flow: Flow, now: float) -> None:
        self.counters["flows"] += 1
        if self.policy is not None:
            flow.sandbox = self.policy.attribute(flow, iface=flow.in_iface)
        for observer in self.observers:
            for detection in observer.on_flow_start(flow, now):
                flow.detections.append(detection)
        if self.inspect.detectors:
            self.inspect.start(flow)
        if self.classifier is not None:
            self.classifier.start(flow)

    def _decide(self, flow: Flow, now: float, counted: bool = True) -> Decision:
        before = verdict = flow.verdict
        if flow.verdict_dirty:
            flow.verdict_dirty = False
            verdict = self.policy.decide(flow, now) if self.policy is not None else NO_POLICY
            flow.verdict = verdict
            self._alert_on_change(flow, before, verdict)
        action = verdict.action if verdict.mode is _ENFORCE else _ALLOW
        if action is not _ALLOW:
            revoked = flow.packets_allowed > 0 and before.action is _ALLOW
            if counted:
                self.counters[_VERDICT_COUNTER[action]] += 1
            return Decision(action, verdict, flow, True, revoked)
        if counted:
            flow.packets_allowed += 1
            self.counters[_VERDICT_ALLOW] += 1
        if flow.inspecting:
            return Decision(action, verdict, flow, oneway=flow.oneway)
        if flow.fin_seq is not None:
            # Closing: its packets stay in the queue, where data after a FIN (the sign of
            # a FIN the receiver did not take) is caught; a flow that really closed sends
            # only a last ACK or two.
            return Decision(action, verdict, flow)
        if flow.features is None:
            return Decision(action, verdict, flow, True)
        # Allowed, every detector done, the classifier still to look again: no inline
        # verdict is needed any more, only the packets (see egress.drivers.nflog).
        return Decision(action, verdict, flow, watch=True)

    def _undecodable(self, pkt) -> Decision:
        """Not IP (ARP in a capture) passes untracked; broken IP follows the exception policy."""
        if "not-ip" in pkt.anomalies:
            self.counters["untracked"] += 1
            return Decision(Action.ALLOW, UNTRACKED)
        self.counters["undecodable"] += 1
        return Decision(self._exception_verdict.action, self._exception_verdict)

    # -- events -----------------------------------------------------------------------

    def _alert_on_change(self, flow: Flow, before: Verdict, after: Verdict) -> None:
        policy_hit = after.action is not _ALLOW or after.alert
        if not policy_hit and not flow.detections:
            return                      # the common case: nothing to alert on (see below)
        alerted = flow.alerted if flow.alerted is not None else set()
        fresh = [d for d in flow.detections if (d.category, d.signature) not in alerted]
        changed_hit = policy_hit and (after.rule != before.rule or after.action != before.action)
        if not fresh and not changed_hit:
            return
        for d in fresh:
            alerted.add((d.category, d.signature))
        flow.alerted = alerted
        self.counters["alerts"] += 1
        self.events.append(eve.alert_event(flow, after, fresh, self._now))

    def _on_flow_end(self, flow: Flow) -> None:
        if self.classifier is not None and flow.features is not None:
            try:
                self.classifier.on_end(flow)
            except Exception as exc:
                self.counters["classifier.exceptions"] += 1
                log.warning("classifier failed at flow end: %s", exc)
        for observer in self.observers:
            observer.on_flow_end(flow, self._now)
        if flow.inspecting is not None:
            self.inspect.conclude(flow)
        self.counters["flows.ended." + (flow.end_reason or "unknown")] += 1
        self.events.append(eve.flow_event(flow))

    # -- time, lifecycle, reload ---------------------------------------------------------

    def advance(self, now: float) -> None:
        """Expire flows whose timeouts passed at packet time `now`."""
        self._next_sweep = now + self.config.sweep_interval
        if now > self._now:
            self._now = now
        self.table.expire(now)

    def flush(self) -> None:
        """End every flow now (end of a replay, shutdown)."""
        self.table.flush()

    def drain_events(self) -> list[dict]:
        events, self.events = self.events, []
        return events

    def swap_policy(self, policy: Any) -> None:
        """Use a new policy from the next packet on; every live flow is judged again."""
        self.policy = policy
        for flow in self.table.flows.values():
            flow.verdict_dirty = True

    def rejudge(self, now: float) -> list[Flow]:
        """Decide every live flow again now (after a reload); returns the flows that an
        allow turned into an enforced block, which the live driver must revoke."""
        revoked = []
        for flow in list(self.table.flows.values()):
            if flow.verdict is self._exception_verdict or flow.verdict is self._evasion_verdict:
                continue
            flow.verdict_dirty = True
            decision = self._decide(flow, now, counted=False)
            if decision.revoked:
                revoked.append(flow)
        return revoked

    def reinspect(self, flow: Flow) -> None:
        """Inspect `flow` again from its next packet on. For the live driver: what the
        engine saw of this flow so far were copies cut to their first bytes (a watched
        connection it did not know), so the detectors start over on whole packets."""
        if not self.inspect.detectors:
            return
        sizes = flow.sizes
        self.inspect.start(flow)
        flow.sizes = sizes
        flow.payload_packets = flow.payload_packets_toclient = 0
        flow.oneway = False
        flow.verdict_dirty = True

    def swap_classifier(self, classifier: Any) -> None:
        """Use a new model from the next packet on (same feature schema: the load checked it).
        Without a model, live flows stop accumulating features."""
        self.classifier = classifier
        if classifier is None:
            for flow in self.table.flows.values():
                flow.features = None

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["flows.active"] = len(self.table)
        out["flows.evicted"] = self.table.evicted
        out["flows.held"] = self.table.held
        out["flows.oneway"] = self.inspect.oneway_flows
        for name, count in self.inspect.errors.items():
            out["inspect.errors." + name] = count
        return out


def is_pure_ack(pkt) -> bool:
    """A TCP packet the engine does not track on a known flow (see the module
    docstring): flags exactly ACK among FIN SYN RST PSH ACK URG, no payload on the wire,
    a window that is not zero. egress.drivers.iptables lets such packets (those with
    plain IP headers, on connections whose SYN it saw) pass without queueing them."""
    return pkt.flags & _TCP_FLAGS == ACK and pkt.window != 0 and not pkt.payload \
        and not (pkt.truncated and payload_len(pkt))


def _has_dns_answers(flow: Flow) -> bool:
    return "dns.answers" in flow.facts


def _default_observers() -> list[Any]:
    from egress.inspect.observers import default_observers
    return default_observers()
