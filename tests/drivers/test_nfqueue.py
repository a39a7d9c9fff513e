"""The queue driver's pure parts: the nfnetlink config message, wire lengths, and the
one-verdict-per-packet rule with a fake queue packet and a failing engine."""
from __future__ import annotations

import errno
import socket
import struct

from egress.drivers.iptables import MARK_DROP, MARK_MASK, MARK_REJECT_ONCE
from egress.drivers.nfqueue import (NF_ACCEPT, NF_DROP, NF_REPEAT, NFQA_CFG_F_FAIL_OPEN, NFQA_CFG_F_GSO,
                                    QueueDriver, QueueReader, VerdictBatch, config_flags_message, read_queue_stats,
                                    verdict_message, wire_length)
from egress.types import Action, Decision, Verdict


def test_config_message_layout():
    msg = config_flags_message(7, NFQA_CFG_F_GSO, NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, seq=42)
    length, mtype, flags, seq, pid = struct.unpack_from("=IHHII", msg)
    assert length == len(msg) == 16 + 4 + 2 * 8
    assert mtype == (3 << 8) | 2 and flags == 0x5 and seq == 42 and pid == 0
    family, version, res_id = struct.unpack_from("=BBH", msg, 16)
    assert family == socket.AF_UNSPEC and version == 0 and socket.ntohs(res_id) == 7
    attrs = {}
    for off in (20, 28):
        alen, atype = struct.unpack_from("=HH", msg, off)
        assert alen == 8
        attrs[atype] = struct.unpack_from("!I", msg, off + 4)[0]
    assert attrs == {4: NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO, 5: NFQA_CFG_F_GSO}


def test_wire_length_from_ip_headers():
    v4 = bytes([0x45, 0, 0x05, 0xdc]) + bytes(16)
    assert wire_length(v4) == 1500
    v6 = bytes([0x60, 0, 0, 0, 0xff, 0xd8]) + bytes(34)
    assert wire_length(v6) == 40 + 0xffd8
    assert wire_length(b"\x00\x01") == 2


class FakePacket:
    def __init__(self, payload=b"\x45" + bytes(39), ts=0.0, mark=0x5, indev=0, id=1):
        self.payload, self.ts, self.mark, self.indev, self.id = payload, ts, mark, indev, id
        self.verdicts = []
        self.new_mark = None

    def get_payload(self):
        return self.payload

    def get_timestamp(self):
        return self.ts

    def get_mark(self):
        return self.mark

    def set_mark(self, mark):
        self.new_mark = mark

    def accept(self):
        self.verdicts.append("accept")

    def drop(self):
        self.verdicts.append("drop")

    def repeat(self):
        self.verdicts.append("repeat")


class ScriptedEngine:
    def __init__(self, *decisions):
        self.decisions = list(decisions)
        self.seen = []

    def process(self, raw):
        self.seen.append(raw)
        d = self.decisions.pop(0)
        if isinstance(d, Exception):
            raise d
        return d

    def reinspect(self, flow):
        self.seen.append(("reinspect", flow))


def test_each_action_gets_exactly_one_verdict_and_the_right_mark():
    cases = [
        (Decision(Action.ALLOW, Verdict()), ["accept"], None),
        (Decision(Action.DROP, Verdict()), ["drop"], None),
        (Decision(Action.REJECT, Verdict()), ["repeat"], MARK_REJECT_ONCE | 0x5),
        (Decision(Action.DROP, Verdict(), offload=True), ["repeat"], MARK_DROP | 0x5),
    ]
    for decision, verdicts, mark in cases:
        drv = QueueDriver(ScriptedEngine(decision))
        pkt = FakePacket()
        drv._on_packet(pkt)
        assert pkt.verdicts == verdicts and pkt.new_mark == mark
        if mark is not None:
            assert mark & ~MARK_MASK == 0x5          # other mark bits are kept


def test_engine_error_follows_the_exception_policy_and_is_counted():
    for policy, verdict in (("drop", "drop"), ("allow", "accept")):
        drv = QueueDriver(ScriptedEngine(RuntimeError("boom")), exception_action=policy)
        pkt = FakePacket()
        drv._on_packet(pkt)
        assert pkt.verdicts == [verdict] and drv.counters["exceptions"] == 1


def test_packet_time_is_the_queue_timestamp_only_when_it_is_wall_clock():
    engine = ScriptedEngine(Decision(Action.ALLOW, Verdict()), Decision(Action.ALLOW, Verdict()))
    drv = QueueDriver(engine, clock=lambda: 1000.0)
    drv._on_packet(FakePacket(ts=999.5))
    drv._on_packet(FakePacket(ts=12.0))           # a monotonic-clock EDT stamp
    assert [r.ts for r in engine.seen] == [999.5, 1000.0]


def test_copy_range_is_capped():
    assert QueueDriver(None, copy_range=9000).copy_range == 1500


def test_queue_stats_parse(tmp_path):
    f = tmp_path / "nfnetlink_queue"
    f.write_text("    0  12345     3 2  1500     7    9     1000  1\n")
    assert read_queue_stats(str(f)) == {0: {"portid": 12345, "queue_total": 3, "copy_mode": 2, "copy_range": 1500,
                                            "queue_dropped": 7, "user_dropped": 9, "id_sequence": 1000}}
    assert read_queue_stats(str(tmp_path / "missing")) == {}


def test_the_input_interface_reaches_the_engine_by_name():
    engine = ScriptedEngine(Decision(Action.ALLOW, Verdict()), Decision(Action.ALLOW, Verdict()))
    driver = QueueDriver(engine)
    driver._on_packet(FakePacket(indev=1))       # 1 is the loopback interface in any namespace
    driver._on_packet(FakePacket(indev=0))
    assert [raw.iface for raw in engine.seen] == ["lo", None]


class TrickleQueue:
    """A stand-in binding: each run_socket() call delivers the next scheduled packets
    (one list per call), as a queue does when packets arrive while we poll it."""

    def __init__(self, driver, schedule, fd):
        self.driver, self.schedule, self.fd = driver, list(schedule), fd

    def get_fd(self):
        return self.fd

    def run_socket(self, reader):
        for _ in range(self.schedule.pop(0) if self.schedule else 0):
            self.driver._on_packet(FakePacket())


def _trickle_driver(busy_poll, schedule, n):
    import socket as _socket
    a, b = _socket.socketpair()
    b.send(b"!")                           # the fd is readable: select() returns at once
    engine = ScriptedEngine(*[Decision(Action.ALLOW, Verdict()) for _ in range(n)])
    drv = QueueDriver(engine, busy_poll=busy_poll)
    drv.bindings = [TrickleQueue(drv, schedule, a.fileno())]
    drv._readers = [type("R", (), {"fd": a.fileno(), "verdicts": VerdictBatch(KernelSocket(), 0),
                                   "start": lambda self, budget: None})()]
    return drv, (a, b)


def test_busy_poll_takes_packets_that_arrive_while_polling():
    schedule = [1, 0, 0, 2, 0, 1]             # packets per read: gaps shorter than the busy-poll window
    drv, socks = _trickle_driver(0.05, schedule, 4)
    try:
        assert drv.poll(0.1) == 4             # all of them in one poll() call, no sleep between
    finally:
        [s.close() for s in socks]
    drv, socks = _trickle_driver(0.0, list(schedule), 4)
    try:
        assert drv.poll(0.1) == 1             # without busy-poll: only what was there at wake-up
    finally:
        [s.close() for s in socks]


def test_busy_poll_is_bounded_by_the_batch():
    drv, socks = _trickle_driver(10.0, [1] + [3] * 100, 301)
    try:
        assert drv.poll(0.1, batch=10) <= 12  # stops at the batch (plus one read), not after 10 s
    finally:
        [s.close() for s in socks]


class FakeWatch:
    """What the driver uses of an NflogReader."""
    sock = None

    def fileno(self):
        return -1

    def close(self):
        pass


class FakeFlow:
    kernel_mark = 0
    last = 7.0
    bypassed = 0.0
    bypassed_toclient = 0.0
    initiator = "syn"
    features = None


class RecordingMarker:
    def __init__(self):
        self.calls = []

    def set_mark(self, flow, action):
        self.calls.append((flow, action))
        return True

    def requeue(self, flow):
        self.calls.append((flow, "requeue"))
        return True

    def unwatch(self, flow):
        self.calls.append((flow, "unwatch"))
        return True


def test_a_watched_flow_gets_its_slot_mark_and_leaves_the_queue():
    from egress.drivers.iptables import OWNED_BITS, watch_mark
    flow = FakeFlow()
    drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), flow, watch=True)), watch=FakeWatch(),
                      watch_slot=3)
    pkt = FakePacket(mark=0x5 | 0x00F00000)         # stale slot bits are replaced, others kept
    drv._on_packet(pkt)
    assert pkt.verdicts == ["repeat"] and pkt.new_mark == watch_mark(3) | 0x5
    assert pkt.new_mark & OWNED_BITS == flow.kernel_mark == watch_mark(3)
    assert drv.counters["watched"] == 1


def test_without_a_watch_reader_or_fast_path_a_watched_flow_stays_queued():
    for kwargs in ({}, {"watch": FakeWatch(), "fast_path": False}):
        drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), FakeFlow(), watch=True)), **kwargs)
        pkt = FakePacket()
        drv._on_packet(pkt)
        assert pkt.verdicts == ["accept"] and pkt.new_mark is None


def test_watched_copies_revoke_a_blocked_flow_and_end_the_watch_once():
    from egress.drivers.iptables import watch_mark
    from egress.types import Mode
    flow, other = FakeFlow(), FakeFlow()
    flow.kernel_mark = other.kernel_mark = watch_mark(0)        # both watched
    drop = Verdict(Action.DROP, Mode.ENFORCE, "classifier", ())
    decisions = [Decision(Action.ALLOW, Verdict(), flow, watch=True),       # still watching: nothing to do
                 Decision(Action.DROP, drop, flow, offload=True, revoked=True),
                 Decision(Action.DROP, drop, flow, offload=True),           # the same block again: no rewrite
                 Decision(Action.ALLOW, Verdict(), other, offload=True),     # the classifier is done: fast path
                 RuntimeError("boom"),                                      # counted, never raised
                 Decision(Action.ALLOW, Verdict())]                         # untracked: nothing to do
    marker = RecordingMarker()
    engine = ScriptedEngine(*decisions)
    drv = QueueDriver(engine, watch=FakeWatch(), marker=marker)
    ip = bytes([0x45, 0, 0x05, 0xdc]) + bytes(16)
    drv.on_watched([(1.0, ip, 0, 0)] * len(decisions))
    assert marker.calls == [(flow, Action.DROP), (other, Action.ALLOW)]
    assert drv.counters["watch_packets"] == 6 and drv.counters["watch_exceptions"] == 1
    assert drv.counters["watch_revoked"] == 1 and drv.counters["watch_ended"] == 1
    assert drv.counters["packets"] == 0                 # copies are not queued packets: no verdict
    assert engine.seen[0].wire_len == 1500              # the copy is cut; its size comes from the header


def test_a_oneway_flow_is_marked_once_and_its_client_side_stays_queued():
    from egress.drivers.iptables import OWNED_BITS, oneway_mark
    flow = FakeFlow()
    flow.features = object()                    # the classifier watches: the server's side is copied
    oneway = lambda: Decision(Action.ALLOW, Verdict(), flow, oneway=True)
    drv = QueueDriver(ScriptedEngine(oneway(), oneway(), oneway()), watch=FakeWatch(), watch_slot=2)
    first, second, third = FakePacket(mark=0x5 | 0x00F00000), FakePacket(), FakePacket()
    drv._on_packet(first)
    assert first.verdicts == ["repeat"] and first.new_mark == oneway_mark(2, True) | 0x5
    assert flow.kernel_mark == first.new_mark & OWNED_BITS
    drv._on_packet(second)                      # the client's next packet: queued, judged, accepted
    assert second.verdicts == ["accept"] and second.new_mark is None
    assert flow.bypassed_toclient == 0.0        # copies come: the server's side is still counted
    flow.features = None                        # the classifier is done: no more copies
    drv._on_packet(third)
    assert third.verdicts == ["repeat"] and third.new_mark & OWNED_BITS == oneway_mark(2, False)
    assert flow.bypassed_toclient == flow.last
    assert drv.counters["oneway"] == 2 and drv.counters["accept"] == 3


def test_oneway_needs_the_fast_path_and_a_handshake_client():
    for kwargs, initiator in (({"fast_path": False}, "syn"), ({}, "port"), ({}, "first")):
        flow = FakeFlow()
        flow.initiator = initiator
        drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), flow, oneway=True)), **kwargs)
        pkt = FakePacket()
        drv._on_packet(pkt)
        assert pkt.verdicts == ["accept"] and pkt.new_mark is None and flow.kernel_mark == 0
    # without a watch reader the server's side passes without copies
    flow = FakeFlow()
    flow.features = object()
    drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), flow, oneway=True)))
    drv._on_packet(FakePacket())
    from egress.drivers.iptables import MARK_MASK, MARK_ONEWAY
    assert flow.kernel_mark & MARK_MASK == MARK_ONEWAY


def test_copies_of_a_oneway_flow_end_when_the_classifier_is_done_and_a_block_revokes():
    from egress.drivers.iptables import MARK_MASK, MARK_ONEWAY, oneway_mark
    from egress.types import Mode
    flow, other = FakeFlow(), FakeFlow()
    flow.kernel_mark = other.kernel_mark = oneway_mark(0, True)
    flow.features = object()
    drop = Verdict(Action.DROP, Mode.ENFORCE, "classifier", ())
    decisions = [Decision(Action.ALLOW, Verdict(), flow, oneway=True),     # still watched: nothing to do
                 Decision(Action.ALLOW, Verdict(), other, oneway=True),    # done watching: copies end
                 Decision(Action.ALLOW, Verdict(), other, oneway=True),    # (once)
                 Decision(Action.DROP, drop, flow, offload=True, revoked=True)]
    marker = RecordingMarker()
    drv = QueueDriver(ScriptedEngine(*decisions), watch=FakeWatch(), marker=marker)
    drv.on_watched([(1.0, bytes([0x45, 0, 0, 40]) + bytes(36), 0, 0)] * len(decisions))
    assert marker.calls == [(other, "unwatch"), (flow, Action.DROP)]
    assert other.kernel_mark & MARK_MASK == MARK_ONEWAY and drv.counters["oneway_unwatched"] == 1
    assert other.bypassed_toclient == other.last and not flow.bypassed_toclient
    assert drv.counters["watch_revoked"] == 1


def test_copies_of_a_connection_the_engine_does_not_know_send_it_back_to_the_queue():
    # The engine forgot the flow (idle timeout) or the daemon restarted: the copy made a
    # new flow, which never had a verdict from this driver.
    fresh = FakeFlow()
    decisions = [Decision(Action.ALLOW, Verdict(), fresh), Decision(Action.ALLOW, Verdict(), fresh),
                 Decision(Action.ALLOW, Verdict(), fresh, offload=True)]
    marker = RecordingMarker()
    drv = QueueDriver(ScriptedEngine(*decisions), watch=FakeWatch(), marker=marker)
    ip = bytes([0x45, 0, 0, 40]) + bytes(36)
    engine = drv.engine
    drv.on_watched([(1.0, ip, 0, 0)] * 3)
    assert marker.calls == [(fresh, "requeue")] and drv.counters["watch_requeued"] == 1
    # The detectors start over on the whole packets that the queue will bring.
    assert [x for x in engine.seen if isinstance(x, tuple)] == [("reinspect", fresh)]


# -- verdicts in batches -------------------------------------------------------------------

def parse_verdicts(buffer: bytes) -> list[tuple]:
    """(queue, packet id, verdict, mark or None) of every NFQNL_MSG_VERDICT in a buffer."""
    out = []
    while buffer:
        length, mtype, flags, _seq, _pid = struct.unpack_from("=IHHII", buffer)
        assert mtype == (3 << 8) | 1 and flags == 0x1            # NFQNL_MSG_VERDICT, NLM_F_REQUEST, no ACK
        family, version, res_id = struct.unpack_from("=BBH", buffer, 16)
        assert family == socket.AF_UNSPEC and version == 0
        attrs, off = {}, 20
        while off < length:
            alen, atype = struct.unpack_from("=HH", buffer, off)
            attrs[atype] = buffer[off + 4:off + alen]
            off += (alen + 3) & ~3
        verdict, packet_id = struct.unpack("!II", attrs[2])
        mark = struct.unpack("!I", attrs[3])[0] if 3 in attrs else None
        out.append((socket.ntohs(res_id), packet_id, verdict, mark))
        buffer = buffer[length:]
    return out


class KernelSocket:
    """The kernel's side of a queue's netlink socket: records each send; can refuse."""

    def __init__(self, refuse=lambda data: False):
        self.sent: list[bytes] = []
        self.refuse = refuse

    def send(self, data):
        if self.refuse(data):
            raise OSError(errno.ENOBUFS, "refused")
        self.sent.append(bytes(data))
        return len(data)

    def verdicts(self):
        return [v for data in self.sent for v in parse_verdicts(data)]


def test_verdict_message_layout_is_what_libnetfilter_queue_writes():
    msg = verdict_message(7, 0x01020304, NF_REPEAT, 0x80000005)
    assert len(msg) == 16 + 4 + 12 + 8 and struct.unpack_from("=I", msg)[0] == len(msg)
    assert parse_verdicts(msg) == [(7, 0x01020304, NF_REPEAT, 0x80000005)]
    assert parse_verdicts(verdict_message(0, 9, NF_ACCEPT)) == [(0, 9, NF_ACCEPT, None)]


def test_a_batch_is_one_send_of_the_same_messages_in_order():
    kernel = KernelSocket()
    batch = VerdictBatch(kernel, 3)
    batch.add(10, NF_ACCEPT)
    batch.add_marked(11, NF_REPEAT, 0x1000005)
    batch.add(12, NF_DROP)
    assert kernel.sent == []                              # nothing leaves before the flush
    batch.flush()
    assert kernel.sent == [verdict_message(3, 10, NF_ACCEPT) + verdict_message(3, 11, NF_REPEAT, 0x1000005)
                           + verdict_message(3, 12, NF_DROP)]
    batch.flush()
    assert len(kernel.sent) == 1 and batch.sends == 1     # an empty batch sends nothing


def test_a_refused_send_is_retried_per_verdict_and_the_refused_ones_are_counted():
    refused = []
    kernel = KernelSocket(refuse=lambda data: len(data) > 40 or parse_verdicts(data)[0][1] == 2)
    batch = VerdictBatch(kernel, 0, on_error=refused.append)
    for packet_id in (1, 2, 3):
        batch.add(packet_id, NF_ACCEPT)
    batch.flush()
    assert [v[1] for v in kernel.verdicts()] == [1, 3] and len(refused) == 1
    assert batch.pending == []


def test_the_reader_answers_a_reads_first_packet_at_once_and_batches_the_rest():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)     # b plays the kernel's end
    reader = QueueReader(a.fileno(), 0, limit=2)
    b.setblocking(False)

    def sent() -> list[list[int]]:
        calls = []
        while True:
            try:
                calls.append([v[1] for v in parse_verdicts(b.recv(4096))])
            except BlockingIOError:
                return calls

    try:
        for i in range(4):
            b.send(b"packet %d" % i)
        reader.start(10)
        for packet_id in (1, 2, 3, 4):
            reader.recv(100)
            reader.verdicts.add(packet_id, NF_ACCEPT)
            # the first verdict left before the second read, then two at a time (the limit)
            assert sent() == {1: [], 2: [[1]], 3: [], 4: [[2, 3]]}[packet_id]
        try:
            reader.recv(100)
            raise AssertionError("the queue is empty: the read must report it would block")
        except BlockingIOError:
            pass
        assert sent() == [[4]]                                    # sent before reporting "would block"
        b.send(b"packet 5")
        reader.start(1)
        reader.recv(100)
        reader.verdicts.add(5, NF_ACCEPT)
        try:
            reader.recv(100)
            raise AssertionError("the read's budget is spent: it must end")
        except BlockingIOError:
            pass
        assert sent() == [[5]]                                    # the end of a bounded read
    finally:
        reader.close()
        a.close()
        b.close()


class BurstQueue:
    """A stand-in binding whose run_socket() reads like NetfilterQueue's: it hands every
    message the reader returns to the callback, until the reader would block."""

    def __init__(self, driver, n, fail_after=None):
        self.driver, self.n, self.fail_after = driver, n, fail_after
        self.next_id = 1

    def run_socket(self, reader):
        while True:
            try:
                reader.recv(4096)
            except BlockingIOError:
                return
            if self.next_id == self.fail_after:
                raise OSError(errno.EIO, "netlink receive failed")
            pkt = FakePacket(id=self.next_id)
            self.next_id += 1
            self.driver._on_packet(pkt)


def test_every_packet_of_a_read_gets_its_verdict_by_the_end_of_the_read():
    decisions = [Decision(Action.ALLOW, Verdict()), Decision(Action.DROP, Verdict()),
                 Decision(Action.REJECT, Verdict()), Decision(Action.DROP, Verdict(), offload=True)] * 5
    for fail_after in (None, 13):
        drv = QueueDriver(ScriptedEngine(*decisions), verdict_batch=4)
        kernel = KernelSocket()
        reader = type("Reader", (), {})()
        reader.verdicts = VerdictBatch(kernel, 0, limit=4)
        reader.recv = lambda size, left=[20]: left.__setitem__(0, left[0] - 1) or (
            b"m" if left[0] >= 0 else (_ for _ in ()).throw(BlockingIOError()))
        queue = BurstQueue(drv, 20, fail_after)
        try:
            drv._read(queue, reader)
        except OSError:
            assert fail_after is not None
        given = kernel.verdicts()
        handled = 20 if fail_after is None else fail_after - 1
        assert [v[1] for v in given] == list(range(1, handled + 1))   # each packet once, in order
        expected = [(NF_ACCEPT, None), (NF_DROP, None), (NF_REPEAT, MARK_REJECT_ONCE | 0x5), (NF_REPEAT, MARK_DROP | 0x5)]
        assert [v[2:] for v in given] == (expected * 5)[:handled]
        assert reader.verdicts.pending == [] and drv._out is None


def test_a_flow_handed_to_the_kernel_records_when():
    offloaded, kept = FakeFlow(), FakeFlow()
    drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), offloaded, offload=True),
                                     Decision(Action.ALLOW, Verdict(), kept)))
    drv._on_packet(FakePacket())
    drv._on_packet(FakePacket())
    assert offloaded.bypassed == 7.0 and kept.bypassed == 0.0
    # the watch path: the end of a watch (the connmark becomes ALLOW) counts only when the
    # kernel took the new mark
    for accepted in (True, False):
        flow = FakeFlow()
        flow.kernel_mark = 0x5
        marker = RecordingMarker()
        marker.set_mark = lambda f, action, ok=accepted: ok
        drv = QueueDriver(ScriptedEngine(Decision(Action.ALLOW, Verdict(), flow, offload=True)), watch=FakeWatch(),
                          marker=marker)
        drv.on_watched([(7.0, bytes([0x45, 0, 0, 40]) + bytes(36), 0, 0)])
        assert flow.bypassed == (7.0 if accepted else 0.0)
