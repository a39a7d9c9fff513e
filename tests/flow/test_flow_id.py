"""flow_id_for (a faster text of the start time) equals its definition."""
import random

import pytest

from egress.flow.table import _rounded_text, flow_id_for, flow_id_reference

KEY = (6, (b"\x0a\x00\x00\x01", 40000), (b"\x0a\x00\x00\x02", 443))


@pytest.mark.parametrize("start", [
    0.0, 1e-7, 0.5, 0.9999995, 1.0, 1.0000005, 1.5, 1_700_000_000.0, 1_700_000_000.1, 1_700_000_000.1234565,
    1_700_000_000.9999995, 4294967295.9999995, 4294967296.0, 4294967296.5, 1e16, -3.25, 7, 1_700_000_000,
    float("inf"),
])
def test_edges(start):
    assert _rounded_text(start) == repr(round(start, 6))
    assert flow_id_for(KEY, start) == flow_id_reference(KEY, start)


def test_random_times_and_half_microsecond_ties():
    rng = random.Random(11)
    for _ in range(100000):
        second, micros = rng.randint(0, 4_300_000_000), rng.randint(0, 999_999)
        for start in (second + micros / 1e6, second + (micros + 0.5) / 1e6, rng.uniform(0, 5e9),
                      rng.uniform(0, 2.0)):
            assert _rounded_text(start) == repr(round(start, 6)), repr(start)


def test_ids_of_other_keys():
    key6 = (17, (b"\xfd" + b"\x00" * 14 + b"\x01", 53), (b"\xfd" + b"\x00" * 14 + b"\x02", 5353))
    for key in (KEY, key6, (1, (b"\x01\x02\x03\x04", 0), (b"\x05\x06\x07\x08", 0))):
        assert flow_id_for(key, 1_700_000_123.456789) == flow_id_reference(key, 1_700_000_123.456789)
