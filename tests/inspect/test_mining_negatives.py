"""All mining detectors together: hard negatives are never mining; fuzzed input never raises.

Hard negatives: Bitcoin, Monero and Ethereum (RLPx) peer-to-peer, Ethereum node and
bitcoind JSON-RPC, LSP-style JSON-RPC, an ordinary JSON-lines API with a web "login",
texts and JSON that merely mention the method names.
"""
from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from egress.inspect.base import Status
from egress.inspect.ethminer import EthMinerDetector
from egress.inspect.pool_domain import PoolDomainDetector
from egress.inspect.stratum import StratumDetector
from egress.inspect.stratum_v2 import StratumV2Detector
from egress.inspect.ws_mining import WebSocketMiningDetector
from egress.inspect.xmr import CryptoNoteDetector
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import grow, one_shot, view, ws_wrap

DETECTORS = [StratumDetector(), CryptoNoteDetector(), EthMinerDetector(), WebSocketMiningDetector(),
             StratumV2Detector(), PoolDomainDetector()]
EXPECTED = {   # which detector owns which mining sample (raw TCP)
    "stratum_btc": "stratum", "stratum_zcash": "stratum", "ethstratum": "stratum", "configure": "stratum",
    "xmr_stak": "cryptonote", "xmrig": "cryptonote", "ethproxy": "ethminer", "getwork_http": "ethminer",
    "gbt_http": "ethminer", "eth_getwork_http": "ethminer", "coinhive": "cryptonote",
}


@pytest.mark.parametrize("name", sorted(ms.NEGATIVES))
@pytest.mark.parametrize("det", DETECTORS, ids=[d.name for d in DETECTORS])
def test_hard_negatives_are_not_mining(det, name):
    transcript = ms.NEGATIVES[name]
    result = one_shot(det, transcript)
    assert result.status is Status.NO_MATCH and not result.detections
    result, _ = grow(det, transcript, step=3)
    assert result.status is Status.NO_MATCH and not result.detections


@pytest.mark.parametrize("name", sorted(ms.NEGATIVES))
def test_hard_negatives_inside_websocket_are_not_mining(name):
    result = one_shot(WebSocketMiningDetector(), ws_wrap(ms.NEGATIVES[name]))
    assert result.status is not Status.MATCH


@pytest.mark.parametrize("name", sorted(ms.MINING))
def test_each_mining_sample_is_claimed_by_exactly_its_detector(name):
    transcript = ms.MINING[name]
    if name == "coinhive":                     # browser-miner messages without newlines: one per line here
        transcript = [(k, d + b"\n") for k, d in transcript]
    matched = [d.name for d in DETECTORS if one_shot(d, transcript).status is Status.MATCH]
    assert matched == [EXPECTED[name]]


SAMPLE_STREAMS = [ms.streams(t) for t in list(ms.MINING.values()) + list(ms.NEGATIVES.values())]


@settings(max_examples=200, deadline=None)
@given(up=st.binary(max_size=600), down=st.binary(max_size=600), closed=st.booleans())
def test_random_bytes_never_raise(up, down, closed):
    for det in DETECTORS:
        result = det.inspect(view(up, down, closed, sizes=[(0.0, 0, len(up)), (0.1, 1, len(down))]))
        assert result.status in Status


@settings(max_examples=200, deadline=None)
@given(index=st.integers(0, len(SAMPLE_STREAMS) - 1), seed=st.integers(0, 2**32 - 1),
       flips=st.integers(1, 12), cut=st.floats(0, 1), ws=st.booleans())
def test_mutated_samples_never_raise(index, seed, flips, cut, ws):
    rng = random.Random(seed)
    up, down = SAMPLE_STREAMS[index]
    if ws:
        wrapped = ws_wrap([(0, up), (1, down)])
        up = b"".join(d for k, d in wrapped if k == 0)
        down = b"".join(d for k, d in wrapped if k == 1)
    streams = []
    for data in (up, down):
        data = bytearray(data[:int(len(data) * cut) + 1])
        for _ in range(flips):
            if data:
                pos = rng.randrange(len(data))
                data[pos] = rng.choice(b'{}[]":,\n\r\\0x \xff\x00' + bytes([rng.randrange(256)]))
        streams.append(bytes(data))
    for det in DETECTORS:
        result = det.inspect(view(streams[0], streams[1], rng.random() < 0.5))
        assert result.status in Status


@settings(max_examples=100, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) |
                    st.dictionaries(st.sampled_from(["id", "method", "params", "result", "type", "job", "blob",
                                                     "login", "agent", "job_id", "target", "nonce"]),
                                    children, max_size=5), max_leaves=20),
       st.sampled_from(["mining.notify", "mining.submit", "login", "job", "submit", "eth_submitWork",
                        "getwork", "mining.subscribe", "keepalived"]))
def test_arbitrary_json_shapes_never_raise(value, method):
    import json
    from egress.inspect import ethminer, stratum, xmr
    for obj in ({"id": 1, "method": method, "params": value}, {"id": 1, "result": value},
                {"type": method, "params": value}):
        line = json.dumps(obj).encode() + b"\n"
        for det in DETECTORS:
            assert det.inspect(view(line, line)).status in Status
        stratum.classify(obj), xmr.classify(obj), ethminer.classify(obj, True)


def test_deeply_nested_json_is_handled():
    deep = b"[" * 50000 + b"]" * 50000 + b"\n"
    for det in DETECTORS:
        assert det.inspect(view(deep[:8192], b"")).status in Status
    nested_line = b'{"method":"mining.notify","params":' + b"[" * 3000 + b"]" * 3000 + b"}\n"
    assert StratumDetector().inspect(view(nested_line, b"")).status in Status


@settings(max_examples=200, deadline=None)
@given(prefix=st.sampled_from([b"\x05\x01\x00", b"\x05\x02\x00\x02", b"\x04\x01", b"CONNECT ", b"\x05"]),
       up=st.binary(max_size=80), down=st.binary(max_size=40),
       down_prefix=st.sampled_from([b"", b"\x05\x00", b"\x05\x02\x01\x00", b"\x00\x5a", b"HTTP/1.1 200 OK\r\n\r\n"]))
def test_proxy_preambles_never_raise(prefix, up, down, down_prefix):
    from egress.inspect import mining_proxy
    mining_proxy.strip(prefix + up, down_prefix + down)
    for det in DETECTORS:
        assert det.inspect(view(prefix + up, down_prefix + down, True)).status in Status
