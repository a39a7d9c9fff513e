"""Workers share learned DNS answers: what one publishes, the others drain, in order;
bad messages and absent siblings are counted, never raised; the engine hands answers on
only when its policy learned them and drains before it judges a new flow."""
from __future__ import annotations

import os

from egress.drivers.peers import Peers, address

ANSWERS = [{"name": "echo.egress.test", "type": "A", "data": "10.207.2.2", "ttl": 60}]


def make(count: int) -> list[Peers]:
    token = "t%d-%d" % (os.getpid(), id(make) % 10000)
    return [Peers(token, slot, count) for slot in range(count)]


def test_answers_reach_every_other_worker_once_in_order():
    a, b, c = make(3)
    try:
        a.publish(ANSWERS, 100.0)
        a.publish(ANSWERS[:0], 101.0)
        got = {peer.slot: [] for peer in (a, b, c)}
        for peer in (a, b, c):
            peer.drain(lambda answers, now, slot=peer.slot: got[slot].append((answers, now)))
        assert got == {0: [], 1: [(ANSWERS, 100.0), ([], 101.0)], 2: [(ANSWERS, 100.0), ([], 101.0)]}
        assert a.counters["sent"] == 4 and b.counters["received"] == 2
        assert b.drain(lambda *_: None) == 0                   # nothing left, never blocks
    finally:
        for peer in (a, b, c):
            peer.close()


def test_a_missing_sibling_or_a_bad_message_is_counted():
    a, b = make(2)
    b.close()                                                  # a sibling restarting
    a.publish(ANSWERS, 1.0)
    assert a.counters["send_failed"] == 1
    a.close()
    a, b = make(2)
    try:
        a.sock.sendto(b"{not json", address(a.token, 1))
        a.sock.sendto(b'{"answers": []}', address(a.token, 1))  # no time
        a.publish(ANSWERS, 2.0)
        def learn(answers, now):
            raise ValueError("bad answers")                  # the policy refused it
        assert b.drain(learn) == 1
        assert b.counters["malformed"] == 3 and b.counters["received"] == 1
    finally:
        a.close()
        b.close()


def test_the_engine_hands_on_learned_answers_and_drains_before_new_flows():
    from egress.engine import Engine
    from egress.policy.engine import PolicyEngine
    from egress.testing.craft import TcpSession, udp
    from egress.types import RawPacket
    from tests.policy.test_engine_policy import dns_query, dns_response
    policy = PolicyEngine.from_text("version: 1\ndefault_policy: p\npolicies:\n  p:\n    mode: enforce\n"
                                    "    rules: []\n    default: allow\n")
    engine = Engine(policy=policy)
    learned, drained = [], []
    engine.on_dns_learned = lambda answers, now: learned.append(answers)
    engine.before_new_flow = lambda: drained.append(1)
    t0 = 1_700_000_000.0
    packets = [(t0, udp("10.88.0.5", "10.88.0.2", 5353, 53, dns_query("echo.egress.test"))),
               (t0 + 0.01, udp("10.88.0.2", "10.88.0.5", 53, 5353, dns_response("echo.egress.test", "10.207.2.2"))),
               (t0 + 0.02, udp("10.88.0.2", "10.88.0.5", 53, 5353, dns_response("echo.egress.test", "10.207.2.2")))]
    packets += TcpSession(("10.88.0.5", 40000), ("10.207.2.2", 80), t0=t0 + 1).handshake().packets
    for ts, data in packets:
        engine.process(RawPacket(ts, data))
    # Once per answer batch (the repeated response teaches nothing new), and only what the
    # policy learned; one drain per new flow (the DNS flow and the TCP flow).
    assert [[a["data"] for a in answers if a["type"] == "A"] for answers in learned] == [["10.207.2.2"]]
    assert len(drained) == 2


def test_shared_answers_teach_the_receiving_policy():
    from egress.policy.engine import PolicyEngine
    policy = PolicyEngine.from_text("version: 1\ndefault_policy: p\npolicies:\n  p:\n    mode: enforce\n"
                                    "    rules: []\n    default: allow\n")
    policy.learn_shared(ANSWERS, 1_700_000_000.0)
    import ipaddress
    packed = lambda text: ipaddress.ip_address(text).packed
    assert policy.dns.resolves_to("echo.egress.test", packed("10.207.2.2"), 1_700_000_001.0) is True
    assert policy.dns.resolves_to("echo.egress.test", packed("10.207.2.3"), 1_700_000_001.0) is False
    assert policy.counters["dns_shared"] == 1
