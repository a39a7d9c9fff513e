"""The engine as a transcript: packets in, decisions and EVE events out."""
from __future__ import annotations

from egress.config import EngineConfig, Timeouts
from egress.decode import decode
from egress.engine import Engine, is_pure_ack
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status
from egress.testing import craft
from egress.types import Action, Detection, Mode, RawPacket, Verdict

CLIENT = ("10.200.0.2", 40000)
SERVER = ("10.200.1.2", 3333)
LOGIN = b'{"id":1,"method":"mining.subscribe","params":[]}\n'


class LineDetector:
    """A stand-in detector: matches when the client sent a full line containing `needle`."""
    name = "fake"
    protocols = frozenset({6})
    max_bytes = 4096

    def __init__(self, needle=b"mining.subscribe"):
        self.needle = needle
        self.calls = 0

    def inspect(self, view):
        self.calls += 1
        if b"\n" not in view.to_server:
            return NEED_MORE
        if self.needle in view.to_server:
            return InspectResult(Status.MATCH, (Detection("mining", "fake.subscribe"),), "stratum",
                                 {"fake.method": "mining.subscribe"})
        return NO_MATCH


class BlockMining:
    """A stand-in policy: drop flows with a mining detection, allow the rest."""
    def __init__(self, mode=Mode.ENFORCE):
        self.mode = mode
        self.decisions = 0

    def attribute(self, flow, iface=None):
        return {"id": "sbx-1" if iface is None else "sbx-" + iface, "episode": "ep-7"}

    def observe(self, flow, now):
        pass

    def decide(self, flow, now):
        self.decisions += 1
        if "mining" in flow.categories():
            return Verdict(Action.DROP, self.mode, "block-mining", ("category mining",))
        return Verdict(Action.ALLOW, self.mode, "default", ("default allow",))


def run(packets, engine):
    return [engine.process(RawPacket(ts, data, 101)) for ts, data in packets]


def stratum_session(segment_size=None):
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    s.send(True, LOGIN, segment_size=segment_size)
    s.send(False, b'{"id":1,"result":[[],"08000002",4],"error":null}\n')
    s.close()
    return s.packets


def test_the_packet_that_completes_the_login_is_dropped_and_so_is_the_rest():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    decisions = run(stratum_session(segment_size=7), engine)
    actions = [d.action for d in decisions]
    first_drop = actions.index(Action.DROP)
    # handshake + the first segments pass; the segment that completes the line is dropped
    assert all(a is Action.ALLOW for a in actions[:first_drop])
    assert all(a is Action.DROP for a in actions[first_drop:])
    assert first_drop == 3 + (len(LOGIN) + 6) // 7 - 1
    assert decisions[first_drop].revoked and decisions[first_drop].offload


def test_audit_mode_lets_everything_pass_but_reports_the_action():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(Mode.AUDIT), observers=[])
    decisions = run(stratum_session(), engine)
    assert {d.action for d in decisions} == {Action.ALLOW}
    engine.flush()
    flow_events = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert flow_events[0]["verdict"] == {"action": "drop", "mode": "audit", "rule": "block-mining",
                                         "reasons": ["category mining"]}


def test_one_flow_event_with_orientation_counts_detections_and_sandbox():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    packets = stratum_session()
    run(packets, engine)
    engine.flush()
    events = engine.drain_events()
    flows = [e for e in events if e["event_type"] == "flow"]
    alerts = [e for e in events if e["event_type"] == "alert"]
    assert len(flows) == 1 and len(alerts) == 1
    f = flows[0]
    assert (f["src_ip"], f["src_port"], f["dest_ip"], f["dest_port"], f["proto"]) == \
        ("10.200.0.2", 40000, "10.200.1.2", 3333, "TCP")
    assert f["app_proto"] == "stratum"
    # Pure ACKs are not tracked (egress.engine.is_pure_ack): the live gateway never sees them.
    tracked = [p for p in packets if not is_pure_ack(decode(RawPacket(p[0], p[1], 101, len(p[1]))))]
    assert 0 < len(tracked) < len(packets)
    assert f["flow"]["pkts_toserver"] + f["flow"]["pkts_toclient"] == len(tracked)
    assert f["flow"]["state"] == "closed" and f["flow"]["initiator"] == "syn"
    assert f["detections"] == [{"category": "mining", "signature": "fake.subscribe"}]
    assert f["fake"] == {"method": "mining.subscribe"}
    assert f["sandbox"] == {"id": "sbx-1", "episode": "ep-7"}
    assert alerts[0]["alert"]["action"] == "blocked" and alerts[0]["alert"]["category"] == "mining"


def test_policy_runs_only_when_the_flow_changed():
    policy = BlockMining()
    engine = Engine(detectors=[], policy=policy, observers=[])
    s = craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake()
    for _ in range(20):
        s.send(True, b"x" * 100)
    run(s.packets, engine)
    assert policy.decisions == 1


def test_detectors_stop_being_called_once_they_decided_and_buffers_are_released():
    det = LineDetector(needle=b"never")
    engine = Engine(detectors=[det], policy=None, observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    s.send(True, b"hello\n")
    for _ in range(10):
        s.send(True, b"more data\n")
    decisions = run(s.packets, engine)
    assert det.calls == 1
    flow = decisions[-1].flow
    assert flow.streams is None and flow.inspecting is None
    assert decisions[-1].offload   # nothing left to learn: the kernel may take over


def test_flows_expire_by_packet_time_and_the_cap_evicts_the_least_recent():
    config = EngineConfig(max_flows=3, timeouts=Timeouts(udp=5.0))
    engine = Engine(config, detectors=[], observers=[])
    t = 1000.0
    for i in range(5):
        engine.process(RawPacket(t + i, craft.udp("10.200.0.2", "10.200.1.2", 40000 + i, 53, b"q"), 101))
    assert len(engine.table) == 3 and engine.table.evicted == 2
    engine.advance(t + 100)
    assert len(engine.table) == 0
    reasons = sorted(e["flow"]["reason"] for e in engine.drain_events())
    assert reasons == ["forced", "forced", "timeout", "timeout", "timeout"]


def test_a_sweep_looks_at_a_bounded_number_of_flows_and_goes_round_the_table():
    """A full table must not stall the packets behind one sweep: each sweep looks at
    `sweep_budget` flows, least recently seen first; a flow's own packet does not wait."""
    config = EngineConfig(sweep_budget=3, sweep_interval=1000.0, timeouts=Timeouts(udp=5.0))
    engine = Engine(config, detectors=[], observers=[])
    t = 1000.0
    for i in range(7):
        engine.process(RawPacket(t + i * 0.01, craft.udp("10.200.0.2", "10.200.1.2", 40000 + i, 53, b"q"), 101))
    ports = lambda: [e["src_port"] for e in engine.drain_events()]
    engine.advance(t + 100)
    assert len(engine.table) == 4 and ports() == [40000, 40001, 40002]
    # A late packet of a flow not swept yet ends it and starts a new one at once.
    late = engine.process(RawPacket(t + 100.5, craft.udp("10.200.0.2", "10.200.1.2", 40006, 53, b"q"), 101))
    assert late.flow.start == t + 100.5 and ports() == [40006]
    engine.advance(t + 101)
    assert ports() == [40003, 40004, 40005]
    engine.advance(t + 102)           # a new round: only the new flow is left, and it is fresh
    assert ports() == [] and len(engine.table) == 1


def test_port_reuse_after_close_starts_a_new_flow():
    engine = Engine(detectors=[], observers=[])
    first = craft.TcpSession(CLIENT, SERVER).handshake().send(True, b"a").close()
    second = craft.TcpSession(CLIENT, SERVER, t0=first.t + 1, client_isn=9000).handshake().close()
    run(first.packets + second.packets, engine)
    engine.flush()
    flows = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert len(flows) == 2 and flows[0]["flow_id"] != flows[1]["flow_id"]


def test_port_reuse_whose_close_went_unseen_is_a_new_flow_and_is_inspected():
    """Live, a decided flow's FIN never reaches the engine (the kernel fast path carries
    it): a new connection on the same 5-tuple must not inherit the old flow's verdict."""
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    first = craft.TcpSession(CLIENT, SERVER).handshake().send(True, b"GET / HTTP/1.0\n")
    second = craft.TcpSession(CLIENT, SERVER, t0=first.t + 1, client_isn=9000).handshake()
    second.send(True, LOGIN)
    decisions = run(first.packets + second.packets, engine)
    assert decisions[3].action is Action.ALLOW and decisions[3].flow.verdict.rule == "default"
    assert decisions[-2].action is Action.DROP          # the login on the reused port
    assert decisions[-2].flow is not decisions[3].flow
    reused = [e for e in engine.drain_events() if e["event_type"] == "flow"]
    assert [e["flow"]["reason"] for e in reused] == ["reused"]


def test_a_retransmitted_syn_stays_in_its_flow_and_a_late_one_from_the_server_too():
    engine = Engine(detectors=[], observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    syn = s.packets[0][1]
    s.send(True, b"data")
    packets = s.packets[:1] + [(s.packets[0][0] + 0.5, syn)] + s.packets[1:] + [(s.t, syn)]
    decisions = run(packets, engine)
    assert len({id(d.flow) for d in decisions}) == 1
    assert decisions[-1].flow.pkts_toserver == 4      # three SYNs and the data: the ACK is pure
    # The server side opening towards the client's port while the flow lives: reuse.
    late = craft.tcp(SERVER[0], CLIENT[0], SERVER[1], CLIENT[1], "S", seq=77)
    assert engine.process(RawPacket(s.t + 0.1, late, 101)).flow is not decisions[-1].flow


def decoy_close(session, from_client, seq_offset=0):
    """A FIN (with its ACK) that the receiver will not take; the session's numbers stay."""
    return session.segment(from_client, b"", seq_offset=seq_offset, flags="FA")


def test_data_beyond_a_fin_is_a_decoy_close_and_the_flow_is_dropped():
    """Fake FINs at the exact next numbers (a receiver drops them by PAWS, conntrack does
    not) make the detectors conclude; the login that follows lies beyond the client's FIN."""
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    decoy_close(s, True)
    decoy_close(s, False)
    s.send(True, LOGIN)
    decisions = run(s.packets, engine)
    closed = decisions[4]
    assert closed.action is Action.ALLOW and not closed.offload   # closing: stays in the queue
    login = decisions[5]
    assert login.action is Action.DROP and login.offload and login.verdict.rule == "exception-policy"
    assert login.flow.anomalies == {"data-after-fin": 1}
    assert engine.counters["evasion.data_after_fin"] == 1
    alerts = [e for e in engine.drain_events() if e["event_type"] == "alert"]
    assert alerts and "beyond a FIN" in alerts[-1]["verdict"]["reasons"][0]


def test_a_real_close_with_a_late_retransmission_is_not_a_decoy():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake().send(True, b"hello\n").send(False, b"hi\n")
    s.segment(True, b"hello\n", seq_offset=-6)          # the request again, after the close below
    packets = s.packets[:-1]
    s.close()
    decisions = run(packets + s.packets[len(packets) + 1:] + [s.packets[len(packets)]], engine)
    assert all(d.action is Action.ALLOW for d in decisions)
    assert decisions[-1].flow.anomalies is None


def test_a_fin_ahead_of_a_gap_does_not_end_inspection():
    """A FIN far ahead in the window (the receiver holds it out of order): the bytes
    before it can still come, so the detectors must keep reading them."""
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    decoy_close(s, True, seq_offset=60_000)
    decoy_close(s, False, seq_offset=60_000)
    s.send(True, LOGIN)
    decisions = run(s.packets, engine)
    assert decisions[-2].action is Action.DROP and decisions[-2].verdict.rule == "block-mining"


def test_a_reset_does_not_end_inspection_and_what_follows_it_is_read():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    s.segment(False, b"", seq_offset=7, flags="R")     # not at the expected number: ignored
    s.send(True, LOGIN)
    decisions = run(s.packets, engine)
    assert decisions[3].action is Action.ALLOW and not decisions[3].offload
    assert decisions[-2].action is Action.DROP and decisions[-2].verdict.rule == "block-mining"


def test_garbage_never_raises_and_is_counted():
    engine = Engine(detectors=[LineDetector()], policy=BlockMining(), observers=[])
    for i, junk in enumerate([b"", b"\x45", b"\x60" + b"\x00" * 10, b"\x99" * 64]):
        d = engine.process(RawPacket(1.0 + i, junk, 101))
        assert d.action is Action.DROP     # broken IP is dropped by the default exception policy
    lying = engine.process(RawPacket(9.0, b"\x45" + b"\xff" * 30, 101))   # tracked, with its anomaly
    assert engine.counters["undecodable"] == 4
    assert lying.flow.anomalies == {"ipv4-bad-length": 1}


def test_a_detector_that_raises_is_counted_not_fatal():
    class Broken(LineDetector):
        name = "broken"
        def inspect(self, view):
            raise RuntimeError("bug")
    engine = Engine(detectors=[Broken(), LineDetector()], policy=BlockMining(), observers=[])
    decisions = run(stratum_session(), engine)
    assert Action.DROP in {d.action for d in decisions}
    assert engine.stats()["inspect.errors.broken: RuntimeError"] == 1


def test_rejudge_after_a_reload_revokes_allowed_flows():
    engine = Engine(detectors=[], policy=BlockMining(), observers=[])
    decisions = run(craft.TcpSession(CLIENT, SERVER).handshake().send(True, b"hi").packets, engine)
    flow = decisions[-1].flow

    class DropAll(BlockMining):
        def decide(self, flow, now):
            return Verdict(Action.DROP, Mode.ENFORCE, "lockdown", ("reload",))
    engine.swap_policy(DropAll())
    assert engine.rejudge(2e9) == [flow]


def test_inspection_ends_after_its_packet_budget_even_if_a_detector_still_waits():
    """A detector waiting for a fact that never comes must not keep the flow queued forever."""
    class Patient(LineDetector):
        name = "patient"
        def inspect(self, view):
            self.calls += 1
            if view.closed_to_server and view.closed_to_client:   # the last look: conclude
                return InspectResult(Status.NO_MATCH, facts={"patient.seen": len(view.to_server)})
            return NEED_MORE
    det = Patient()
    engine = Engine(EngineConfig(max_inspect_packets=5), detectors=[det], observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    for _ in range(10):
        s.send(True, b"x" * 10, ack=False)
    decisions = run(s.packets, engine)
    assert det.calls == 5 + 1                      # five packets, then one last look
    flow = decisions[-1].flow
    assert flow.facts["patient.seen"] == 50
    assert decisions[-1].offload and flow.streams is None


def test_with_a_model_a_bulk_flow_settles_after_the_last_packet_checkpoint(repo_root):
    """The classifier must not keep a bulk transfer queued forever (live fast path),
    and replay must stop feeding it at the same point (live equals replay)."""
    import pytest
    from egress.classify import FlowClassifier
    if not (repo_root / "models" / "default" / "metadata.json").is_file():
        pytest.skip("no bundled model in models/default")
    classifier = FlowClassifier.load(repo_root / "models" / "default")
    engine = Engine(detectors=[], observers=[], classifier=classifier)
    s = craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake()
    for _ in range(600):
        s.send(False, b"x" * 1400)                     # each followed by the client's pure ACK
    decisions = run(s.packets, engine)
    offloaded = [i for i, d in enumerate(decisions) if d.offload]
    tracked = [i for i, (ts, p) in enumerate(s.packets) if not is_pure_ack(decode(RawPacket(ts, p, 101, len(p))))]
    assert offloaded and offloaded[0] == tracked[511]  # the 512th tracked packet is the last checkpoint
    flow = decisions[-1].flow
    assert flow.features is None and flow.ml["model"] == classifier.name


def test_the_input_interface_of_a_live_packet_attributes_the_flow_and_shows_in_eve():
    engine = Engine(detectors=[], policy=BlockMining(), observers=[])
    syn = craft.tcp(CLIENT[0], SERVER[0], CLIENT[1], SERVER[1], "S")
    engine.process(RawPacket(1.0, syn, 101, iface="veth-sbx"))
    engine.flush()
    event = engine.drain_events()[0]
    assert event["in_iface"] == "veth-sbx" and event["sandbox"]["id"] == "sbx-veth-sbx"


def test_an_internal_error_drops_the_whole_flow_fail_closed_and_is_counted():
    class FlakyPolicy(BlockMining):
        calls = 0
        def decide(self, flow, now):
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("bug in a rule")
            return super().decide(flow, now)
    engine = Engine(detectors=[], policy=FlakyPolicy(), observers=[])
    decisions = run(craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake().send(True, b"hi").packets, engine)
    assert [d.action for d in decisions] == [Action.DROP] * len(decisions)
    assert engine.counters["engine.exceptions"] == 1
    engine.flush()
    flow = [e for e in engine.drain_events() if e["event_type"] == "flow"][0]
    assert flow["verdict"]["rule"] == "exception-policy"


def test_the_exception_policy_can_fail_open():
    class Broken(BlockMining):
        def decide(self, flow, now):
            raise RuntimeError("bug")
    engine = Engine(EngineConfig(exception_action="allow"), detectors=[], policy=Broken(), observers=[])
    decisions = run(craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake().packets, engine)
    assert {d.action for d in decisions} == {Action.ALLOW}


def test_a_reload_that_removes_the_model_does_not_break_flows_in_progress():
    class Counting:
        name = "counting"
        def start(self, flow):
            flow.features = []
        def on_packet(self, flow, pkt, direction):
            flow.features.append(direction)
            return False
        def on_end(self, flow):
            flow.ml = {"model": self.name, "class": "benign", "scores": {"benign": 1.0}}
    engine = Engine(detectors=[], policy=BlockMining(), classifier=Counting(), observers=[])
    s = craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake()
    run(s.packets, engine)
    engine.swap_classifier(None)
    decisions = run(s.send(True, b"more").packets[3:], engine)
    assert {d.action for d in decisions} == {Action.ALLOW} and engine.counters["engine.exceptions"] == 0


def test_a_flow_that_ends_while_a_detector_waits_gets_its_last_look_in_the_flow_event():
    class Concluding(LineDetector):
        name = "concluding"
        def inspect(self, view):
            if view.closed_to_server and view.closed_to_client:
                return InspectResult(Status.MATCH, (Detection("tunnel", "fake.shape", confidence=0.5),))
            return NEED_MORE
    engine = Engine(detectors=[Concluding()], observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake().send(True, b"abc")   # no FIN: ends by flush
    run(s.packets, engine)
    engine.flush()
    flow = [e for e in engine.drain_events() if e["event_type"] == "flow"][0]
    assert flow["detections"] == [{"category": "tunnel", "signature": "fake.shape", "confidence": 0.5}]


def without_pure_acks(packets):
    return [(ts, p) for ts, p in packets if not is_pure_ack(decode(RawPacket(ts, p, 101, len(p))))]


def test_pure_acks_change_nothing_so_live_without_them_equals_replay_with_them(repo_root):
    """The live gateway does not queue pure ACKs: the engine must give the same verdicts
    and the same events whether it sees them or not."""
    from egress.classify import FlowClassifier
    from egress.policy import load_policy_engine
    s = craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake()
    for i in range(40):
        s.send(True, b"q" * (40 + i)).send(False, b"r" * 700).wait(0.3)
    bulk = craft.TcpSession((CLIENT[0], 40001), ("10.200.1.2", 80), t0=s.t).handshake()
    bulk.send(True, b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
    for _ in range(40):
        bulk.send(False, b"x" * 1400)
    packets = sorted(stratum_session() + s.close().packets + bulk.close().packets)
    assert len(without_pure_acks(packets)) < len(packets) - 80

    def replay(pkts):
        engine = Engine(policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]),
                        classifier=FlowClassifier.load(repo_root / "models" / "default"))
        decisions = [(d.action, d.verdict.rule) for d in run(pkts, engine)]
        engine.flush()
        return decisions, engine.drain_events()
    with_acks, events_with = replay(packets)
    live, events_live = replay(without_pure_acks(packets))
    assert events_with == events_live and any(e["event_type"] == "alert" for e in events_live)
    tracked = [i for i, (ts, p) in enumerate(packets) if not is_pure_ack(decode(RawPacket(ts, p, 101, len(p))))]
    assert [with_acks[i] for i in tracked] == live


def test_a_connection_silent_after_its_handshake_keeps_its_flow_past_the_new_timeout():
    engine = Engine(detectors=[], observers=[])
    s = craft.TcpSession(CLIENT, SERVER).handshake()
    s.wait(Timeouts().tcp_new * 3)
    s.send(True, LOGIN)
    decisions = run(s.packets, engine)
    assert decisions[-1].flow is decisions[0].flow and decisions[-1].flow.initiator == "syn"
    assert engine.counters["flows"] == 1


class DenyAll(BlockMining):
    def decide(self, flow, now):
        self.decisions += 1
        return Verdict(Action.DROP, Mode.ENFORCE, "deny", ("not on the allowlist",))


def test_bare_acks_of_no_known_flow_are_judged_like_any_flow():
    """ACKs alone, without a handshake (a covert channel in sequence numbers, windows and
    timestamps), are not waved through: the first starts a flow the policy judges."""
    engine = Engine(detectors=[], policy=DenyAll(), observers=[])
    packets = [(1.0 + i, craft.tcp(CLIENT[0], SERVER[0], CLIENT[1], SERVER[1], "A", 1000 + i, 5000))
               for i in range(3)]
    decisions = run(packets, engine)
    assert [d.action for d in decisions] == [Action.DROP] * 3
    assert engine.counters["flows"] == 1 and engine.counters["packets.pure_ack"] == 2


# -- the server cannot end the inspection of the client by talking (ONEWAY) ---------------

SUBMIT = b'{"id":4,"method":"mining.submit","params":["w","1","00","5f5e1000","12345678"]}\n'


def pool_with_a_banner(banner_packets, port=41000, t0=1_700_000_000.0):
    """A pool that talks first (a banner of the attacker's choice), then the miner's login."""
    s = craft.TcpSession((CLIENT[0], port), SERVER, t0=t0).handshake()
    for chunk in banner_packets:
        s.send(False, chunk)
    s.send(True, LOGIN)
    s.send(False, b'{"id":1,"result":[[],"08000002",4],"error":null}\n')
    s.send(True, SUBMIT)
    return s.close().packets


def default_engine(repo_root):
    from egress.policy import load_policy_engine
    return Engine(policy=load_policy_engine([str(repo_root / "rules" / "default.yaml")]))


def test_a_pool_cannot_hide_the_miners_login_behind_a_long_banner(repo_root):
    """8 KiB of banner, or 120 small packets: the server's side is spent, the client's is
    still read (before, either ended all inspection and the login passed as unknown)."""
    for banner in ([b"Welcome to the pool! " * 400], [b"motd %03d\n" % i for i in range(120)]):
        engine = default_engine(repo_root)
        packets = pool_with_a_banner(banner)
        decisions = run(packets, engine)
        login = next(i for i, (_, p) in enumerate(packets) if LOGIN in p)
        assert decisions[login - 1].oneway and not decisions[login - 1].offload
        assert decisions[login].action is Action.DROP and decisions[login].verdict.rule == "block-mining"
        assert "mining" in decisions[login].flow.categories()
        assert engine.stats()["flows.oneway"] == 1


def test_a_download_stays_inspected_on_the_client_side_only(repo_root):
    """A keep-alive download: once the server's side is spent, its data changes nothing in
    the engine; the client's next request is still inspected."""
    engine = default_engine(repo_root)
    s = craft.TcpSession(CLIENT, ("10.200.1.2", 80)).handshake()
    s.send(True, b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n")
    s.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n" + b"z" * 30000)
    decisions = run(s.packets, engine)
    flow = decisions[-1].flow
    assert decisions[-1].oneway and flow.inspecting and flow.streams[1].done
    sizes = list(flow.sizes)
    s.packets.clear()
    s.send(False, b"z" * 5000)                          # more of the download: nothing moves
    decisions = run(s.packets, engine)
    assert flow.sizes == sizes and decisions[-1].oneway
    s.packets.clear()
    s.send(True, LOGIN)                                # the client's side is still read
    decisions = run(s.packets, engine)
    assert decisions[0].action is Action.DROP and "mining" in flow.categories()


def test_oneway_live_without_the_servers_packets_equals_replay_with_them(repo_root):
    """Live, a ONEWAY flow's server packets (but FIN, SYN and RST) pass in the kernel
    unseen: the engine must give the same verdicts and alerts without them."""
    from egress.types import FIN, RST, SYN
    mining = pool_with_a_banner([b"Welcome to the pool! " * 400], port=41001)
    s = craft.TcpSession((CLIENT[0], 41002), ("10.200.1.2", 80), t0=mining[-1][0] + 1).handshake()
    for _ in range(3):
        s.send(True, b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n")
        s.send(False, b"HTTP/1.1 200 OK\r\nContent-Length: 12000\r\n\r\n" + b"z" * 12000)
    packets = sorted(mining + s.close().packets)

    engine = default_engine(repo_root)
    replayed = run(packets, engine)
    engine.flush()
    events = engine.drain_events()
    keep, oneway = [], set()         # flows whose decision said oneway before this packet
    for (ts, p), d in zip(packets, replayed):
        pkt = decode(RawPacket(ts, p, 101, len(p)))
        from_server = pkt.sport in (SERVER[1], 80)
        if id(d.flow) in oneway and from_server and not pkt.flags & (FIN | RST | SYN):
            continue
        if d.oneway:
            oneway.add(id(d.flow))
        keep.append(((ts, p), d))
    assert len(keep) < len(packets) - 10
    live_engine = default_engine(repo_root)
    live = run([tp for tp, _ in keep], live_engine)
    live_engine.flush()
    live_events = live_engine.drain_events()
    assert [(d.action, d.verdict.rule) for d in live] == [(d.action, d.verdict.rule) for _, d in keep]
    strip = lambda evs: [(e["event_type"], e.get("verdict"), e.get("app_proto"),
                          [x["signature"] for x in e.get("detections", [])]) for e in evs]
    assert strip(live_events) == strip(events) and any(e["event_type"] == "alert" for e in live_events)
    assert len(oneway) == 2


def test_a_tls_download_keeps_none_of_the_servers_bytes_while_its_client_is_read(repo_root):
    """Once only client-side detectors wait (a TLS download: the mining backstop), a
    oneway flow drops the server's bytes; an HTTP download, whose keep-alive readers
    need the answers, keeps them. Both still read the client's side."""
    from tests.inspect.test_tls import published_hello, records
    for hello, answer, keeps in (
            (records(published_hello()), b"\x16\x03\x03\x00\x30\x02" + b"s" * 47 + b"\x17\x03\x03\x4e\x20", False),
            (b"GET /big HTTP/1.1\r\nHost: files.example\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 30000\r\n\r\n",
             True)):
        engine = default_engine(repo_root)
        s = craft.TcpSession(CLIENT, ("10.200.1.2", 443)).handshake()
        s.send(True, hello)
        s.send(False, answer + b"z" * 20000)
        flow = run(s.packets, engine)[-1].flow
        assert flow.oneway and flow.inspecting and flow.streams[1].done
        assert bool(flow.streams[1].data) == keeps and (flow.streams[0].memo is None) != keeps
        s.packets.clear()
        s.send(True, LOGIN)
        assert run(s.packets, engine)[0].action is Action.DROP
