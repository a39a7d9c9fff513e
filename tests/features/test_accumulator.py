"""The incremental accumulator equals the batch recomputation, and reading it is pure."""
import math
import random

from hypothesis import given, settings, strategies as st

from egress.features import Accumulator, FEATURE_NAMES, SIGNATURE_FEATURES
from egress.features import batch
from egress.features.schema import INDEX

SYN, ACK, PSH, FIN, RST = 0x02, 0x10, 0x08, 0x01, 0x04


def _flow(rng: random.Random, n: int, handshake: bool, proto: int = 6):
    """A plausible packet sequence: optional handshake, then data, acks, pauses, FIN/RST."""
    t = 1_700_000_000.0 + rng.random()
    pk = []
    if handshake and proto == 6:
        pk.append((t, 0, 0, SYN, rng.choice([64240, 65535, 29200])))
        t += rng.choice([1e-4, 0.02, 0.15])
        pk.append((t, 1, 0, SYN | ACK, rng.choice([65160, 28960, 0])))
        t += 1e-4
        pk.append((t, 0, 0, ACK, 502))
    for _ in range(n):
        t += rng.choice([0.0, 1e-5, 0.001, 0.02, 0.05, 0.3, 2.0, 31.0]) * rng.random()
        d = rng.randrange(2)
        size = rng.choice([0, 0, 1, 40, 90, 300, 599, 600, 1448, 4000])
        if proto == 6:
            flags = rng.choice([ACK, ACK | PSH, ACK | PSH, FIN | ACK, RST, ACK]) if rng.random() < 0.97 else RST | ACK
            win = rng.choice([0, 501, 502, 1024, 65535])
        else:
            flags, win = 0, 0
        pk.append((t, d, size, flags, win))
    return pk


def _assert_close(a, b):
    assert len(a) == len(b) == len(FEATURE_NAMES)
    for name, x, y in zip(FEATURE_NAMES, a, b):
        assert math.isclose(x, y, rel_tol=1e-7, abs_tol=1e-7), (name, x, y)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32), n=st.integers(0, 120), handshake=st.booleans(), proto=st.sampled_from([6, 17]))
def test_incremental_equals_batch(seed, n, handshake, proto):
    rng = random.Random(seed)
    pk = _flow(rng, n, handshake, proto)
    acc = Accumulator(proto)
    for p in pk:
        acc.add(*p)
    _assert_close(acc.values("tls", ["mining"]), batch.compute(pk, proto, "tls", ["mining"]))


def test_reading_at_checkpoints_does_not_change_the_state():
    rng = random.Random(7)
    pk = _flow(rng, 200, True)
    acc = Accumulator(6)
    for i, p in enumerate(pk):
        acc.add(*p)
        if i in (8, 32, 128):
            _assert_close(acc.values(), batch.compute(pk[: i + 1]))
    _assert_close(acc.values(), batch.compute(pk))


def test_signature_features_are_zero_without_detections():
    rng = random.Random(3)
    acc = Accumulator(6)
    for p in _flow(rng, 50, True):
        acc.add(*p)
    off = acc.values(None, [])
    assert all(off[INDEX[n]] == 0.0 for n in SIGNATURE_FEATURES)
    on = acc.values("stratum", ["mining", "ssh"])
    assert on[INDEX["app_mining"]] == 1.0 and on[INDEX["det_mining"]] == 1.0 and on[INDEX["det_ssh"]] == 1.0
    # everything else is identical: the detector features are the only difference
    assert [v for n, v in zip(FEATURE_NAMES, on) if n not in SIGNATURE_FEATURES] == \
           [v for n, v in zip(FEATURE_NAMES, off) if n not in SIGNATURE_FEATURES]


def test_request_response_shape():
    """A client that asks and a server that answers: exchanges, alternation, client first."""
    acc = Accumulator(6)
    t = 0.0
    for _ in range(10):
        acc.add(t, 0, 100, ACK | PSH, 500)
        acc.add(t + 0.01, 1, 200, ACK | PSH, 500)
        t += 1.0
    v = dict(zip(FEATURE_NAMES, acc.values()))
    assert v["client_first"] == 1.0 and v["server_first"] == 0.0
    assert v["exchanges"] == 10 and v["exchange_resp_req_ratio"] == 2.0
    assert v["alternation_frac"] == 1.0 and v["small_sym_frac"] == 1.0
    assert v["idle_init_frac_toserver"] == 1.0 and v["idle_init_frac_toclient"] == 0.0
    assert abs(v["burst_interval_mean_toserver"] - 1.0) < 1e-9 and v["burst_interval_cv_toserver"] < 1e-6


def test_server_pushes_are_seen():
    """A server that speaks after every silence (job notifications) and pushes repeatedly."""
    acc = Accumulator(6)
    for i in range(10):
        acc.add(float(i), 1, 300, ACK | PSH, 500)
    v = dict(zip(FEATURE_NAMES, acc.values()))
    assert v["server_first"] == 1.0
    assert v["push_frac_toclient"] == 0.9
    assert v["idle_init_frac_toclient"] == 1.0


def test_fixed_size_messages_repeat():
    """Shares of one size (a miner) repeat; requests of random sizes do not."""
    fixed, varied = Accumulator(6), Accumulator(6)
    rng = random.Random(5)
    for i in range(20):
        fixed.add(float(i), 0, 212, ACK | PSH, 500)
        fixed.add(i + 0.01, 1, 40, ACK | PSH, 500)
        varied.add(float(i), 0, rng.randrange(50, 3000), ACK | PSH, 500)
        varied.add(i + 0.01, 1, 40, ACK | PSH, 500)
    f = dict(zip(FEATURE_NAMES, fixed.values()))
    v = dict(zip(FEATURE_NAMES, varied.values()))
    assert f["burst_repeat_frac_toserver"] == 1.0 and f["burst_repeat_frac_toclient"] == 1.0
    assert v["burst_repeat_frac_toserver"] < 0.2 and v["burst_repeat_frac_toclient"] == 1.0


def _pool_and_miner(job_sizes, rng):
    """Shares answered by acks, and jobs the pool pushes unasked in between."""
    acc = Accumulator(6)
    t = 0.0
    for i in range(40):
        if i % 3 == 0:
            acc.add(t, 0, 180, ACK | PSH, 500)                  # share
            acc.add(t + 0.02, 1, 40, ACK | PSH, 500)            # ack
        else:
            acc.add(t, 1, job_sizes(rng), ACK | PSH, 500)       # job / event
        t += rng.uniform(0.5, 3.0)
    return dict(zip(FEATURE_NAMES, acc.values()))


def test_push_sizes_tell_jobs_from_events():
    """A pool's jobs keep one size; a feed's events do not. Both are pushes."""
    rng = random.Random(11)
    jobs = _pool_and_miner(lambda r: 310, rng)
    events = _pool_and_miner(lambda r: r.randrange(20, 600), rng)
    for v in (jobs, events):
        assert v["late_push_frac_toclient"] > 0.3 and v["push_per_request"] > 1.0
        assert v["exchange_resp_cv"] < 1e-6                     # every share got the same ack
    assert jobs["push_size_cv_toclient"] < 1e-6 and jobs["push_size_mean_toclient"] == 310
    assert jobs["push_repeat_frac_toclient"] == 1.0 and events["push_repeat_frac_toclient"] < 0.2
    assert events["push_size_cv_toclient"] > 0.3
    assert jobs["size_buckets_toclient"] == 2 and events["size_buckets_toclient"] > 10


def test_request_reply_only_has_no_pushes():
    """Telemetry: the client uploads, the server answers; the server never speaks unasked."""
    acc = Accumulator(6)
    for i in range(30):
        acc.add(i * 2.0, 0, 700, ACK | PSH, 500)
        acc.add(i * 2.0 + 0.01, 1, 250, ACK | PSH, 500)
    v = dict(zip(FEATURE_NAMES, acc.values()))
    assert v["push_frac_toclient"] == 0.0 and v["late_push_frac_toclient"] == 0.0 and v["push_per_request"] == 0.0
    assert v["server_answer_lat_frac"] < 0.01                    # the server answers at once, the client thinks


def test_server_driven_exchanges_reverse_the_answer_latency():
    """The far end of a reverse tunnel: the server asks after a pause, the client answers at once."""
    acc = Accumulator(6)
    for i in range(30):
        acc.add(i * 2.0, 1, 150, ACK | PSH, 500)
        acc.add(i * 2.0 + 0.01, 0, 9000, ACK | PSH, 500)
    v = dict(zip(FEATURE_NAMES, acc.values()))
    assert v["server_answer_lat_frac"] > 0.99
