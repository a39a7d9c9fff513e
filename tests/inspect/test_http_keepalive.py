"""HTTP keep-alive: a harmless first request must not hide a later one on the same connection.

The evasion: a sandbox client sends an ordinary GET on a plain-HTTP connection, gets its
answer, then sends a mining JSON-RPC request (getwork, eth_submitWork...) or upgrades to
WebSocket and speaks Stratum, on the same connection. Once every detector has concluded,
the live gateway offloads the flow to the kernel and nothing later is inspected, so the
HTTP-family detectors must keep looking while another request can still come.
Transcripts go through the whole engine with the default policy, as the gateway runs it.
"""
from __future__ import annotations

import json

from egress.engine import Engine
from egress.inspect.registry import default_detectors
from egress.policy import load_policy_engine
from egress.testing import craft
from egress.types import Action, RawPacket
from tests.inspect import mining_samples as ms
from tests.inspect.mining_helpers import WS_REQUEST, WS_RESPONSE, ws_wrap

GET = b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n"
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
OK_JSON = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"


def post(obj, host: bytes = b"pool", extra: bytes = b"") -> bytes:
    body = json.dumps(obj).encode()
    return (b"POST / HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n"
            % (host, extra, len(body)) + body)


def run(exchanges, port: int = 8332, close: bool = False):
    """Feed the transcript as packets; -> (the engine, the last decision)."""
    engine = Engine(detectors=default_detectors(), policy=load_policy_engine(["rules/default.yaml"]))
    s = craft.TcpSession(("10.0.0.2", 40000), ("10.9.0.1", port)).handshake()
    for to_server, data in exchanges:
        s.send(to_server, data)
    if close:
        s.close()
    decision = None
    for ts, data in s.packets:
        decision = engine.process(RawPacket(ts, data, 101))
    return engine, decision


def signatures(decision) -> list[str]:
    return [d.signature for d in decision.flow.detections]


def test_getwork_after_a_harmless_get_is_dropped():
    getwork = post({"method": "getwork", "params": [], "id": 1})
    _, decision = run([(True, GET), (False, OK), (True, getwork), (False, OK_JSON)])
    assert decision.action is Action.DROP and decision.verdict.rule == "block-mining"
    assert "getwork.http" in signatures(decision)


def test_getwork_after_several_requests_is_dropped():
    getwork = post({"method": "getwork", "params": [], "id": 1})
    exchanges = []
    for i in range(5):
        exchanges += [(True, b"GET /page%d HTTP/1.1\r\nHost: pool\r\n\r\n" % i), (False, OK)]
    exchanges += [(True, getwork), (False, OK_JSON)]
    _, decision = run(exchanges)
    assert decision.action is Action.DROP and "getwork.http" in signatures(decision)


def test_eth_submit_work_after_a_harmless_get_is_dropped():
    submit = post({"jsonrpc": "2.0", "id": 4, "method": "eth_submitWork",
                   "params": ["0x07a05fa4133e5126", "0x" + "41" * 32, "0x" + "d1" * 32]}, host=b"localhost:8545")
    _, decision = run([(True, GET), (False, OK), (True, submit), (False, OK_JSON)], port=8545)
    assert decision.action is Action.DROP and decision.verdict.rule == "block-mining"
    assert "ethproxy.submitWork.http" in signatures(decision)


def test_getwork_after_a_chunked_response_is_dropped():
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    getwork = post({"method": "getwork", "params": [], "id": 1})
    _, decision = run([(True, GET), (False, chunked), (True, getwork), (False, OK_JSON)])
    assert decision.action is Action.DROP and "getwork.http" in signatures(decision)


def test_stratum_in_a_websocket_opened_by_a_later_request_is_dropped():
    framed = ws_wrap(ms.STRATUM_BTC)
    assert framed[:2] == [(0, WS_REQUEST), (1, WS_RESPONSE)]
    exchanges = [(True, GET), (False, OK)] + [(d == 0, data) for d, data in framed]
    _, decision = run(exchanges, port=80)
    assert decision.action is Action.DROP and decision.verdict.rule == "block-mining"
    assert "mining.websocket" in signatures(decision)
    ws = next(d for d in decision.flow.detections if d.signature == "mining.websocket")
    assert ws.evidence["inner"] == "stratum.v1.subscribe"


def test_ordinary_keepalive_requests_are_allowed():
    exchanges = []
    for i in range(4):
        exchanges += [(True, b"GET /api/items/%d HTTP/1.1\r\nHost: api.example\r\nAccept: */*\r\n\r\n" % i),
                      (False, b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n'
                              b'{"item": %d}' % i)]
        exchanges += [(True, post({"jsonrpc": "2.0", "id": i, "method": "eth_blockNumber", "params": []},
                                  host=b"api.example")),
                      (False, b'HTTP/1.1 200 OK\r\nContent-Length: 38\r\n\r\n{"jsonrpc":"2.0","id":%d,"result":"0x1"}'
                              % i)]
    engine, decision = run(exchanges, port=80, close=True)
    assert decision.action is Action.ALLOW and decision.flow.detections == []
    assert decision.flow.app_proto == "http"
    engine.flush()
    flows = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert len(flows) == 1 and not flows[0].get("detections")


def test_a_keepalive_connection_stays_inspected_while_another_request_can_come():
    _, decision = run([(True, GET), (False, OK)], port=80)
    assert decision.action is Action.ALLOW
    assert decision.flow.inspecting and not decision.offload


def only_the_backstop_reads_on(flow) -> bool:
    """The HTTP detectors are done; the backstop (mining_anywhere) reads the client's side
    until it closes, as it does on every TCP flow, so the flow is not offloaded yet."""
    return [d.name for d in flow.inspecting] == ["mining_anywhere"]


def test_connection_close_exchange_is_concluded_after_its_response():
    request = b"GET / HTTP/1.1\r\nHost: api.example\r\nConnection: close\r\n\r\n"
    _, decision = run([(True, request), (False, OK)], port=80)
    assert decision.action is Action.ALLOW and only_the_backstop_reads_on(decision.flow)
    response = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"
    _, decision = run([(True, GET), (False, response)], port=80)
    assert decision.action is Action.ALLOW and only_the_backstop_reads_on(decision.flow)
    _, decision = run([(True, b"GET / HTTP/1.0\r\nHost: api.example\r\n\r\n"), (False, OK)], port=80)
    assert decision.action is Action.ALLOW and only_the_backstop_reads_on(decision.flow)


def test_ssh_in_a_websocket_opened_by_a_later_request_is_found():
    from egress.inspect.base import StreamView
    from egress.inspect.ssh import SshDetector
    from tests.inspect.mining_helpers import ws_frame

    up = GET + WS_REQUEST + ws_frame(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n", mask=True)
    down = OK + WS_RESPONSE + ws_frame(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n", mask=False)
    view = StreamView(6, b"\x0a\x00\x00\x02", 40000, b"\x0a\x09\x00\x01", 80, up, down)
    result = SshDetector().inspect(view)
    assert ("tunnel", "ssh.over_websocket") in {(d.category, d.signature) for d in result.detections}
    # before the upgrade, the first exchange alone does not end the SSH detector's wait
    first = StreamView(6, b"\x0a\x00\x00\x02", 40000, b"\x0a\x09\x00\x01", 80, GET, OK)
    assert SshDetector().inspect(first).status.value == "need_more"


GETWORK = post({"method": "getwork", "params": [], "id": 1})


def _variants():
    cl_twice = b"POST /a HTTP/1.1\r\nHost: pool\r\nContent-Length: 5\r\nContent-Length: 300\r\n\r\nhello"
    return {
        "pipelined": ([(True, GET + GETWORK)], None),
        "head_then_getwork": ([(True, b"HEAD / HTTP/1.1\r\nHost: pool\r\n\r\n"),
                               (False, b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n"), (True, GETWORK)], None),
        "no_content_then_getwork": ([(True, GET), (False, b"HTTP/1.1 204 No Content\r\n\r\n"), (True, GETWORK)], None),
        "continue_then_getwork": ([(True, GET), (False, b"HTTP/1.1 100 Continue\r\n\r\n" + OK), (True, GETWORK)], None),
        "ambiguous_length": ([(True, cl_twice + GETWORK)], None),
        "bare_lf": ([(True, b"GET / HTTP/1.1\nHost: pool\n\n"), (False, OK), (True, GETWORK)], None),
    }


def test_getwork_behind_framing_tricks_is_found():
    from egress.inspect.base import StreamView
    from egress.inspect.ethminer import EthMinerDetector
    for name, (transcript, _) in _variants().items():
        up = b"".join(d for c, d in transcript if c)
        down = b"".join(d for c, d in transcript if not c)
        view = StreamView(6, b"\x0a\x00\x00\x02", 40000, b"\x0a\x09\x00\x01", 8332, up, down)
        result = EthMinerDetector().inspect(view)
        assert [d.signature for d in result.detections] == ["getwork.http"], name
