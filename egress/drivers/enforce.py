"""Turning engine decisions into kernel state outside the packet path.

The packet path enforces with verdict marks (egress.drivers.nfqueue). This module does
the one thing the packet path cannot: change the verdict of a flow that no longer
reaches the queue because it took the connmark fast path. It rewrites the connmark of
the live conntrack entry, looked up by its *full* original tuple (pyroute2's
Conntrack; `conntrack -U` with a partial tuple does not match, and deleting the entry
does not stop a TCP flow: the kernel re-creates it unmarked on the next packet).

It also ends the watch of a flow (egress.drivers.nflog): when the classifier is done
with an allowed flow whose packets pass with the WATCH connmark, the connmark becomes
ALLOW and the rest of the flow takes the fast path without copies.

Guarantees: `ConntrackMarker.set_mark` never raises; it returns whether the kernel
accepted the change and counts it: `revoked` / `revoke_failed` for a block,
`released` / `release_failed` for an allow, e.g. failed when the connection is gone.
"""
from __future__ import annotations

import socket
import threading

from egress.drivers.iptables import MARK_ALLOW, MARK_DROP, MARK_MASK, MARK_REJECT
from egress.types import PROTO_ICMP, PROTO_ICMPV6, Action, ip_text

ACTION_MARKS = {Action.ALLOW: MARK_ALLOW, Action.DROP: MARK_DROP, Action.REJECT: MARK_REJECT}


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
        self.counters = {"revoked": 0, "revoke_failed": 0, "released": 0, "release_failed": 0}
        self.last_error = ""

    def _socket(self, family: int):
        ct = self._sockets.get(family)
        if ct is None:
            from pyroute2 import Conntrack  # imported lazily: only revocation needs it
            ct = self._sockets[family] = Conntrack(nfgen_family=family)
        return ct

    def set_mark(self, flow, action: Action) -> bool:
        outcome = "released" if action is Action.ALLOW else "revoked"
        if flow is None or flow.proto in (PROTO_ICMP, PROTO_ICMPV6):
            # ICMP conntrack tuples key on the echo id, which the flow does not keep.
            self.counters[outcome[:-1] + "_failed"] += 1
            return False
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        t = flow_tuple(flow)
        try:
            with self._lock:
                self._socket(t["family"]).entry("set", mark=ACTION_MARKS[action], mark_mask=MARK_MASK,
                                                tuple_orig=NFCTAttrTuple(**t))
        except Exception as exc:   # gone already, no permission, ...: counted, never fatal
            self.counters[outcome[:-1] + "_failed"] += 1
            self.last_error = "%s: %s" % (type(exc).__name__, exc)
            return False
        self.counters[outcome] += 1
        return True

    def get_mark(self, flow) -> int | None:
        """The connection's egress mark bits, or None if conntrack has no such entry."""
        from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple
        t = flow_tuple(flow)
        try:
            with self._lock:
                msgs = self._socket(t["family"]).entry("get", tuple_orig=NFCTAttrTuple(**t))
        except Exception:
            return None
        for msg in msgs:
            mark = msg.get_attr("CTA_MARK")
            if mark is not None:
                return mark & MARK_MASK
        return None

    def close(self) -> None:
        for ct in self._sockets.values():
            try:
                ct.close()
            except Exception:
                pass
        self._sockets.clear()
