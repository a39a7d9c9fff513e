"""The per-view shared parses and the cheap first-bytes checks give the same answers as the
work they replace: detectors decide exactly as if each had parsed the view alone."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from egress.inspect import http as http_mod
from egress.inspect import mining_http, mining_json
from egress.inspect.base import StreamView, shared
from egress.inspect.ethminer import EthMinerDetector
from egress.inspect.ethminer import NEEDLES as ETH_NEEDLES
from egress.inspect.registry import default_detectors
from egress.inspect.stratum import NEEDLES as STRATUM_NEEDLES
from egress.inspect.stratum import StratumDetector
from egress.inspect.xmr import NEEDLES as XMR_NEEDLES
from egress.inspect.xmr import CryptoNoteDetector
from tests.inspect import mining_samples

TRANSCRIPTS = {**mining_samples.MINING, **mining_samples.NEGATIVES}
NAMES = sorted(TRANSCRIPTS)
HTTP_GET = b"GET /index.html HTTP/1.1\r\nHost: www.egress.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n"


def view(up: bytes, down: bytes, closed_up=False, closed_down=False, app_proto=None, facts=None) -> StreamView:
    return StreamView(6, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 3333, up, down,
                      closed_to_server=closed_up, closed_to_client=closed_down, facts=facts or {},
                      app_proto=app_proto)


def as_tuple(result):
    return result.status, result.detections, result.app_proto, dict(result.facts)


# -- base.shared ----------------------------------------------------------------------

def test_shared_parses_once_per_view_and_bytes_object():
    calls = []

    def parse(data):
        calls.append(data)
        return len(data)

    data = b"GET / HTTP/1.1\r\n\r\n"
    v = view(data, b"")
    assert shared(v, parse, data) == len(data)
    assert shared(v, parse, data) == len(data)
    assert calls == [data]
    other = bytes(bytearray(data))                  # equal bytes, another object: parsed again
    assert shared(v, parse, other) == len(data)
    assert len(calls) == 2
    assert shared(view(data, b""), parse, data) == len(data)    # a new view starts empty
    assert len(calls) == 3


# -- first-bytes checks against the formulas they replace --------------------------------

def _looks_like_http_reference(data: bytes):
    head = data[:8]
    if head.startswith(b"HTTP/1.") or any(head.startswith(m) for m in mining_http.METHODS):
        return True
    if len(head) >= 8:
        return False
    probe = (b"HTTP/1.",) + mining_http.METHODS
    return None if any(p.startswith(head) for p in probe) else False


def _request_undecided_reference(data: bytes) -> bool:
    probe = data[:8]
    return any(p.startswith(probe) for p in http_mod._METHOD_PREFIXES) and len(data) < 8


_PREFIX_ALPHABET = st.sampled_from(list(b"GETPOSHUCNDLAIRFMKVWY /1.x\r\n"))
_PROBES = [p + b"/ HTTP/1.1\r\n" for p in http_mod._METHOD_PREFIXES] + [b"HTTP/1.1 200 OK\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.lists(_PREFIX_ALPHABET, max_size=10).map(bytes),
                 st.tuples(st.sampled_from(_PROBES), st.integers(0, 14)).map(lambda pi: pi[0][:pi[1]]),
                 st.binary(max_size=12)))
def test_first_bytes_checks_match_their_reference(data):
    assert mining_http.looks_like_http(data) == _looks_like_http_reference(data)
    if data and not data.startswith(http_mod._METHOD_PREFIXES):
        undecided = len(data) < 8 and data in http_mod._METHOD_UNDECIDED
        assert undecided == _request_undecided_reference(data)


# -- JSON lines: the needle prefilter and the shared no-hit answer --------------------------

def _cut(transcript, cut_up: float, cut_down: float) -> tuple[bytes, bytes]:
    up, down = mining_samples.streams(transcript)
    return up[:int(len(up) * cut_up)], down[:int(len(down) * cut_down)]


fractions = st.floats(0, 1)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NAMES), fractions, fractions)
def test_line_shape_is_the_scan_of_a_direction_without_needles(name, cut_up, cut_down):
    for data in _cut(TRANSCRIPTS[name], cut_up, cut_down):
        for needles in (STRATUM_NEEDLES, XMR_NEEDLES, ETH_NEEDLES):
            if mining_json.has_needle(data, needles):
                continue
            messages, state, count = mining_json.scan_lines(data, needles)
            assert messages == []
            assert mining_json.line_shape(data) == (state, count)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NAMES + ["http_get"]), fractions, fractions, st.booleans(), st.booleans(),
       st.sampled_from([None, "http", "tls"]))
def test_json_detectors_decide_alike_on_a_shared_or_a_private_view(name, cut_up, cut_down, closed_up,
                                                                  closed_down, app_proto):
    """Stage order (stratum, cryptonote, ethminer) on one view, like a round of the engine,
    against each detector alone on a fresh view: the shared answers change nothing."""
    transcript = TRANSCRIPTS.get(name) or [(0, HTTP_GET), (1, HTTP_GET)]
    up, down = _cut(transcript, cut_up, cut_down)
    detectors = [StratumDetector(), CryptoNoteDetector(), EthMinerDetector()]
    one = view(up, down, closed_up, closed_down, app_proto)
    together = [as_tuple(d.inspect(one)) for d in detectors]
    alone = [as_tuple(d.inspect(view(up, down, closed_up, closed_down, app_proto))) for d in detectors]
    assert together == alone


def test_mining_samples_still_match_through_the_shared_paths():
    """Every raw mining transcript (CoinHive only travels inside WebSocket, see
    test_ws_mining) is still found in a full round of all detectors on one view."""
    detectors = default_detectors()
    for name, transcript in mining_samples.MINING.items():
        if name == "coinhive":
            continue
        up, down = mining_samples.streams(transcript)
        v = view(up, down, True, True)
        found = [d.name for d in detectors if d.inspect(v).detections]
        assert found, name


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(NAMES + ["http_get"]), fractions, fractions, st.booleans(), st.booleans())
def test_a_full_round_on_one_view_is_each_detector_alone(name, cut_up, cut_down, closed_up, closed_down):
    """All detectors in registry order on one view, facts and app_proto handed on as the
    stage does, against each one on a fresh view holding what the earlier ones had said."""
    transcript = TRANSCRIPTS.get(name) or [(0, HTTP_GET), (1, HTTP_GET)]
    up, down = _cut(transcript, cut_up, cut_down)
    one = view(up, down, closed_up, closed_down)
    for detector in default_detectors():
        fresh = view(up, down, closed_up, closed_down, one.app_proto, dict(one.facts))
        result = detector.inspect(one)
        assert as_tuple(result) == as_tuple(detector.inspect(fresh)), detector.name
        if result.facts:
            one.facts = {**result.facts, **one.facts}
        if result.app_proto and not one.app_proto:
            one.app_proto = result.app_proto


# -- HTTP: one request parse for the http and tunnel detectors ------------------------------

def test_http_status_does_not_leak_into_the_shared_request_parse():
    detectors = {d.name: d for d in default_detectors()}
    v = view(HTTP_GET, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    result = detectors["http"].inspect(v)
    assert result.facts["http.status"] == 200
    state, facts = shared(v, http_mod.request_facts, v.to_server)
    assert state == "ok" and "http.status" not in facts
    assert facts == http_mod.request_facts(HTTP_GET)[1]
    # the tunnel detector reads the same parse and still finds nothing on this host
    assert detectors["tunnel"].inspect(v).detections == ()


# -- WebSocket mining: the "websocket" prefilter -------------------------------------------

_WS_LINES = [b"Upgrade: websocket", b"upgrade: WebSocket", b"Upgrade: h2c", b"Connection: Upgrade",
             b"Host: pool.example", b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==", b"X-Junk: \xe9\xff",
             b"no colon here", b"Upgrade :  WEBSOCKET  "]


def _ws_head_reference(up: bytes) -> str:
    """What ws_mining decided from the request head before the prefilter: no | wait | upgrade."""
    request = mining_http.parse_head(up)
    if request is False:
        return "no"
    if request is None:
        return "wait"
    return "upgrade" if "websocket" in request[1].get("upgrade", "").lower() else "no"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_WS_LINES), max_size=6), st.sampled_from([b"\r\n", b"\n"]),
       st.integers(0, 400), st.booleans())
def test_websocket_prefilter_agrees_with_the_head_parse(lines, eol, cut, pad):
    from egress.inspect.ws_mining import WebSocketMiningDetector
    head = eol.join([b"GET /ws HTTP/1.1"] + lines) + eol + eol
    if pad:
        head += b"x" * 9000            # a head past MAX_HEAD without its end is not a head
    up = head[:cut] if cut < len(head) else head
    if not up.startswith(b"GET "):
        return
    reference = _ws_head_reference(up)
    result = WebSocketMiningDetector().inspect(view(up, b""))
    if b"websocket" not in up[:mining_http.MAX_HEAD].lower():
        assert reference != "upgrade"
    if reference == "no":
        # keep-alive: a later request on the connection may still ask for the upgrade
        # (tests/inspect/test_http_keepalive.py); once the connection is closed, it cannot
        assert result.status.value != "match"
        closed = StreamView(6, b"\x0a\x00\x00\x01", 40000, b"\x0a\x00\x00\x02", 3333, up, b"",
                            closed_to_server=True, closed_to_client=True)
        assert WebSocketMiningDetector().inspect(closed).status.value == "no_match"
    elif reference == "wait":
        assert result.status.value == "need_more"


# -- the stage: parses of a direction that did not grow are handed on ---------------------

def _engine_flow(payloads):
    """Run a TCP connection through an engine and return the number of request-head
    parses the http + tunnel detectors asked for, and how many were computed."""
    from egress.config import EngineConfig
    from egress.engine import Engine
    from egress.testing.craft import TcpSession
    from egress.types import RawPacket

    s = TcpSession(("10.9.1.2", 40001), ("10.9.2.2", 8080), t0=1000.0, step=0.001)
    s.handshake()
    for to_server, data in payloads:
        s.send(to_server, data, ack=False)
    s.close()
    engine = Engine(EngineConfig())
    for ts, data in s.packets:
        engine.process(RawPacket(ts, data, 101, len(data), None))
    engine.flush()
    return engine.drain_events()


def test_a_request_head_is_parsed_once_per_flow(monkeypatch):
    computed = []
    real = http_mod.request_facts

    def counting(data):
        computed.append(len(data))
        return real(data)

    monkeypatch.setattr(http_mod, "request_facts", counting)
    events = _engine_flow([(True, HTTP_GET), (False, b"HTTP/1.1 200 OK\r\n"), (False, b"Content-Length: 0\r\n\r\n")])
    # three rounds saw the same request bytes (request, two response packets): one parse
    assert computed == [len(HTTP_GET)]
    flows = [e for e in events if e.get("event_type") == "flow"]
    assert flows and flows[0]["app_proto"] == "http"


def test_stream_snapshot_is_the_same_object_until_the_direction_grows():
    from egress.inspect.stage import _Stream

    stream = _Stream(8192, 32)
    stream.set_isn(99)
    first = stream.snapshot()
    assert first == b"" and stream.snapshot() is first
    stream.add(100, b"abc")
    grown = stream.snapshot()
    assert grown == b"abc" and grown is not first
    assert stream.snapshot() is grown
    stream.add(100, b"abc")                 # a retransmission adds nothing
    assert stream.snapshot() is grown
    stream.add(103, b"d")
    assert stream.snapshot() == b"abcd"


def test_memo_entries_follow_only_unchanged_directions():
    from egress.config import EngineConfig
    from egress.flow.flow import Flow
    from egress.inspect.stage import InspectStage

    stage = InspectStage(default_detectors(), EngineConfig())
    flow = Flow.__new__(Flow)
    for name, value in (("proto", 6), ("client_ip", b"\x0a\x00\x00\x01"), ("client_port", 1),
                        ("server_ip", b"\x0a\x00\x00\x02"), ("server_port", 2), ("facts", {}),
                        ("app_proto", None), ("initiator", "syn"), ("fin_toserver", False),
                        ("fin_toclient", False), ("fin_seq", None), ("rst", False)):
        setattr(flow, name, value)
    stage.start(flow)
    up, down = flow.streams
    up.set_isn(0)
    down.set_isn(0)
    up.add(1, b"GET / HTTP/1.1\r\n\r\n")
    first = stage._view(flow)
    up_parse = shared(first, http_mod.request_facts, first.to_server)
    shared(first, mining_http.messages, first.to_client)
    down.add(1, b"HTTP/1.1 200 OK\r\n\r\n")
    second = stage._view(flow)
    assert second.to_server is first.to_server and second.to_client is not first.to_client
    kept = [entry[0] for entry in second.memo.values()]
    assert kept == [first.to_server]                 # the stale to-client parse was dropped
    assert shared(second, http_mod.request_facts, second.to_server) is up_parse


# -- ethminer over HTTP: framing without header dicts ---------------------------------------

_START_LINES = [b"GET / HTTP/1.1", b"POST /rpc HTTP/1.1", b"HTTP/1.1 200 OK", b"HTTP/1.0 404 Not Found",
                b"PUT /x HTTP/1.0"]
_HEADER_LINES = [b"Host: node.example", b"Content-Length: 5", b"content-length: 0", b"CONTENT-LENGTH : 12",
                 b"Content-Length: x", b"Transfer-Encoding: chunked", b"transfer-encoding: gzip",
                 b"User-Agent: cgminer/4.10", b"X-Mining-Extensions: midstate", b"no colon", b"X-J: \xc0\xff"]
_BODIES = [b"", b"hello", b'{"method": "getwork", "params": [], "id": 0}', b"5\r\nhello\r\n0\r\n\r\n", b"[1,2]"]


@st.composite
def http_streams(draw):
    eol = draw(st.sampled_from([b"\r\n", b"\n"]))
    out = b""
    for _ in range(draw(st.integers(1, 5))):
        head = eol.join([draw(st.sampled_from(_START_LINES))] + draw(st.lists(st.sampled_from(_HEADER_LINES),
                                                                                max_size=4)))
        out += head + eol + eol + draw(st.sampled_from(_BODIES))
    return out[:draw(st.integers(0, len(out)))]


@settings(max_examples=400, deadline=None)
@given(http_streams(), st.integers(1, 4))
def test_framing_is_what_messages_reports(data, max_messages):
    msgs = mining_http.messages(data, max_messages)
    assert mining_http.framing(data, max_messages) == (len(msgs), bool(msgs) and msgs[-1].complete)


@settings(max_examples=300, deadline=None)
@given(http_streams(), http_streams(), st.booleans(), st.booleans())
def test_ethminer_http_prefilter_changes_no_answer(up, down, closed_up, closed_down):
    """The detector with its no-hit prefilter against the same detector made to parse every
    message (a prefilter that always says "maybe")."""
    from egress.inspect import ethminer

    detector = EthMinerDetector()
    fast = as_tuple(detector.inspect(view(up, down, closed_up, closed_down)))
    original = ethminer._maybe_mining
    try:
        ethminer._maybe_mining = lambda data: True
        slow = as_tuple(detector.inspect(view(up, down, closed_up, closed_down)))
    finally:
        ethminer._maybe_mining = original
    assert fast == slow
