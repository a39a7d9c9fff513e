"""The faster `Accumulator.values()` gives the schema-3 vector of the trained model bit
for bit (the frozen code in frozen_v3.py), at every packet of random flows."""
import random
import struct

from hypothesis import given, settings, strategies as st

from egress.features import Accumulator
from tests.features.frozen_v3 import values_reference
from tests.features.test_accumulator import _flow


def _bits(values):
    return [(type(v), struct.pack("<d", v)) for v in values]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 80), handshake=st.booleans(), proto=st.sampled_from([6, 17]),
       app=st.sampled_from([None, "tls", "stratum", "weird"]), cats=st.lists(st.sampled_from(["mining", "ssh", "x"])))
def test_values_equal_the_frozen_schema_3_code_bit_for_bit(seed, n, handshake, proto, app, cats):
    acc = Accumulator(proto)
    for p in _flow(random.Random(seed), n, handshake, proto):
        acc.add(*p)
        got = acc.values(app, cats)
        assert _bits(got) == _bits(values_reference(acc, app, cats))
    assert _bits(acc.values()) == _bits(values_reference(acc))


def test_snapshot_copies_every_slot_and_closes_only_its_copy():
    acc = Accumulator(6)
    for i, name in enumerate(Accumulator.__slots__):
        if name not in ("s", "first"):
            setattr(acc, name, 1000.5 + i)
    acc.bd = -1                                   # no open burst: the copy equals the original
    copy = acc.snapshot()
    for name in Accumulator.__slots__:
        assert getattr(copy, name) == getattr(acc, name), name
    assert copy.s is not acc.s and copy.s[0] is not acc.s[0] and copy.first is not acc.first

    acc = Accumulator(6)
    acc.add(1.0, 0, 100, 0x18, 9)
    before = (acc.s[0][:], acc.bd, acc.k)
    closed = acc.snapshot()
    assert (closed.bd, closed.k) == (-1, 1) and (acc.s[0][:], acc.bd, acc.k) == before


def test_fresh_accumulators_share_no_state():
    a, b = Accumulator(6), Accumulator(6)
    a.add(1.0, 0, 100, 0x18, 9)
    a.add(1.5, 1, 50, 0x18, 9)
    assert b.values() == Accumulator(6).values() and b.s[0] is not a.s[0] and b.s[1] is not a.s[1]
