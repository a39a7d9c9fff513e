"""http.parse_head (the header block cut as latin-1 text) equals parse_head_reference (as bytes)."""
import random

from egress.inspect.http import MAX_BYTES, parse_head, parse_head_reference

PIECES = [b"GET / HTTP/1.1", b"Host: a.example", b"HOST:b", b"User-Agent: x\xa0y", b" X: 1", b"Bad Name: 1",
          b"no colon", b"\xc0\xdeName: \x85v\x1c ", b"K:\t v \x0b", b"Upgrade: WebSocket", b":empty", b"A:",
          b"\r", b"", b"\xff:\xff", b"x-Y-\xc9: \xe9", b"Content-Length: 5", b"a\rb: c", b"\x0cF: g\x0c"]


def _blocks(seed, n):
    rng = random.Random(seed)
    for _ in range(n):
        sep = rng.choice([b"\r\n", b"\n"])
        lines = [rng.choice(PIECES) for _ in range(rng.randint(0, 7))]
        end = rng.choice([sep + sep, sep, b"", b"\r\n\r\n", b"\n\n"])
        yield sep.join(lines) + end + rng.choice([b"", b"body", b"\r\n\r\nmore"])


def test_same_as_reference():
    for data in list(_blocks(1, 20000)) + [b"", b"\r\n\r\n", b"\n\n", b"A" * MAX_BYTES, b"G: h\r\n\r\n"]:
        assert parse_head(data) == parse_head_reference(data), data


def test_a_real_request():
    data = b"GET /index.html HTTP/1.1\r\nHost: www.egress.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"
    assert parse_head(data) == ("ok", [b"GET /index.html HTTP/1.1"],
                                {"host": "www.egress.test", "user-agent": "bench", "accept": "*/*"})
