"""Cross-flow observers through the engine: metadata by address at once, by name once known."""
import struct

from egress.engine import Engine
from egress.testing import craft
from egress.types import RawPacket


def dns_query(name: str) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + labels + struct.pack("!HH", 1, 1)


def categories_after(packets):
    engine = Engine()
    decisions = [engine.process(RawPacket(ts, p, 101)) for ts, p in packets]
    return decisions[0].flow.categories(), decisions


def test_metadata_address_is_known_on_the_first_packet():
    syn = craft.tcp("10.200.0.2", "169.254.169.254", 40000, 80, "S")
    cats, _ = categories_after([(1.0, syn)])
    assert "metadata" in cats


def test_metadata_name_in_a_dns_question_is_found_once_the_detector_read_it():
    query = craft.udp("10.200.0.2", "10.200.0.1", 41000, 53, dns_query("metadata.google.internal"))
    cats, _ = categories_after([(1.0, query)])
    assert "metadata" in cats


def test_an_ordinary_name_is_not_metadata():
    query = craft.udp("10.200.0.2", "10.200.0.1", 41000, 53, dns_query("pypi.org"))
    cats, _ = categories_after([(1.0, query)])
    assert "metadata" not in cats


def dns_answer(name: str, address: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    header = struct.pack("!HHHHHH", qid, 0x8180, 1, 1, 0, 0)
    question = labels + struct.pack("!HH", 1, 1)
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes(int(x) for x in address.split("."))
    return header + question + answer


def test_two_answers_on_one_resolver_socket_are_both_kept_for_the_policy():
    ex = craft.UdpExchange(("10.200.0.2", 41000), ("10.200.0.1", 53))
    ex.send(True, dns_query("a.example")).send(False, dns_answer("a.example", "10.200.9.1", 7))
    ex.send(True, dns_query("b.example")).send(False, dns_answer("b.example", "10.200.9.2", 7))
    engine = Engine()
    decisions = [engine.process(RawPacket(ts, p, 101)) for ts, p in ex.packets]
    answers = decisions[-1].flow.facts["dns.answers"]
    assert {a["data"] for a in answers} == {"10.200.9.1", "10.200.9.2"}
