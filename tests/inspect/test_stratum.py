"""Stratum v1 / EthereumStratum detector: real sessions, segmented, mid-session, one side only, negatives."""
from __future__ import annotations

import json

import pytest

from egress.inspect.base import Status
from egress.inspect.stratum import StratumDetector, classify
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import C, S, grow, one_shot, signature, view

DET = StratumDetector()

CASES = [
    ("stratum_btc", ms.STRATUM_BTC, "stratum.v1.subscribe"),
    ("stratum_zcash", ms.STRATUM_ZCASH, "stratum.v1.subscribe"),
    ("ethstratum", ms.ETHSTRATUM, "ethstratum.subscribe"),
    ("configure", ms.CONFIGURE, "stratum.v1.configure"),
]


@pytest.mark.parametrize("name,transcript,sig", CASES, ids=[c[0] for c in CASES])
def test_whole_session_matches(name, transcript, sig):
    result = one_shot(DET, transcript)
    assert result.status is Status.MATCH
    assert result.app_proto == "stratum"
    det = result.detections[0]
    assert det.category == "mining" and det.signature == sig


@pytest.mark.parametrize("name,transcript,sig", CASES, ids=[c[0] for c in CASES])
def test_one_byte_segments_reach_the_same_decision(name, transcript, sig):
    result, calls = grow(DET, transcript, step=1)
    assert result.status is Status.MATCH and calls > 10
    assert signature(result) == sig     # the first mining message of these sessions is the headline one


def test_evidence_names_agent_pool_and_redacted_worker():
    det = one_shot(DET, ms.STRATUM_ZCASH).detections[0]
    ev = det.evidence
    assert ev["agent"] == "EWBF 0.3.4b"
    assert ev["pool_host"] == "eu1-zcash.flypool.org"
    assert ev["worker"] == "t1fAhZF5\u2026.rig4"          # wallet cut to a prefix, rig name kept
    assert "t1fAhZF5aUJdY7CikGULHmeYk7id8qmvbAd" not in json.dumps(det.to_json())
    assert ev["direction"] == "both"
    assert {"mining.subscribe", "mining.notify", "mining.submit"} <= set(ev["methods"])


def test_server_side_only_mid_session():
    # The capture started after subscribe/authorize: only the pool's notifications are seen,
    # and the first bytes are the tail of a message.
    down = b"".join(d for k, d in ms.STRATUM_ZCASH if k == S)
    cut = down[down.index(b'"mining.set_target"') - 7:]
    result = DET.inspect(view(b"", cut))
    assert result.status is Status.MATCH
    assert signature(result) in ("stratum.v1.set_target", "stratum.v1.notify")
    assert result.detections[0].evidence["direction"] == "to_client"


def test_client_side_only_mid_session_submit():
    up = b"".join(d for k, d in ms.STRATUM_BTC if k == C)
    cut = up[up.index(b"mining.authorize") + 5:]            # starts inside the authorize line
    result = DET.inspect(view(cut, b""))
    assert result.status is Status.MATCH and signature(result) == "stratum.v1.submit"


def test_roles_swapped_still_found():
    up, down = ms.streams(ms.STRATUM_BTC)
    result = DET.inspect(view(down, up))          # the flow's "client" is really the pool
    assert result.status is Status.MATCH


def test_subscribe_response_alone_is_recognised():
    down = ms.STRATUM_BTC[1][1]
    result = DET.inspect(view(b"", down))
    assert result.status is Status.MATCH and signature(result) == "stratum.v1.subscribe"
    assert result.detections[0].evidence["method"] == "mining.subscribe(result)"


@pytest.mark.parametrize("line", [
    b'{"id":"a1","method":"mining.subscribe","params":["bmminer/2.0.0"]}\r\n',
    b'  {\n',                                                     # not a full line yet: see below
])
def test_whitespace_crlf_and_string_ids(line):
    if line.strip() == b"{":
        assert DET.inspect(view(line, b"")).status is Status.NEED_MORE
        return
    assert DET.inspect(view(line, b"")).status is Status.MATCH


def test_pretty_printed_spacing_and_jsonrpc_field():
    line = b'{ "jsonrpc" : "2.0" , "id" : null , "method" : "mining.set_difficulty" , "params" : [ 16384 ] }\n'
    result = DET.inspect(view(b"", line))
    assert result.status is Status.MATCH and signature(result) == "stratum.v1.set_difficulty"


def test_partial_line_needs_more_then_matches():
    line = ms.STRATUM_BTC[0][1]
    assert DET.inspect(view(line[:20], b"")).status is Status.NEED_MORE
    assert DET.inspect(view(line, b"")).status is Status.MATCH


def test_complete_message_without_newline_is_accepted():
    line = ms.STRATUM_BTC[0][1].rstrip(b"\n")
    assert DET.inspect(view(line, b"")).status is Status.MATCH


@pytest.mark.parametrize("obj", [
    {"id": 1, "method": "mining.notify", "params": ["only", "three", "params"]},   # too few params
    {"id": 1, "method": "mining.authorize", "params": [42]},                       # worker not a string
    {"id": 1, "method": "mining.submit", "params": "not-a-list"},
    {"id": 1, "method": "mining.set_difficulty", "params": [True]},
    {"id": 1, "method": "eth_getWork", "params": []},                              # not Stratum v1
    {"id": 1, "result": ["04d567b212", "04d567b212"]},                              # ambiguous alone
])
def test_wrong_shapes_are_not_stratum(obj):
    assert classify(obj) is None


def test_unknown_mining_namespace_call_counts_with_lower_confidence():
    hit = classify({"id": 9, "method": "mining.get_transactions", "params": ["1"]})
    assert hit is not None and hit.confidence < 1


def test_text_mentioning_the_methods_is_not_stratum():
    result = one_shot(DET, ms.MENTIONS)
    assert result.status is Status.NO_MATCH
    result = one_shot(DET, ms.JSON_MENTIONS)
    assert result.status is Status.NO_MATCH


def test_other_mining_protocols_are_left_to_their_detectors():
    for transcript in (ms.XMR_STAK, ms.ETHPROXY):
        assert one_shot(DET, transcript).status is Status.NO_MATCH


def test_binary_stream_is_rejected_at_once():
    assert DET.inspect(view(ms.BITCOIN_P2P[0][1][:24], b"")).status is Status.NO_MATCH


def test_many_json_lines_without_mining_give_up():
    lines = b"".join(b'{"id":%d,"method":"chat.post","params":["hello"]}\n' % i for i in range(40))
    assert DET.inspect(view(lines, b"")).status is Status.NO_MATCH


SOCKS5_UP = b"\x05\x01\x00" + b"\x05\x01\x00\x03\x14xmr-eu1.nanopool.org\x0d\x05"
SOCKS5_DOWN = b"\x05\x00" + b"\x05\x00\x00\x01\x0a\x00\x00\x01\x9c\x40"


@pytest.mark.parametrize("up_pre,down_pre,via,target", [
    (SOCKS5_UP, SOCKS5_DOWN, "socks5", "xmr-eu1.nanopool.org:3333"),
    (b"\x05\x01\x02" + b"\x01\x03bob\x02pw" + SOCKS5_UP[3:], b"\x05\x02" + b"\x01\x00" + SOCKS5_DOWN[2:],
     "socks5", "xmr-eu1.nanopool.org:3333"),
    (b"\x04\x01\x0d\x05\x00\x00\x00\x01user\x00pool.example\x00", b"\x00\x5a\x00\x00\x00\x00\x00\x00",
     "socks4", "pool.example:3333"),
    (b"CONNECT pool.example:3333 HTTP/1.1\r\nHost: pool.example:3333\r\n\r\n",
     b"HTTP/1.1 200 Connection established\r\n\r\n", "http-connect", "pool.example:3333"),
])
def test_stratum_behind_a_proxy_handshake(up_pre, down_pre, via, target):
    up, down = ms.streams(ms.STRATUM_BTC)
    transcript = [(C, up_pre), (S, down_pre), (C, up), (S, down)]
    result = one_shot(DET, transcript)
    assert result.status is Status.MATCH and signature(result) == "stratum.v1.subscribe"
    assert result.detections[0].evidence["via"] == via
    assert result.detections[0].evidence["proxy_target"] == target
    result, _ = grow(DET, transcript, step=1)
    assert result.status is Status.MATCH
    # the handshake alone is not mining, and a refused proxy is not stripped
    assert one_shot(DET, [(C, up_pre), (S, down_pre)]).status is Status.NO_MATCH


def test_http_connect_named_by_the_http_detector_still_inspected():
    up, down = ms.streams(ms.ETHPROXY)
    pre_up = b"CONNECT eth.pool.example:4444 HTTP/1.1\r\nHost: eth.pool.example:4444\r\n\r\n"
    pre_down = b"HTTP/1.0 200 OK\r\n\r\n"
    from egress.inspect.ethminer import EthMinerDetector
    result = EthMinerDetector().inspect(view(pre_up + up, pre_down + down))
    assert result.status is Status.MATCH and result.detections[0].evidence["via"] == "http-connect"
    v = view(pre_up + up, pre_down + down, app_proto="http")
    assert EthMinerDetector().inspect(v).status is Status.MATCH


def test_ethereumstratum_2_hello():
    line = (b'{"id":0,"method":"mining.hello","params":{"agent":"ethminer-0.19.0","host":"eu1.example-pool.org",'
            b'"port":"4d2","proto":"EthereumStratum/2.0.0"}}\n')
    result = DET.inspect(view(line, b""))
    assert result.status is Status.MATCH and signature(result) == "ethstratum.hello"
    assert result.detections[0].evidence["protocol"] == "EthereumStratum/2.0.0"
    assert classify({"id": 0, "method": "mining.hello", "params": {"x": 1}}) is None
