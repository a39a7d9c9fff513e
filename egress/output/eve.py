"""EVE JSON events (Suricata-compatible where the field exists) and the writer.

Guarantees (the contract in DESIGN.md; checked by shared/tools/check_eve.py):
- every event has timestamp, event_type, flow_id, src_ip, src_port, dest_ip,
  dest_port, proto, app_proto, and sandbox when known; src is the initiator;
- `timestamp` is ISO 8601 with microseconds and a +0000 offset, ports are ints,
  `proto` is a name ("TCP", "UDP", "ICMP", "IPv6-ICMP");
- a "flow" event carries flow{}, verdict{}, detections[] and ml{} (empty
  without a model); protocol facts are grouped by their prefix ("tls.sni" ->
  "tls": {"sni": ...}) as Suricata does;
- a flow the live gateway handed to the kernel (fast path, a revocation) has
  flow.bypass = "kernel" and flow.bypassed_at: its packet and byte counts stop there
  (or "kernel-toclient": the server's side alone, a ONEWAY flow's, egress.inspect.stage);
- events are plain dicts; `EveWriter` serializes one line each and can reopen its
  file (logrotate on SIGHUP).
"""
from __future__ import annotations

import json
import math
import os
import sys
from datetime import datetime, timezone
from typing import IO, Iterable

from egress.flow.flow import Flow
from egress.types import Action, Detection, Verdict

SEVERITY = {"mining": 1, "reverse_tunnel": 1, "reverse_shell": 1, "metadata": 1, "tunnel": 2,
            "scan": 2, "ssh": 3, "policy": 2}


_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+0000"
_SECONDS: dict[int, str] = {}      # whole second -> "YYYY-MM-DDTHH:MM:SS." (bounded, see timestamp)
_SECONDS_MAX = 4096


def timestamp_reference(ts: float) -> str:
    """The definition of an EVE timestamp; `timestamp` gives the same string, faster."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime(_FORMAT)


def timestamp(ts: float) -> str:
    """`timestamp_reference(ts)` for every input (tests/output/test_eve_timestamp.py checks it),
    with the date and time to the second formatted once per second: strftime is most of
    the cost of a flow event, and a gateway's events crowd into few seconds.

    The microseconds are rounded as datetime.fromtimestamp rounds them (half to even on
    the fraction scaled by 1e6, a carry into the next second), so the split never
    changes a digit. Anything but a finite float takes the reference path."""
    if type(ts) is not float or not -1e15 < ts < 1e15:
        return timestamp_reference(ts)
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)         # round() on a float rounds half to even, as datetime does
    if micros >= 1000000:
        micros -= 1000000
        whole += 1.0
    elif micros < 0:
        micros += 1000000
        whole -= 1.0
    second = int(whole)
    prefix = _SECONDS.get(second)
    if prefix is None:
        prefix = datetime.fromtimestamp(second, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.")
        if len(_SECONDS) >= _SECONDS_MAX:
            _SECONDS.clear()
        _SECONDS[second] = prefix
    return "%s%06d+0000" % (prefix, micros)


def _common(flow: Flow, event_type: str, ts: float) -> dict:
    event = {
        "timestamp": timestamp(ts),
        "event_type": event_type,
        "flow_id": flow.flow_id,
        "src_ip": flow.src_ip,
        "src_port": flow.client_port,
        "dest_ip": flow.dest_ip,
        "dest_port": flow.server_port,
        "proto": flow.proto_name,
        "app_proto": flow.app_proto or "unknown",
    }
    if flow.sandbox:
        event["sandbox"] = flow.sandbox
    if flow.in_iface:
        event["in_iface"] = flow.in_iface
    return event


def _facts(flow: Flow) -> dict:
    """Group "tls.sni"-style facts under "tls"; facts without a prefix go under "facts"."""
    grouped: dict = {}
    for name, value in flow.facts.items():
        split = _SPLITS.get(name)
        if split is None:
            split = _split(name)
        group, field = split
        fields = grouped.get(group)
        if fields is None:
            fields = grouped[group] = {}
        fields[field] = value
    return grouped


_SPLITS: dict[str, tuple[str, str]] = {}     # fact name -> (group, field): a few dozen names


def _split(name: str) -> tuple[str, str]:
    """(group, field) of a fact name, remembered (bounded: fact names are the detectors')."""
    group, _, field = name.partition(".")
    split = (group, field) if field else ("facts", name)
    if len(_SPLITS) >= 1024:
        _SPLITS.clear()
    _SPLITS[name] = split
    return split


def flow_event(flow: Flow) -> dict:
    event = _common(flow, "flow", flow.last)
    event["flow"] = {
        "pkts_toserver": flow.pkts_toserver,
        "pkts_toclient": flow.pkts_toclient,
        "bytes_toserver": flow.bytes_toserver,
        "bytes_toclient": flow.bytes_toclient,
        "start": timestamp(flow.start),
        "end": event["timestamp"],           # timestamp(flow.last), formatted once
        "age": int(flow.last - flow.start),
        "state": flow.state if flow.is_tcp else ("established" if flow.pkts_toclient else "new"),
        "reason": flow.end_reason or "unknown",
        "alerted": bool(flow.alerted),
        "initiator": flow.initiator,
    }
    if flow.bypassed:
        # Live only: from this moment the kernel carried (or dropped) the connection on
        # its own, so the counts above stop there (as Suricata's "bypass").
        event["flow"]["bypass"] = "kernel"
        event["flow"]["bypassed_at"] = timestamp(flow.bypassed)
    elif flow.bypassed_toclient:
        # Live only: the server's packets (but FIN, SYN and RST) passed in the kernel from
        # here while the client's side was still inspected (ONEWAY): its counts stop there.
        event["flow"]["bypass"] = "kernel-toclient"
        event["flow"]["bypassed_at"] = timestamp(flow.bypassed_toclient)
    event["verdict"] = flow.verdict.to_json()
    event["detections"] = [d.to_json() for d in flow.detections]
    event["ml"] = dict(flow.ml) if flow.ml else {}
    for group, fields in _facts(flow).items():
        event.setdefault(group, fields)
    if flow.anomalies:
        event["anomalies"] = dict(flow.anomalies)
    return event


def alert_event(flow: Flow, verdict: Verdict, fresh: Iterable[Detection], ts: float) -> dict:
    """An alert for new detections and/or a policy hit; `alert` names the most severe one."""
    fresh = list(fresh)
    event = _common(flow, "alert", ts)
    lead = min(fresh, key=lambda d: SEVERITY.get(d.category, 3)) if fresh else None
    blocked = verdict.enforced_action is not Action.ALLOW
    event["alert"] = {
        "action": "blocked" if blocked else "allowed",
        "signature": lead.signature if lead else "policy." + verdict.rule,
        "category": lead.category if lead else "policy",
        "severity": SEVERITY.get(lead.category, 3) if lead else 2,
        "rule": verdict.rule,
    }
    event["verdict"] = verdict.to_json()
    event["detections"] = [d.to_json() for d in fresh]
    if flow.ml:
        event["ml"] = dict(flow.ml)
    return event


class EveWriter:
    """Writes events as JSON lines to a file or "-" (stdout); `reopen()` for logrotate."""

    def __init__(self, target: str | None, append: bool = True):
        self.target = target
        self.stream: IO[str] | None = None
        self.written = 0
        self._mode = "a" if append else "w"
        self.reopen()

    def reopen(self) -> None:
        """(Re)open the target; after the first open always append (logrotate moved the old file)."""
        if self.target in (None, ""):
            return
        if self.target == "-":
            self.stream = sys.stdout
            return
        if self.stream is not None:
            self.stream.close()
        directory = os.path.dirname(os.path.abspath(self.target))
        os.makedirs(directory, exist_ok=True)
        self.stream = open(self.target, self._mode, encoding="utf-8")
        self._mode = "a"

    def write(self, events: Iterable[dict]) -> None:
        if self.stream is None:
            return
        for event in events:
            self.stream.write(json.dumps(event, separators=(",", ":"), default=_json_default) + "\n")
            self.written += 1

    def flush(self) -> None:
        if self.stream is not None:
            self.stream.flush()

    def close(self) -> None:
        if self.stream is not None and self.stream is not sys.stdout:
            self.stream.close()
        self.stream = None


def _json_default(value):
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
