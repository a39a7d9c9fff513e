"""The PolicyEngine inside the real Engine: packets in, verdicts out (no network).

Deny by default must still let a TLS connection show its SNI, then decide for good;
DNS answers seen by the engine feed the domain rules; attribution lands on EVE events."""
from __future__ import annotations

import ssl

from egress.engine import Engine
from egress.policy import PolicyEngine
from egress.testing.craft import TcpSession
from egress.types import Action, RawPacket

STRICT = """\
version: 1
policies:
  strict:
    mode: enforce
    rules:
      - name: registries
        action: allow
        proto: tcp
        ports: [443]
        domains: [pypi.org]
    default: reject
"""


def client_hello(server_name: str) -> bytes:
    """A real ClientHello from Python's ssl module, through memory BIOs (no socket)."""
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=server_name)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def run(session: TcpSession, policy: PolicyEngine):
    engine = Engine(policy=policy)
    decisions = [engine.process(RawPacket(ts, pkt)) for ts, pkt in session.packets]
    engine.flush()
    return decisions, engine.drain_events()


def test_deny_by_default_lets_the_handshake_show_an_allowed_sni():
    s = TcpSession(("10.88.0.5", 40000), ("192.0.2.10", 443)).handshake()
    s.send(True, client_hello("pypi.org")).send(False, b"\x16\x03\x03" + bytes(200))
    s.send(True, b"\x17\x03\x03" + bytes(3000)).close()
    decisions, events = run(s, PolicyEngine.from_text(STRICT))
    assert all(d.action is Action.ALLOW for d in decisions)
    flow = [e for e in events if e["event_type"] == "flow"][0]
    assert flow["verdict"]["rule"] == "registries" and "domain pypi.org (sni)" in flow["verdict"]["reasons"]


def test_deny_by_default_blocks_once_the_sni_is_not_allowed():
    s = TcpSession(("10.88.0.5", 40001), ("192.0.2.10", 443)).handshake()
    s.send(True, client_hello("evil.example")).send(False, b"\x16\x03\x03" + bytes(200)).close()
    decisions, _ = run(s, PolicyEngine.from_text(STRICT))
    assert [d.action for d in decisions[:3]] == [Action.ALLOW] * 3        # handshake: waiting for the SNI
    assert decisions[3].action is Action.REJECT and decisions[3].verdict.rule == "default"


def test_a_flow_that_never_names_itself_is_blocked_when_the_wait_ends():
    s = TcpSession(("10.88.0.5", 40002), ("192.0.2.10", 443)).handshake()
    for _ in range(12):
        s.send(True, b"\x00" * 100, ack=False)
    decisions, _ = run(s, PolicyEngine.from_text(STRICT))
    assert decisions[0].verdict.rule == "pending"
    assert decisions[-1].action is Action.REJECT
    blocked_at = next(i for i, d in enumerate(decisions) if d.action is not Action.ALLOW)
    assert blocked_at <= 12, blocked_at                      # within the pending budget


def test_sandbox_attribution_is_on_every_event():
    from egress.policy.attribution import make_entry
    policy = PolicyEngine.from_text(STRICT, sandbox_entries=[make_entry("10.88.0.0/24", "sbx-1", "ep-7", source="file")])
    s = TcpSession(("10.88.0.5", 40003), ("192.0.2.10", 443)).handshake()
    s.send(True, client_hello("evil.example")).close()
    _, events = run(s, policy)
    assert events and all(e.get("sandbox") == {"id": "sbx-1", "episode": "ep-7"} for e in events)
    assert {e["event_type"] for e in events} == {"alert", "flow"}
    assert policy.attribution.violations(sandbox="sbx-1", episode="ep-7")[0]["rule"] == "default"


def dns_response(name: str, address: str, ttl: int = 60, ident: int = 0x1234) -> bytes:
    import ipaddress
    import struct
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    question = qname + struct.pack("!HH", 1, 1)
    answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + ipaddress.ip_address(address).packed
    return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer


def dns_query(name: str, ident: int = 0x1234) -> bytes:
    import struct
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", 1, 1)


def test_dns_answers_seen_by_the_engine_allow_the_address_for_its_ttl():
    from egress.testing.craft import udp
    t0 = 1_700_000_000.0
    packets = [(t0, udp("10.88.0.5", "10.88.0.2", 5353, 53, dns_query("pypi.org"))),
               (t0 + 0.01, udp("10.88.0.2", "10.88.0.5", 53, 5353, dns_response("pypi.org", "151.101.0.223")))]
    good = TcpSession(("10.88.0.5", 40010), ("151.101.0.223", 443), t0=t0 + 1).handshake()
    good.send(True, b"\x00" * 600).close()
    late = TcpSession(("10.88.0.5", 40011), ("151.101.0.223", 443), t0=t0 + 600).handshake()
    late.send(True, b"\x00" * 600).close()
    policy = PolicyEngine.from_text(STRICT.replace("proto: tcp", "proto: [tcp, udp]").replace(
        "    rules:\n", "    rules:\n      - name: dns\n        action: allow\n        ports: [53]\n", 1))
    engine = Engine(policy=policy)
    for ts, pkt in packets + good.packets + late.packets:
        engine.process(RawPacket(ts, pkt))
    engine.flush()
    flows = {e["src_port"]: e for e in engine.drain_events() if e["event_type"] == "flow"}
    assert flows[40010]["verdict"]["rule"] == "registries"
    assert any("address from DNS" in r for r in flows[40010]["verdict"]["reasons"])
    assert flows[40011]["verdict"]["action"] == "reject"          # ten minutes later: the 60 s TTL is over


def test_audit_mode_passes_every_packet_and_eve_shows_the_action():
    audit = STRICT.replace("mode: enforce", "mode: audit")
    s = TcpSession(("10.88.0.5", 40020), ("192.0.2.10", 443)).handshake()
    s.send(True, client_hello("evil.example")).send(False, b"\x16\x03\x03" + bytes(100)).close()
    decisions, events = run(s, PolicyEngine.from_text(audit))
    assert all(d.action is Action.ALLOW for d in decisions)
    flow = [e for e in events if e["event_type"] == "flow"][0]
    assert (flow["verdict"]["action"], flow["verdict"]["mode"]) == ("reject", "audit")
    alert = [e for e in events if e["event_type"] == "alert"][0]
    assert alert["alert"]["action"] == "allowed" and alert["verdict"]["action"] == "reject"
