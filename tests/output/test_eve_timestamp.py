"""egress.output.eve.timestamp (per-second prefix cache) equals the datetime definition."""
import random

import pytest

from egress.output import eve
from egress.output.eve import timestamp, timestamp_reference


def _same(ts):
    try:
        want = timestamp_reference(ts)
    except Exception as exc:       # out of range: the fast path must raise the same kind
        with pytest.raises(type(exc)):
            timestamp(ts)
        return
    assert timestamp(ts) == want, repr(ts)


@pytest.mark.parametrize("ts", [
    0.0, -0.0, 1.0, -1.0, 0.5, -0.5, 1e-7, -1e-7, 0.9999995, 0.9999994999, 1.0000005,
    1700000000.9999995, 1700000000.0000005, 1700000000.4999995, 1700000000.5000005,
    -1700000.9999995, 253402300799.0, 253402300799.9999995, 1e16, float("inf"), float("nan"),
    0, 1700000000, True,
])
def test_edges(ts):
    _same(ts)


def test_random_and_half_microsecond_ties():
    rng = random.Random(7)
    for _ in range(50000):
        second, micros = rng.randint(0, 2_000_000_000), rng.randint(0, 999_999)
        _same(second + micros / 1e6 + rng.choice((0.0, 5e-7, -5e-7, 4.99e-7, 5.01e-7)))
        _same(rng.uniform(-1e10, 2.5e11))


def test_prefix_cache_is_bounded():
    eve._SECONDS.clear()
    for second in range(eve._SECONDS_MAX + 10):
        _same(1_600_000_000.25 + second)
    assert len(eve._SECONDS) <= eve._SECONDS_MAX
