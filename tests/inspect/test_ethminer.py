"""eth-proxy, getwork/getblocktemplate over HTTP, mining headers; Ethereum node JSON-RPC is not mining."""
from __future__ import annotations

import pytest

from egress.inspect.base import Status
from egress.inspect.ethminer import EthMinerDetector, classify
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import S, grow, one_shot, signature, view

DET = EthMinerDetector()

CASES = [
    ("ethproxy", ms.ETHPROXY, "ethproxy.submitLogin"),
    ("getwork_http", ms.GETWORK_HTTP, "getwork.http"),
    ("gbt_http", ms.GBT_HTTP, "getblocktemplate.http"),
    ("eth_getwork_http", ms.ETH_GETWORK_HTTP, "ethproxy.getWork.http"),
]


@pytest.mark.parametrize("name,transcript,sig", CASES, ids=[c[0] for c in CASES])
def test_sessions_match(name, transcript, sig):
    result = one_shot(DET, transcript)
    assert result.status is Status.MATCH and signature(result) == sig
    assert result.detections[0].category == "mining"


@pytest.mark.parametrize("name,transcript,sig", CASES, ids=[c[0] for c in CASES])
def test_one_byte_segments(name, transcript, sig):
    result, _ = grow(DET, transcript, step=1)
    # Same family; with bytes trickling in, a mining header may be seen before the body.
    assert result.status is Status.MATCH and signature(result).split(".")[0] == sig.split(".")[0]


def test_ethproxy_evidence():
    ev = one_shot(DET, ms.ETHPROXY).detections[0].evidence
    assert ev["worker"] == "0x0fccff\u2026.rig2" and ev["rig"] == "eth1.0"
    assert {"eth_submitLogin", "eth_getWork", "eth_submitWork", "eth_submitHashrate"} <= set(ev["methods"])


def test_getwork_answer_alone_mid_session():
    down = b"".join(d for k, d in ms.ETHPROXY if k == S)
    cut = down[10:]                                    # starts inside the login answer
    result = DET.inspect(view(b"", cut))
    assert result.status is Status.MATCH and signature(result) == "ethproxy.getWork"


def test_getwork_headers_alone():
    # Only the pool's answer was captured: its X-Stratum / X-Long-Polling headers say mining.
    result = DET.inspect(view(b"", ms.GETWORK_HTTP[1][1]))
    assert result.status is Status.MATCH and signature(result).startswith("getwork.x_")


def test_mining_extensions_request_header():
    req = b"POST / HTTP/1.1\r\nHost: h\r\nX-Mining-Extensions: midstate\r\nContent-Length: 2\r\n\r\n{}"
    result = DET.inspect(view(req, b""))
    assert result.status is Status.MATCH and signature(result) == "getwork.x_mining_extensions"


def test_chunked_body():
    body = ms.GETWORK_BODY
    req = (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n"
           % (len(body), body))
    assert signature(DET.inspect(view(req, b""))) == "getwork.http"


@pytest.mark.parametrize("name", sorted(k for k in ms.NEGATIVES if k.startswith(("eth_node", "bitcoind"))))
def test_node_json_rpc_is_not_mining(name):
    result = one_shot(DET, ms.NEGATIVES[name])
    assert result.status is Status.NO_MATCH and not result.detections
    result, _ = grow(DET, ms.NEGATIVES[name], step=7)
    assert result.status is Status.NO_MATCH


def test_node_rpc_decides_once_no_further_request_can_come():
    up, down = ms.streams(ms.ETH_NODE_RPC)
    assert DET.inspect(view(up, b"")).status is Status.NEED_MORE          # X-Stratum could still come
    assert DET.inspect(view(up, down[:40])).status is Status.NEED_MORE
    # keep-alive: another request (getwork) may follow on the connection (test_http_keepalive.py)
    assert DET.inspect(view(up, down)).status is Status.NEED_MORE
    closing = up.replace(b"Accept: */*", b"Connection: close")
    assert DET.inspect(view(closing, down)).status is Status.NO_MATCH


@pytest.mark.parametrize("obj", [
    {"jsonrpc": "2.0", "method": "eth_submitWork", "params": ["0x1", "0x2", "0x3"]},      # not hashes
    {"jsonrpc": "2.0", "method": "eth_submitLogin", "params": []},
    {"jsonrpc": "2.0", "id": 1, "result": ["0x1", "0x2", "0x3"]},                          # not 32-byte words
    {"jsonrpc": "2.0", "method": "getmininginfo", "params": []},                           # informational call
    {"jsonrpc": "2.0", "method": "submitblock", "params": ["00"]},                         # not a block
])
def test_wrong_shapes(obj):
    assert classify(obj) is None


def test_submitblock_and_gbt_answer():
    hit = classify({"method": "submitblock", "params": ["00" * 100], "id": 1}, True)
    assert hit is not None and hit.signature == "submitblock.http" and hit.confidence < 1
    hit = classify({"id": 0, "result": {"coinbasevalue": 625000000, "previousblockhash": "00" * 32,
                                        "transactions": []}})
    assert hit is not None and hit.signature.startswith("getblocktemplate")


def test_stratum_and_binary_left_alone():
    assert one_shot(DET, ms.STRATUM_BTC).status is Status.NO_MATCH
    assert one_shot(DET, ms.BITCOIN_P2P).status is Status.NO_MATCH
