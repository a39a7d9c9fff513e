"""Reassembly: detectors must see the byte stream, whatever the segmentation."""
import random

from hypothesis import given, settings, strategies as st

from egress.flow.reassembly import Reassembler

MESSAGE = b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5.1"]}\n'


def feed(segments, isn=999, budget=8192):
    r = Reassembler(budget)
    r.set_isn(isn)
    for seq, data in segments:
        r.add(seq, data)
    return r


def test_in_order_segments_make_the_stream():
    r = feed([(1000, MESSAGE[:10]), (1010, MESSAGE[10:])])
    assert r.bytes() == MESSAGE


def test_one_byte_segments_in_random_order_still_make_the_whole_message():
    segments = [(1000 + i, MESSAGE[i:i + 1]) for i in range(len(MESSAGE))]
    random.Random(7).shuffle(segments)
    r = Reassembler(8192, max_pending=len(MESSAGE))
    r.set_isn(999)
    for seq, data in segments:
        r.add(seq, data)
    assert r.bytes() == MESSAGE


def test_retransmission_is_ignored_and_conflicting_overlap_is_counted_first_copy_wins():
    r = feed([(1000, b"hello "), (1000, b"hello "), (1003, b"XXXworld")])
    assert r.bytes() == b"hello world"
    assert r.overlap_conflicts == 1


def test_sequence_numbers_wrap_around_2_to_the_32():
    isn = 2**32 - 4
    r = feed([(2**32 - 3, b"abc"), (0, b"defg")], isn=isn)
    assert r.bytes() == b"abcdefg"


def test_budget_caps_the_stream_and_marks_it_done():
    r = feed([(1000, b"a" * 100)], budget=64)
    assert len(r.bytes()) == 64 and r.done
    assert r.add(1100, b"more") is False


def test_out_of_order_hold_is_bounded_and_counted():
    r = Reassembler(8192, max_pending=2)
    r.set_isn(999)
    for i in range(5):
        r.add(2000 + 10 * i, b"x" * 5)
    assert len(r.pending) == 2 and r.dropped_segments == 3


def test_truncated_segment_ends_the_stream():
    r = Reassembler(8192)
    r.set_isn(999)
    r.add(1000, b"abc", truncated=True)
    assert r.done and r.bytes() == b"abc"


def test_without_a_syn_the_first_segment_starts_the_stream():
    r = Reassembler(8192)
    r.add(5000, b"def")
    r.add(4997, b"abcdef")   # earlier bytes than the start: only what follows is kept
    assert r.bytes() == b"def"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(MESSAGE) - 1), st.integers(1, 20)), max_size=60),
       st.randoms(use_true_random=False))
def test_any_cover_of_the_message_in_any_order_reassembles_exactly(cuts, rnd):
    segments = [(1000 + start, MESSAGE[start:start + n]) for start, n in cuts]
    segments.append((1000, MESSAGE))            # make sure every byte is covered once
    rnd.shuffle(segments)
    r = Reassembler(8192, max_pending=100)
    r.set_isn(999)
    for seq, data in segments:
        r.add(seq, data)
        assert MESSAGE.startswith(r.bytes())   # never a wrong byte, at any moment
        assert r.pending_bytes <= 8192
    assert r.bytes() == MESSAGE
