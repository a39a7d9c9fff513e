"""mining_anywhere.first_hit's one-scan prefilter (any dialect's needle) changes no answer."""
import random
import re

from egress.inspect import mining_anywhere
from egress.inspect.mining_anywhere import _DIALECTS, first_hit

PIECES = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b'{"id":1,"method":"mining.subscribe","params":["x"]}\n',
          b'{"id":1,"method":"login","params":{"login":"w","pass":"x","agent":"xmrig"}}\n',
          b'{"id":1,"method":"eth_submitLogin","params":["0xabc"]}\n', b"hello\n", b'"job"', b"mining.",
          b"eth_", b'{"data":', b"\n", b"{", b"garbage \xff\x00", b'"0x', b'"blob"']


def test_same_answer_without_the_prefilter(monkeypatch):
    rng = random.Random(5)
    samples = [b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 6))) for _ in range(3000)]
    with_filter = [first_hit(s) for s in samples]
    monkeypatch.setattr(mining_anywhere, "_ANY_NEEDLE", re.compile(b""))     # matches everywhere
    without = [first_hit(s) for s in samples]
    assert [None if a is None else (a[0].signature, a[1]) for a in with_filter] == \
           [None if b is None else (b[0].signature, b[1]) for b in without]
    assert any(a is not None for a in with_filter)


def test_prefilter_knows_every_needle():
    for needles, _ in _DIALECTS:
        for needle in needles:
            assert mining_anywhere._ANY_NEEDLE.search(b"x" + needle + b"y")
