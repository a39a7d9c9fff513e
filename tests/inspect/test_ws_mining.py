"""Mining inside WebSocket: browser miners and pool protocols in frames (masked, fragmented, deflated)."""
from __future__ import annotations

import zlib

import pytest

from egress.inspect.base import Status
from egress.inspect.ws_mining import WebSocketMiningDetector, frames, unmask
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import (C, S, WS_REQUEST, WS_RESPONSE, grow, one_shot, signature, view,
                                          ws_frame, ws_wrap)

DET = WebSocketMiningDetector()

CASES = [
    ("coinhive", ms.COINHIVE, "browser_miner.auth"),
    ("stratum", ms.STRATUM_BTC, "stratum.v1.subscribe"),
    ("xmrig", ms.XMR_STAK, "cryptonote.login"),
    ("ethproxy", ms.ETHPROXY, "ethproxy.submitLogin"),
]


@pytest.mark.parametrize("name,transcript,inner", CASES, ids=[c[0] for c in CASES])
def test_mining_in_frames(name, transcript, inner):
    result = one_shot(DET, ws_wrap(transcript))
    assert result.status is Status.MATCH and signature(result) == "mining.websocket"
    assert result.app_proto == "websocket"
    ev = result.detections[0].evidence
    assert ev["inner"] == inner and ev["host"] == "ws.example:443"


@pytest.mark.parametrize("name,transcript,inner", CASES, ids=[c[0] for c in CASES])
def test_one_byte_segments(name, transcript, inner):
    result, _ = grow(DET, ws_wrap(transcript), step=1)
    assert result.status is Status.MATCH and result.detections[0].evidence["inner"] == inner


def test_server_frames_alone_after_handshake():
    only_server = [(C, WS_REQUEST), (S, WS_RESPONSE)] + [x for x in ws_wrap(ms.COINHIVE)[2:] if x[0] == S]
    result = one_shot(DET, only_server)
    assert result.status is Status.MATCH and result.detections[0].evidence["inner"] == "browser_miner.job"


def test_fragmented_message():
    payload = ms.COINHIVE[0][1]
    half = len(payload) // 2
    transcript = [(C, WS_REQUEST), (S, WS_RESPONSE),
                  (C, ws_frame(payload[:half], mask=True, fin=False)),
                  (C, ws_frame(b"", mask=True, opcode=9)),                      # a ping in between
                  (C, ws_frame(payload[half:], mask=True, opcode=0))]
    assert one_shot(DET, transcript).status is Status.MATCH


def test_permessage_deflate():
    response = WS_RESPONSE.replace(b"\r\n\r\n", b"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n")
    comp = zlib.compressobj(wbits=-15)
    payload = comp.compress(ms.COINHIVE[0][1]) + comp.flush(zlib.Z_SYNC_FLUSH)
    assert payload.endswith(b"\x00\x00\xff\xff")
    transcript = [(C, WS_REQUEST), (S, response), (C, ws_frame(payload[:-4], mask=True, rsv1=True))]
    result = one_shot(DET, transcript)
    assert result.status is Status.MATCH and result.detections[0].evidence["inner"] == "browser_miner.auth"


def test_unmask_roundtrip():
    frame = ws_frame(b"hello world", mask=True)
    assert frames(frame)[0][3] == b"hello world"
    assert unmask(unmask(b"abcdef", b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04") == b"abcdef"


def test_node_json_rpc_over_websocket_is_not_mining():
    sub = [(C, b'{"jsonrpc":"2.0","id":1,"method":"eth_subscribe","params":["newHeads"]}'),
           (S, b'{"jsonrpc":"2.0","id":1,"result":"0x9cef478923ff08bf67fde6c64013158d"}'),
           (C, b'{"jsonrpc":"2.0","id":2,"method":"eth_blockNumber","params":[]}')]
    assert one_shot(DET, ws_wrap(sub)).status is Status.NO_MATCH


def test_not_websocket():
    assert one_shot(DET, ms.ETH_NODE_RPC).status is Status.NO_MATCH                 # POST
    assert one_shot(DET, ms.MENTIONS).status is Status.NO_MATCH                     # GET without upgrade
    assert one_shot(DET, ms.STRATUM_BTC).status is Status.NO_MATCH                  # raw JSON
    refused = [(C, WS_REQUEST), (S, b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")]
    assert one_shot(DET, refused).status is Status.NO_MATCH
    assert DET.inspect(view(WS_REQUEST, b"")).status is Status.NEED_MORE           # 101 still to come


def test_client_frames_alone_when_a_big_answer_spent_the_servers_side():
    # keep-alive: a download first (its answer fills the server's budget), then the
    # upgrade; the 101 and everything the server says after it are never seen
    big = b"GET /big HTTP/1.1\r\nHost: ws.example:443\r\n\r\n"
    answer = (b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + b"z" * 30000)[:8192]
    frames_up = b"".join(ws_frame(m, mask=True) for _, m in ms.STRATUM_BTC if _ == C)
    spent = view(big + WS_REQUEST + frames_up, answer)
    spent.closed_to_client = True
    result = DET.inspect(spent)
    assert result.status is Status.MATCH and signature(result) == "mining.websocket"
    assert result.detections[0].evidence["server_side"] == "unseen"
    assert result.detections[0].evidence["inner"] == "stratum.v1.subscribe"
    # the server's side still open: the client's frames alone claim nothing
    assert DET.inspect(view(big + WS_REQUEST + frames_up, answer)).status is not Status.MATCH
    # other JSON in the frames: no claim
    other = view(big + WS_REQUEST + ws_frame(b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}', mask=True),
                 answer)
    other.closed_to_client = True
    assert DET.inspect(other).status is not Status.MATCH
