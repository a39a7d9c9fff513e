"""Turning engine decisions into kernel state outside the packet path.

The packet path enforces with verdict marks (egress.drivers.nfqueue). This module does
the one thing the packet path cannot: change the verdict of a flow that no longer
reaches the queue because it took the connmark fast path. It rewrites the connmark of
the live conntrack entry, looked up by its *full* original tuple (pyroute2's
Conntrack; `conntrack -U` with a partial tuple does not match, and deleting the entry
does not stop a TCP flow: the kernel re-creates it unmarked on the next packet).

It also ends the watch of a flow (egress.drivers.nflog): when the classifier is done
with an allowed flow whose packets pass with the WATCH connmark, the connmark becomes
ALLOW and the rest of the flow takes the fast path without copies. And when copies come
for a connection the engine does not know (it forgot the flow after an idle timeout, or
the daemon restarted), the connmark is cleared so the connection is queued, and fully
inspected, again.

And it tells whether a connection the engine no longer sees is still open
(`connection_state`), so that a fast-pathed flow stays in the flow table, where a reload
can still revoke it, for as long as its connection lives (egress.daemon).

Guarantees: `ConntrackMarker.set_mark` never raises; it returns whether the kernel
accepted the change and counts it: `revoked` / `revoke_failed` for a block,
`released` / `release_failed` for an allow, `requeued` / `requeue_failed` for a
connection sent back to the queue, `unwatched` / `unwatch_failed` for the end of a
ONEWAY flow's copies; failed e.g. when the connection is gone.
"""
from __future__ import annotations

import errno
import socket
import threading

from egress.drivers.iptables import MARK_ALLOW, MARK_DROP, MARK_MASK, MARK_ONEWAY, MARK_REJECT, MARK_REQUEUE
from egress.types import PROTO_ICMP, PROTO_ICMPV6, Action, ip_text

ACTION_MARKS = {Action.ALLOW: MARK_ALLOW, Action.DROP: MARK_DROP, Action.REJECT: MARK_REJECT}
_FAILED = {"revoked": "revoke_failed", "released": "release_failed", "requeued": "requeue_failed",
           "unwatched": "unwatch_failed"}
_TCP_DONE = (7, 8)       # conntrack's TCP_CONNTRACK_TIME_WAIT, TCP_CONNTRACK_CLOSE


def flow_tuple(flow) -> dict:
    """The conntrack original-direction tuple of a flow as seen in the gateway's FORWARD
    hook (before any SNAT in POSTROUTING), as pyroute2 keyword arguments."""
    family = socket.AF_INET if flow.version == 4 else socket.AF_INET6
    return {"family": family, "saddr": ip_text(flow.client_ip), "daddr": ip_text(flow.server_ip),
            "proto": flow.proto, "sport": flow.client_port, "dport": flow.server_port}


class ConntrackMarker:
    """Rewrites egress's bits of a live connection's connmark (current namespace)."""

    def __init__(self):
        self._sockets: dict[int, object] = {}
        self._lock = threading.Lock()
        self.counters = {"revoked": 0, "revoke_failed": 0, "released": 0, "release_failed": 0,
                         "requeued": 0, "requeue_failed": 0, "unwatched": 0, "unwatch_failed": 0,
                         "lookup_failed": 0}
        self.last_error = ""

    def _socket(self, family: int):
        ct = self._sockets.get(family)
        if ct is None:
            from pyroute2 import Conntrack  # imported lazily: only revocation needs it
            ct = self._sockets[family] = Conntrack(nfgen_family=family)
        return ct

    def open(self) -> None:
        """Open the conntrack sockets now (at start-up), so that the first revocation does
        not wait for pyroute2's import and socket set-up (~70 ms measured): the watch
        path's reaction time is the time a connection's packets pass unjudged."""
        for family in (socket.AF_INET, socket.AF_INET6):
            try:
                self._socket(family)
            except Exception as exc:     # e.g. no pyroute2: revocations will fail and be counted
                self.last_error = "%s: %s" % (type(exc).__name__, exc)

    def set_mark(self, flow, action: Action) -> bool:
        return self._write(flow, ACTION_MARKS[action], "released" if action is Action.ALLOW else "revoked")

    def requeue(self, flow) -> bool:
        """Replace the verdict bits with one no rule matches: the connection's next packets
        go to the queue again. (Not 0: pyroute2 leaves a zero mark out of the request.)"""
        return self._write(flow, MARK_REQUEUE, "requeued")

    def unwatch(self, flow) -> bool:
        """ONEWAY_WATCH -> ONEWAY: the classifier is done with a flow still inspected on
        its client's side; its server's packets pass without copies from now."""
        return self._write(flow, MARK_ONEWAY, "unwatched")

    def connection_state(self, flow) -> str:
        """What conntrack knows of the flow's connection: "open", "closed" (TCP in
        TIME_WAIT or CLOSE: both sides are done), "gone" (no entry), or "unknown" (the
        question failed: no pyroute2, no permission; counted). Never raises."""
        if flow is None or flow.proto in (PROTO_ICMP, PROTO_ICMPV6):
            return "unknown"
        from pyroute2.netlink.exceptions import NetlinkError
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        t = flow_tuple(flow)
        try:
            with self._lock:
                entry = self._socket(t["family"]).entry("get", tuple_orig=NFCTAttrTuple(**t))
        except NetlinkError as exc:
            if exc.code == errno.ENOENT:
                return "gone"
            self.counters["lookup_failed"] += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            return "unknown"
        except Exception as exc:
            self.counters["lookup_failed"] += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            return "unknown"
        if entry is None:
            return "gone"
        try:
            state = entry.get_nested("CTA_PROTOINFO", "CTA_PROTOINFO_TCP", "CTA_PROTOINFO_TCP_STATE")
        except Exception:
            state = None
        return "closed" if state in _TCP_DONE else "open"

    def _write(self, flow, mark: int, outcome: str) -> bool:
        failed = _FAILED[outcome]
        if flow is None or flow.proto in (PROTO_ICMP, PROTO_ICMPV6):
            # ICMP conntrack tuples key on the echo id, which the flow does not keep.
            self.counters[failed] += 1
            return False
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        t = flow_tuple(flow)
        try:
            with self._lock:
                self._socket(t["family"]).entry("set", mark=mark, mark_mask=MARK_MASK,
                                                tuple_orig=NFCTAttrTuple(**t))
        except Exception as exc:   # gone already, no permission, ...: counted, never fatal
            self.counters[failed] += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            return False
        self.counters[outcome] += 1
        return True

    def close(self) -> None:
        for ct in self._sockets.values():
            try:
                ct.close()
            except Exception:
                pass
        self._sockets.clear()
