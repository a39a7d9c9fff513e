"""Remembered pieces of EVE formatting (fact groups, address texts) equal the plain forms."""
import random
from types import SimpleNamespace

from egress.output.eve import _facts
from egress.types import ip_text, ip_text_reference


def _facts_reference(facts):
    grouped = {}
    for name, value in facts.items():
        group, _, field = name.partition(".")
        if not field:
            group, field = "facts", name
        grouped.setdefault(group, {})[field] = value
    return grouped


def test_fact_groups():
    rng = random.Random(4)
    names = ["tls.sni", "http.host", "iface", "dns.answers", "ssh.kex_first", "a.b.c", ".x", "x.", "facts.y", "."]
    for _ in range(2000):
        facts = {rng.choice(names): rng.randint(0, 9) for _ in range(rng.randint(0, 6))}
        got = _facts(SimpleNamespace(facts=facts))
        want = _facts_reference(facts)
        assert got == want and [list(g) for g in got.values()] == [list(g) for g in want.values()]
        assert list(got) == list(want)


def test_address_texts():
    rng = random.Random(9)
    for _ in range(20000):
        addr = bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 3, 4, 5, 16, 17])))
        for value in (addr, bytearray(addr), memoryview(addr)):
            try:
                want = ip_text_reference(value)
            except Exception as exc:
                want = type(exc)
            try:
                got = ip_text(value)
            except Exception as exc:
                got = type(exc)
            assert got == want
