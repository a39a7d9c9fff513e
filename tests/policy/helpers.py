"""Flows built by hand for policy tests (no engine needed)."""
from __future__ import annotations

import ipaddress
import itertools

from egress.flow.flow import Flow
from egress.policy import PolicyEngine
from egress.types import PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Detection

_ids = itertools.count(1)
PROTOS = {"tcp": PROTO_TCP, "udp": PROTO_UDP, "icmp": PROTO_ICMP, "icmp6": PROTO_ICMPV6}


def make_flow(src="10.0.0.5", dst="93.184.216.34", dport=443, proto="tcp", sport=40000, ts=1000.0,
              facts=None, detections=(), ml=None, app_proto=None, pkts=1, payload=0, inspecting=True,
              sandbox=None) -> Flow:
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    assert s.version == d.version
    p = PROTOS[proto]
    if p == PROTO_ICMP and s.version == 6:
        p = PROTO_ICMPV6
    flow = Flow(next(_ids), None, p, s.version, s.packed, sport if p in (6, 17) else 0, d.packed,
                dport if p in (6, 17) else 0, ts, "syn")
    flow.facts = dict(facts or {})
    flow.detections = [x if isinstance(x, Detection) else Detection(*x) for x in detections]
    flow.ml = ml
    flow.app_proto = app_proto
    flow.pkts_toserver = pkts
    flow.payload_toserver = payload
    flow.inspecting = [object()] if inspecting else None
    flow.sandbox = sandbox
    return flow


def dns_flow(answers, client="10.0.0.5", resolver="10.0.0.2", ts=999.0, query=None) -> Flow:
    facts = {"dns.answers": answers}
    if query:
        facts["dns.query"] = query
    return make_flow(client, resolver, 53, "udp", ts=ts, facts=facts, app_proto="dns")


def answer(name, data, rtype="A", ttl=300):
    return {"name": name, "type": rtype, "data": data, "ttl": ttl}


def engine(text: str) -> PolicyEngine:
    return PolicyEngine.from_text(text, "test.yaml")


def policy_text(rules: str, default: str = "allow", mode: str = "enforce", extra: str = "", top: str = "") -> str:
    """A one-policy document; `rules` is the YAML list body indented by 6 spaces."""
    body = "version: 1\n%spolicies:\n  p:\n    mode: %s\n%s    rules:\n%s    default: %s\n" % (
        top, mode, extra, rules if rules.strip() else "      []\n", default)
    return body
