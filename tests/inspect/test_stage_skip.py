"""The stage leaves out a round whose only news is on the server's side when every
detector still waiting is `client_side_only` (egress.inspect.base): the outcome must be
exactly what running the round gives."""
from __future__ import annotations

import random

import pytest

from egress.engine import Engine
from egress.inspect.base import NEED_MORE, StreamView
from egress.inspect.mining_anywhere import MiningAnywhereDetector
from egress.inspect.registry import default_detectors
from egress.inspect.stage import InspectStage
from egress.policy import load_policy_engine
from egress.testing import craft
from egress.types import RawPacket

GET = b"GET /x HTTP/1.1\r\nHost: files.example\r\n\r\n"
OK_LONG = b"HTTP/1.1 200 OK\r\nContent-Length: 20000\r\n\r\n" + b"z" * 20000
OK_10 = b"HTTP/1.0 200 OK\r\n\r\nhello"
SUBSCRIBE = b'{"id":1,"method":"mining.subscribe","params":["cpuminer/2.5"]}\n'


def _sessions():
    """Flows where the backstop is left alone while the server talks, and variations."""
    out = []
    for i, (script, server_closes_first) in enumerate([
        ([(True, GET), (False, OK_10)], True),
        ([(True, GET), (False, OK_10)], False),
        ([(True, GET), (False, OK_LONG)], True),                     # a download: many server segments
        ([(True, GET), (False, OK_10), (True, SUBSCRIBE)], True),     # mining after the exchange
        ([(True, GET), (False, OK_LONG[:3000]), (True, SUBSCRIBE), (False, OK_LONG[3000:9000])], False),
        ([(True, b"hello\n"), (False, b"x" * 5000), (False, b"y" * 4000), (True, SUBSCRIBE)], True),
        ([(True, b"\x16\x03\x01\x00"), (False, b"HTTP/1.1 200 OK\r\n\r\n" + b"q" * 9000)], False),
        # past the reverse-shell detector's 4 KiB of the client's side: the backstop waits alone
        ([(True, b"p" * 5000), (False, b"x" * 6000), (True, SUBSCRIBE)], True),
    ]):
        s = craft.TcpSession(("10.201.0.2", 41000 + i), ("10.201.9.9", 8080)).handshake()
        for from_client, data in script:
            s.send(from_client, data, segment_size=700)
        s.close(from_client=not server_closes_first)
        out.append(s.packets)
    return out


def _run(repo_root, skip: bool, monkeypatch):
    if not skip:       # no detector declares itself: every round runs, every detector is called
        monkeypatch.setattr(MiningAnywhereDetector, "client_side_only", False)
    engine = Engine(detectors=default_detectors(),
                    policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]))
    seen = []
    for packets in _sessions():
        for ts, data in packets:
            d = engine.process(RawPacket(ts, data, 101))
            flow = d.flow
            seen.append((d.action, d.verdict, d.offload, d.watch, d.revoked,
                         None if flow is None else (tuple(flow.detections), dict(flow.facts), flow.app_proto,
                                                    None if flow.inspecting is None else
                                                    [x.name for x in flow.inspecting])))
    engine.flush()
    monkeypatch.undo()
    return seen, engine.drain_events(), engine.stats()


def test_leaving_out_server_only_rounds_changes_nothing(repo_root, monkeypatch):
    """Rounds left out (_server_side_news_only) and calls left out (a round with news on
    the server's side only, for a client_side_only detector) change no outcome."""
    calls = []
    original = InspectStage._server_side_news_only
    inspected = []
    original_inspect = MiningAnywhereDetector.inspect

    def counting(self, flow):
        answer = original(self, flow)
        calls.append(answer)
        return answer

    def counting_inspect(self, view):
        inspected.append(1)
        return original_inspect(self, view)

    monkeypatch.setattr(InspectStage, "_server_side_news_only", counting)
    monkeypatch.setattr(MiningAnywhereDetector, "inspect", counting_inspect)
    with_skip = _run(repo_root, True, monkeypatch)
    assert any(calls), "the sessions must exercise the skipped rounds"
    calls_with_skip = len(inspected)
    monkeypatch.setattr(MiningAnywhereDetector, "inspect", counting_inspect)
    without = _run(repo_root, False, monkeypatch)
    assert calls_with_skip < len(inspected) - calls_with_skip     # fewer calls with the skips
    assert with_skip == without


def _views(rng):
    parts = [b"", b"GET / HTTP/1.1\r\n\r\n", SUBSCRIBE, b"hello\n", b'{"id":1,"method":"login"}\n',
             b"\x16\x03\x01\x02\x00", b"z" * 9000, b'{"method":"eth_submitLogin","params":["0xab"]}\n']
    for _ in range(300):
        up = b"".join(rng.choice(parts) for _ in range(rng.randint(0, 3)))
        closed_up = rng.random() < 0.3
        yield up, closed_up


@pytest.mark.parametrize("detector", [d for d in default_detectors() if getattr(d, "client_side_only", False)],
                         ids=lambda d: d.name)
def test_client_side_only_detectors_read_only_the_client_side(detector):
    """The declaration holds: other server bytes, another closed flag, other facts and
    sizes give the same answer, and waiting is the NEED_MORE constant itself."""
    rng = random.Random(3)
    downs = [b"", b"HTTP/1.1 200 OK\r\n\r\n", SUBSCRIBE, b"\x00" * 100, b"z" * 9000]
    for up, closed_up in _views(rng):
        answers = []
        for down in downs:
            for closed_down in (False, True):
                view = StreamView(6, b"\x0a\0\0\x01", 1, b"\x0a\0\0\x02", 2, up, down, (), closed_up,
                                  closed_down, {"http.host": "x.example"} if closed_down else {},
                                  "http" if down else None, ((0.0, 1, len(down)),) if down else ())
                answers.append(detector.inspect(view))
        assert all(a == answers[0] for a in answers), (up, closed_up)
        if answers[0].status is NEED_MORE.status:
            assert all(a is NEED_MORE for a in answers)
