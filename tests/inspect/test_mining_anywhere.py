"""Mining after an opening of the attacker's choice, as engine transcripts.

A detector that decides NO_MATCH on a flow's first bytes used to let the rest of the
connection through: once every detector has decided, the flow takes the kernel fast
path. The sandbox client and the pool both belong to the attacker, so they can open with
anything. The backstop (egress.inspect.mining_anywhere) reads the client's stream up to
the reassembly depth whatever it opened with.
"""
from __future__ import annotations

from egress.engine import Engine
from egress.inspect.base import NEED_MORE, NO_MATCH, Status, StreamView
from egress.inspect.mining_anywhere import MiningAnywhereDetector
from egress.inspect.registry import default_detectors
from egress.policy import load_policy_engine
from egress.testing import craft
from egress.types import Action, RawPacket

SUBSCRIBE = b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5"]}\n'
SUBSCRIBED = b'{"id":1,"result":[[],"08000002",4],"error":null}\n'
AUTHORIZE = b'{"id":2,"method":"mining.authorize","params":["wallet.worker","x"]}\n'


def verdicts(repo_root, opening):
    engine = Engine(detectors=default_detectors(),
                    policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]))
    s = craft.TcpSession(("10.200.0.2", 40000), ("10.200.9.9", 3333)).handshake()
    for from_client, data in opening + [(True, SUBSCRIBE), (False, SUBSCRIBED), (True, AUTHORIZE)]:
        s.send(from_client, data)
    return [engine.process(RawPacket(ts, data, 101)) for ts, data in s.packets]


def dropped_by_the_backstop(decisions) -> bool:
    """The subscribe is dropped as mining, and nothing before it was."""
    drops = [d for d in decisions if d.action is Action.DROP]
    return bool(drops) and drops[0].verdict.rule == "block-mining" and any(
        det.signature == "stratum.v1.subscribe" for det in drops[0].flow.detections)


def test_the_plain_login_is_dropped(repo_root):
    """The control: without an opening, the subscribe is dropped by block-mining."""
    decisions = verdicts(repo_root, [])
    assert decisions[3].action is Action.DROP and decisions[3].verdict.rule == "block-mining"


def test_an_http_request_with_a_close_answer_then_stratum(repo_root):
    decisions = verdicts(repo_root, [(True, b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n"),
                                     (False, b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok")])
    assert dropped_by_the_backstop(decisions)


def test_an_http_keep_alive_exchange_then_stratum(repo_root):
    decisions = verdicts(repo_root, [(True, b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n"),
                                     (False, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")])
    assert dropped_by_the_backstop(decisions)


def test_an_http_request_with_a_junk_answer_then_stratum(repo_root):
    decisions = verdicts(repo_root, [(True, b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n"), (False, b"xyz\n")])
    assert dropped_by_the_backstop(decisions)


def test_tls_looking_bytes_then_stratum(repo_root):
    decisions = verdicts(repo_root, [(True, b"\x16\x03\x01\x00\x05hello"), (False, b"\x16\x03\x03\x00\x02hi")])
    assert dropped_by_the_backstop(decisions)


def view(to_server=b"", to_client=b"", closed=False):
    return StreamView(6, b"\x0a\x00\x00\x02", 40000, b"\x0a\x00\x00\x09", 3333, to_server, to_client,
                      closed_to_server=closed)


OPENING = b"GET / HTTP/1.1\r\nHost: pool\r\n\r\n"


def test_the_backstop_finds_a_login_after_any_opening_and_says_where():
    result = MiningAnywhereDetector().inspect(view(OPENING + SUBSCRIBE))
    assert result.status is Status.MATCH
    (detection,) = result.detections
    assert detection.signature == "stratum.v1.subscribe" and detection.evidence["after"] == len(OPENING)


def test_the_backstop_waits_for_a_line_to_end_and_for_the_client_to_close():
    detector = MiningAnywhereDetector()
    assert detector.inspect(view(OPENING + SUBSCRIBE[:-1])) is NEED_MORE      # no newline yet
    assert detector.inspect(view(OPENING)) is NEED_MORE
    assert detector.inspect(view(OPENING, closed=True)) is NO_MATCH


def test_the_server_quoting_the_protocol_is_not_mining():
    """A page that documents Stratum comes from the server; only the sandbox's side counts."""
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 200\r\n\r\n" + SUBSCRIBE + AUTHORIZE
    assert MiningAnywhereDetector().inspect(view(OPENING, page)) is NEED_MORE


def test_ordinary_json_with_a_login_field_is_not_mining():
    api = b'POST /api HTTP/1.1\r\nContent-Length: 60\r\n\r\n{"id":1,"method":"login","params":{"user":"a","password":"b"}}\n'
    assert MiningAnywhereDetector().inspect(view(api)) is NEED_MORE
