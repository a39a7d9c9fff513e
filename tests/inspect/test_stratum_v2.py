"""Stratum v2: the Noise NX handshake shape (64-byte initiator act, 234-byte answer), weak signal."""
from __future__ import annotations

import random

from egress.inspect.base import Status
from egress.inspect.stratum_v2 import StratumV2Detector, looks_random
from tests.inspect.mining_helpers import view

DET = StratumV2Detector()
RNG = random.Random(2)
ACT1 = RNG.randbytes(64)
ACT2 = RNG.randbytes(234)
NEXT = RNG.randbytes(120)


def test_handshake_shape_matches_with_low_confidence():
    sizes = [(0.0, 0, 64), (0.01, 1, 234), (0.02, 0, 120)]
    result = DET.inspect(view(ACT1 + NEXT, ACT2, sizes=sizes))
    assert result.status is Status.MATCH and result.app_proto == "stratum-v2"
    det = result.detections[0]
    assert det.signature == "stratum.v2.noise_handshake" and det.category == "mining" and det.confidence < 1


def test_waits_for_the_answer_then_decides():
    assert DET.inspect(view(ACT1, b"", sizes=[(0.0, 0, 64)])).status is Status.NEED_MORE
    assert DET.inspect(view(ACT1, b"", closed=True, sizes=[(0.0, 0, 64)])).status is Status.NO_MATCH


def test_other_sizes_do_not_match():
    assert DET.inspect(view(ACT1[:63], b"", sizes=[(0.0, 0, 63)])).status is Status.NO_MATCH
    assert DET.inspect(view(ACT1, ACT2 + b"x", sizes=[(0.0, 0, 64), (0.1, 1, 235)])).status is Status.NO_MATCH
    # the server speaking first (SSH, SMTP...) is not Stratum v2
    assert DET.inspect(view(b"", ACT2, sizes=[(0.0, 1, 234)])).status is Status.NO_MATCH
    # two writes from the client before any answer
    assert DET.inspect(view(ACT1 + NEXT, b"", sizes=[(0.0, 0, 64), (0.1, 0, 120)])).status is Status.NO_MATCH


def test_plaintext_of_the_right_sizes_is_not_noise():
    text1 = (b"A" * 64)
    text2 = b'{"id":1,"method":"mining.subscribe"}'.ljust(234, b" ")
    sizes = [(0.0, 0, 64), (0.01, 1, 234)]
    assert DET.inspect(view(text1, text2, sizes=sizes)).status is Status.NO_MATCH
    assert not looks_random(bytes(64)) and looks_random(ACT1)


def test_without_sizes_the_prefix_lengths_decide():
    assert DET.inspect(view(ACT1, ACT2)).status is Status.MATCH
    assert DET.inspect(view(ACT1, ACT2[:100])).status is Status.NEED_MORE
    assert DET.inspect(view(ACT1 + b"x", ACT2)).status is Status.NO_MATCH
