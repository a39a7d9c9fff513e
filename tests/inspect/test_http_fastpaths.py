"""Cheaper forms of HTTP-detector checks give the answers of the plain forms."""
import random

from egress.inspect import mining_http
from egress.inspect.base import StreamView
from egress.inspect.ethminer import _maybe_mining

PIECES = [b"GET / HTTP/1.1\r\n", b"HTTP/1.1 200 OK\r\n", b"X-Stratum: x\r\n", b"x-Mining-Extensions: y\r\n",
          b"Content-Length: 2\r\n", b"Connection: close\r\n", b"\r\n", b"ok", b"{", b"[", b"X", b"x", b"-",
          b"Upgrade: websocket\r\n", b"HTTP/1.0 101 Switching\r\n", b"POST /rpc HTTP/1.0\r\n", b"\xff\xc0"]


def _streams(seed, n=3000):
    rng = random.Random(seed)
    return [b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, 8))) for _ in range(n)]


def test_maybe_mining_is_the_lowercase_test():
    for data in _streams(1) + [b"", b"X-", b"x-", b"-x", b"X", b"a\nX-a"]:
        assert _maybe_mining(data) == (b"{" in data or b"[" in data or b"x-" in data.lower())


def test_exchange_kept_on_the_view_equals_a_fresh_walk():
    ups, downs = _streams(2, 300), _streams(3, 300)
    for up, down in zip(ups, downs):
        view = StreamView(6, b"\x0a\0\0\x01", 1, b"\x0a\0\0\x02", 2, up, down)
        first = mining_http.exchange(view, up, down)
        again = mining_http.exchange(view, up, down)
        assert again is first
        fresh = mining_http._exchange(StreamView(6, b"", 1, b"", 2, up, down), up, down)
        for mine, theirs in zip(first, fresh):
            assert _walk_state(mine) == _walk_state(theirs)
        other = down + b"HTTP/1.1 200 OK\r\n\r\n"          # other bytes: not the kept answer
        assert _walk_state(mining_http.exchange(view, up, other)[1]) == \
            _walk_state(mining_http.walk(other, tuple(m.method for m in first[0].msgs)))


def _walk_state(w):
    return ([(m.start, m.body_at, m.end, m.method, m.code, m.close, m.upgrade) for m in w.msgs],
            w.partial, w.close, w.switch, w.end, w.rest, w.skipped, w.answers)
