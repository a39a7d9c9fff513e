"""The live driver: NFQUEUE packets -> Engine.process -> exactly one kernel verdict.

Per packet: RawPacket(ts = the queue's timestamp if sane, else time.time(); IP bytes;
linktype 101), `engine.process`, then one verdict:

- allow                    -> NF_ACCEPT
- drop                     -> NF_DROP
- reject                   -> mark REJECT_ONCE + NF_REPEAT: the packet re-enters the chain
                              and the kernel's REJECT target answers (TCP RST, or ICMP(v6)
                              port unreachable) with correct addresses and sequence numbers
- any action, offload      -> mark ALLOW|DROP|REJECT + NF_REPEAT: rule 1 of the chain saves
                              it as the connmark, so the rest of the flow never reaches us
- allow, watch             -> mark WATCH|slot + NF_REPEAT (with a watch reader): the rest of
                              the flow passes in the kernel and copies of its packets come
                              back on the NFLOG group (egress.drivers.nflog); the engine sees
                              them as before, and when it blocks the flow or is done with it,
                              the driver rewrites the connmark (DROP/REJECT, or ALLOW)
- allow, oneway            -> mark ONEWAY|slot (ONEWAY_WATCH|slot while the classifier
                              watches and there is a watch reader) + NF_REPEAT, once: the
                              server's packets pass in the kernel (copied for the watch),
                              the client's are still queued; a TCP flow whose client the
                              engine knows from the handshake only (conntrack's ORIGINAL)

Reject is done by the kernel rather than by crafting RST/ICMP on a raw socket: the kernel
gets sequence numbers, IPv6, checksums and ICMP rate limits right, and nothing here has
to guess which side to answer.

Guarantees:
- packet time is the queue's timestamp when it is a wall-clock time, else time.time()
  (forwarded TCP may carry a monotonic-clock EDT timestamp);
- exactly one verdict per packet: an engine error follows `exception_action` (drop or
  allow), is counted (`exceptions`) and never escapes the callback (an exception out
  of the callback would abort the library's receive loop);
- copy range <= 1500 bytes (the library's receive buffer is 4096 bytes: with a larger
  range and GSO, big packets never get a verdict and TCP stalls);
- the fail-open and GSO queue flags are set with a raw nfnetlink NFQNL_MSG_CONFIG
  message on the binding's socket, which NetfilterQueue does not expose;
- verdicts are written by us too (VerdictBatch), NFQNL_MSG_VERDICT messages on the
  binding's socket: NetfilterQueue makes one system call per verdict. Packets read
  back to back share one call (under load the daemon's system time per connection fell
  by a third to a half, see BENCHMARKS.md); no verdict waits for a packet that has not
  arrived yet.

GSO is off by default, deliberately: with it the kernel queues 64 KB super-packets that
the copy range cuts to 1500 bytes, so the engine sees streams full of holes, detectors
wait forever for bytes that never come, and flows never reach the fast path (measured:
bulk TCP at 38 % of the baseline). Without it the kernel segments first, every queued
packet is complete (MTU <= copy range), flows are decided after a handful of packets and
bulk TCP runs at the baseline's speed. `--gso` trades that for cheaper queueing.

Several queues: every binding is served by the same thread from one select() loop and
shares one engine. Threads would not add throughput (the GIL serialises the Python
callback); the rules pin each connection to one queue (a connmark slot), so scaling out
means one process per queue, each with its own engine (`--workers`, see daemon.py).
"""
from __future__ import annotations

import errno
import logging
import os
import select
import socket
import struct
import time

from egress.drivers.iptables import (MARK_ALLOW, MARK_DROP, MARK_MASK, MARK_ONEWAY, MARK_ONEWAY_WATCH,
                                     MARK_REJECT, MARK_REJECT_ONCE, OWNED_BITS, oneway_mark, watch_mark)
from egress.types import Action, RawPacket

log = logging.getLogger("egress.daemon.watch")
_perf_counter = time.perf_counter

MAX_COPY_RANGE = 1500

# nfnetlink constants (linux/netfilter/nfnetlink.h, nfnetlink_queue.h)
NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_VERDICT_HDR = 2
NFQA_MARK = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1 << 0
NFQA_CFG_F_GSO = 1 << 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2
NF_DROP, NF_ACCEPT, NF_REPEAT = 0, 1, 4

_UNKNOWN = object()
_OFFLOAD_MARKS = {Action.ALLOW: MARK_ALLOW, Action.DROP: MARK_DROP, Action.REJECT: MARK_REJECT}
# Plain globals for the per-packet path (an enum member is a slower class attribute lookup).
_ALLOW = Action.ALLOW
_DROP = Action.DROP


def queue_message(msg_type: int, queue_num: int, attrs: bytes, flags: int = NLM_F_REQUEST, seq: int = 0) -> bytes:
    """An nfnetlink message of the queue subsystem: netlink header, nfgenmsg (the queue
    number, big-endian), then the attributes as given."""
    nfgen = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue_num))
    header = struct.pack("=IHHII", 16 + len(nfgen) + len(attrs), (NFNL_SUBSYS_QUEUE << 8) | msg_type, flags, seq, 0)
    return header + nfgen + attrs


def config_flags_message(queue_num: int, flags: int, mask: int, seq: int = 1) -> bytes:
    """An NFQNL_MSG_CONFIG request setting `flags` (under `mask`) on one queue."""
    attrs = b""
    for attr_type, value in ((NFQA_CFG_MASK, mask), (NFQA_CFG_FLAGS, flags)):
        attrs += struct.pack("=HH", 8, attr_type) + struct.pack("!I", value)
    return queue_message(NFQNL_MSG_CONFIG, queue_num, attrs, NLM_F_REQUEST | NLM_F_ACK, seq)


def set_queue_flags(fd: int, queue_num: int, fail_open: bool, gso: bool, timeout: float = 1.0) -> None:
    """Send the config message on the binding's netlink socket and wait for its ACK.

    Done right after bind and before any rule sends packets to the queue, so the only
    message waiting on the socket is our ACK. Raises OSError when the kernel refuses."""
    flags = (NFQA_CFG_F_FAIL_OPEN if fail_open else 0) | (NFQA_CFG_F_GSO if gso else 0)
    mask = NFQA_CFG_F_FAIL_OPEN | NFQA_CFG_F_GSO
    seq = int(time.monotonic() * 1000) & 0x7FFFFFFF
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(fd))
    try:
        sock.sendto(config_flags_message(queue_num, flags, mask, seq), (0, 0))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            data = sock.recv(65536)
            while len(data) >= 16:
                length, msg_type, _flags, msg_seq, _pid = struct.unpack_from("=IHHII", data)
                if msg_type == NLMSG_ERROR and msg_seq == seq:
                    (error,) = struct.unpack_from("=i", data, 16)
                    if error:
                        raise OSError(-error, "NFQNL_MSG_CONFIG flags: %s" % os.strerror(-error))
                    return
                data = data[(length + 3) & ~3:]
        raise OSError(errno.ETIMEDOUT, "no answer to NFQNL_MSG_CONFIG on queue %d" % queue_num)
    finally:
        sock.close()


def wire_length(data: bytes) -> int:
    """The IP packet's length on the wire from its header (the queue copies a prefix)."""
    if len(data) >= 4 and data[0] >> 4 == 4:
        return max(len(data), (data[2] << 8) | data[3])
    if len(data) >= 6 and data[0] >> 4 == 6:
        return max(len(data), 40 + ((data[4] << 8) | data[5]))
    return len(data)


class QueueDriver:
    """Binds queues, feeds the engine, gives verdicts. Single-threaded; see module doc."""

    def __init__(self, engine, queues=(0,), *, copy_range: int = MAX_COPY_RANGE, max_len: int = 4096,
                 fail_open: bool = False, gso: bool = False, exception_action: str = "drop",
                 observer=None, clock=time.time, fast_path: bool = True, busy_poll: float = 0.0,
                 watch=None, watch_slot: int = 0, marker=None, verdict_batch: int = 8):
        if exception_action not in ("drop", "allow"):
            raise ValueError("exception_action must be drop or allow")
        self.engine = engine
        self.queues = tuple(queues)
        self.copy_range = min(int(copy_range), MAX_COPY_RANGE)
        self.max_len = max_len
        self.fail_open = fail_open
        self.gso = gso
        self.exception_action = Action.DROP if exception_action == "drop" else Action.ALLOW
        self.observer = observer            # callable(decision, action, seconds) for metrics/revocation
        self.fast_path = fast_path          # False: never connmark a flow (every packet is queued)
        self.busy_poll = max(0.0, float(busy_poll))   # seconds of polling without sleep after a packet
        self.clock = clock
        # The watch path: an NflogReader bound to this worker's group, and the conntrack
        # marker that ends a watch (ALLOW) or revokes the flow (DROP/REJECT).
        self.watch = watch if fast_path else None
        self.watch_mark = watch_mark(watch_slot)
        self.oneway_marks = (oneway_mark(watch_slot, False), oneway_mark(watch_slot, True))
        self.marker = marker
        self.verdict_batch = max(1, int(verdict_batch))
        self.bindings: list = []
        self._readers: list[QueueReader] = []
        # Where _on_packet puts verdicts: the VerdictBatch of the queue being read.
        self._out: VerdictBatch | None = None
        self._closed_sends = 0              # verdict_sends of readers closed already
        self.counters = {"packets": 0, "exceptions": 0, "verdict_errors": 0, "offloaded": 0,
                         "accept": 0, "drop": 0, "reject": 0, "watched": 0, "watch_packets": 0,
                         "watch_exceptions": 0, "watch_ended": 0, "watch_revoked": 0,
                         "watch_requeued": 0, "oneway": 0, "oneway_unwatched": 0}
        self._ifnames: dict[int, str | None] = {}   # ifindex -> name (interfaces rarely change)

    # -- binding ------------------------------------------------------------------

    def open(self) -> None:
        from netfilterqueue import COPY_PACKET, NetfilterQueue
        try:
            for num in self.queues:
                nfq = NetfilterQueue()
                self.bindings.append(nfq)
                nfq.bind(num, self._on_packet, max_len=self.max_len, mode=COPY_PACKET, range=self.copy_range)
                set_queue_flags(nfq.get_fd(), num, self.fail_open, self.gso)
                self._readers.append(QueueReader(nfq.get_fd(), num, self.verdict_batch, self._verdict_refused))
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.watch is not None:
            self.watch.close()
        for nfq in self.bindings:
            try:
                nfq.unbind()
            except Exception:
                pass
        self.bindings.clear()
        for reader in self._readers:
            self._closed_sends += reader.verdicts.sends
            reader.close()
        self._readers.clear()

    def stats(self) -> dict[str, int]:
        """The counters, with `verdict_sends`: the system calls that sent verdicts."""
        out = dict(self.counters)
        out["verdict_sends"] = self._closed_sends + sum(reader.verdicts.sends for reader in self._readers)
        return out

    def fds(self) -> list[int]:
        fds = [nfq.get_fd() for nfq in self.bindings]
        if self.watch is not None:
            fds.append(self.watch.fileno())
        return fds

    def poll(self, timeout: float, batch: int = 512) -> int:
        """Wait up to `timeout` seconds for packets and handle at most `batch` per queue,
        so that a flood never keeps the caller from its timers and signals.
        Returns the number of packets handled.

        With `busy_poll` > 0, after handling packets keep reading the queues without
        sleeping until `busy_poll` seconds pass with no packet (yielding the CPU between
        tries): the next packet of a conversation in flight is then taken without the
        wake-up of a sleeping process, which on a small VM costs more than the engine
        (see BENCHMARKS.md). Still bounded by `batch` packets per queue and call."""
        before = self.counters["packets"]
        try:
            ready, _, _ = select.select(self.fds(), [], [], timeout)
        except InterruptedError:
            return 0
        for nfq, reader in zip(self.bindings, self._readers):
            if reader.fd in ready:
                reader.start(batch)
                self._read(nfq, reader)
        # After the queues: a queued packet is older than any copy of a later one.
        if self.watch is not None and self.watch.sock is not None and self.watch.fileno() in ready:
            self.on_watched(self.watch.read(batch))
        handled = self.counters["packets"] - before
        if handled and self.busy_poll > 0:
            handled += self._spin(batch - handled)
        return handled

    def _spin(self, budget: int) -> int:
        """Non-blocking reads until `busy_poll` seconds without a packet or `budget` packets."""
        counters, clock, pairs = self.counters, time.perf_counter, list(zip(self.bindings, self._readers))
        start = counters["packets"]
        idle_until = clock() + self.busy_poll
        while clock() < idle_until and counters["packets"] - start < budget:
            seen = counters["packets"]
            for nfq, reader in pairs:
                reader.start(budget)
                self._read(nfq, reader)
            if self.watch is not None:
                self.on_watched(self.watch.read(budget))
            if counters["packets"] != seen:
                idle_until = clock() + self.busy_poll
            else:
                os.sched_yield()     # let a runnable client or server have this CPU
        return counters["packets"] - start

    def _read(self, nfq, reader: QueueReader) -> None:
        """One bounded read of a queue; its verdicts are all sent when it returns."""
        self._out = reader.verdicts
        try:
            nfq.run_socket(reader)
        finally:
            reader.verdicts.flush()
            self._out = None

    def _verdict_refused(self, exc: OSError) -> None:
        self.counters["verdict_errors"] += 1
        count = self.counters["verdict_errors"]
        if count <= 10 or count % 1000 == 0:
            log.error("egress: the kernel refused a verdict (#%d): %s", count, exc)

    # -- the per-packet path ----------------------------------------------------------

    def _ifname(self, index: int) -> str | None:
        """The input interface's name (policy sandboxes may be declared by interface)."""
        try:
            return self._ifnames[index]
        except KeyError:
            pass
        try:
            name = socket.if_indextoname(index) if index else None
        except OSError:
            name = None
        if len(self._ifnames) < 4096:
            self._ifnames[index] = name
        return name

    def _on_packet(self, pkt) -> None:
        started = _perf_counter()
        self.counters["packets"] += 1
        decision = None
        try:
            data = pkt.get_payload()
            # The queue's timestamp is skb->tstamp, which TCP's pacing (EDT) fills with
            # CLOCK_MONOTONIC on locally sent packets: trust it only near the wall clock.
            now = self.clock()
            ts = pkt.get_timestamp()
            if not now - 1.0 < ts <= now + 0.001:
                ts = now
            iface = self._ifnames.get(pkt.indev, _UNKNOWN)
            if iface is _UNKNOWN:
                iface = self._ifname(pkt.indev)
            # wire_length(data), its IPv4 case inline (one call less on every packet)
            size = len(data)
            if size >= 4 and data[0] >> 4 == 4:
                wire = (data[2] << 8) | data[3]
                if wire < size:
                    wire = size
            else:
                wire = wire_length(data)
            decision = self.engine.process(RawPacket(ts, data, 101, wire, iface))
            action = decision.action
        except Exception:
            self.counters["exceptions"] += 1
            action = self.exception_action
        out = self._out
        try:
            if out is None:     # called outside a read (tests, in-process benchmarks)
                self._verdict(pkt, decision, action, _PacketVerdicts(pkt))
            elif (decision is not None and action is _ALLOW and not decision.offload and not decision.watch
                  and not decision.oneway):
                # The common verdict, as _verdict gives it (its last branch), without the call.
                self.counters["accept"] += 1
                out.add(pkt.id, NF_ACCEPT)
            else:
                self._verdict(pkt, decision, action, out)
        except Exception:
            self.counters["verdict_errors"] += 1
            try:
                pkt.drop() if self.exception_action is _DROP else pkt.accept()
            except Exception:
                pass    # the verdict was given already; nothing more can be done for it
        if self.observer is not None:
            try:
                self.observer(decision, action, _perf_counter() - started)
            except Exception:
                self.counters["exceptions"] += 1

    def _verdict(self, pkt, decision, action: Action, out: VerdictBatch) -> None:
        """The verdict and, where the kernel must act on it, the packet mark to set."""
        counters = self.counters
        if decision is not None and decision.offload and self.fast_path:
            counters["offloaded"] += 1
            counters[_COUNTER[action]] += 1
            mark = _OFFLOAD_MARKS[action]
            flow = decision.flow
            if flow is not None:
                flow.kernel_mark = mark
                flow.bypassed = flow.last       # the rest of it is the kernel's: not counted
            out.add_marked(pkt.id, NF_REPEAT, (pkt.get_mark() & ~OWNED_BITS) | mark)
        elif (decision is not None and decision.watch and self.watch is not None and action is _ALLOW
              and decision.flow is not None):
            counters["watched"] += 1
            counters["accept"] += 1
            decision.flow.kernel_mark = self.watch_mark
            out.add_marked(pkt.id, NF_REPEAT, (pkt.get_mark() & ~OWNED_BITS) | self.watch_mark)
        elif action is _ALLOW and decision is not None and decision.oneway and self._oneway_mark(decision.flow):
            counters["oneway"] += 1
            counters["accept"] += 1
            out.add_marked(pkt.id, NF_REPEAT, (pkt.get_mark() & ~OWNED_BITS) | decision.flow.kernel_mark)
        elif action is _ALLOW:
            counters["accept"] += 1
            out.add(pkt.id, NF_ACCEPT)
        elif action is _DROP:
            counters["drop"] += 1
            out.add(pkt.id, NF_DROP)
        else:
            counters["reject"] += 1
            out.add_marked(pkt.id, NF_REPEAT, (pkt.get_mark() & ~OWNED_BITS) | MARK_REJECT_ONCE)

    def _oneway_mark(self, flow) -> bool:
        """Whether a oneway flow's connmark must change now (set as flow.kernel_mark):
        to ONEWAY_WATCH while the classifier watches and copies can come back, else to
        ONEWAY. Only a TCP flow whose client the engine knows from the handshake: the
        rules pass conntrack's REPLY direction, which must be the server's."""
        if not self.fast_path or flow is None or flow.initiator not in _HANDSHAKE:
            return False
        watched = self.watch is not None and flow.features is not None
        mark = self.oneway_marks[watched]
        if flow.kernel_mark == mark:
            return False
        flow.kernel_mark = mark
        if not watched and not flow.bypassed_toclient:
            flow.bypassed_toclient = flow.last     # the server's side is the kernel's: not counted
        return True

    # -- the watch path -------------------------------------------------------------------

    def on_watched(self, packets) -> None:
        """Copies of packets the kernel has passed already (WATCH flows): the engine sees
        them like queued ones; what it decides is applied to the connection's connmark.
        A block (a classifier checkpoint, the exception policy) revokes the flow; the
        end of the classifier's watch hands the flow to the ALLOW fast path; a connection
        the engine did not know goes back to the queue."""
        counters, process = self.counters, self.engine.process
        for ts, data, indev, _mark in packets:
            counters["watch_packets"] += 1
            try:
                iface = self._ifnames.get(indev, _UNKNOWN)
                if iface is _UNKNOWN:
                    iface = self._ifname(indev)
                decision = process(RawPacket(ts, data, 101, wire_length(data), iface))
            except Exception:
                counters["watch_exceptions"] += 1
                continue
            flow = decision.flow
            if flow is None:
                continue
            action = decision.action
            if action is not Action.ALLOW:
                mark = _OFFLOAD_MARKS[action]
            elif flow.kernel_mark == 0:
                # A copy of a connection this engine never gave a verdict: it forgot the
                # flow (idle timeout, eviction) or the daemon restarted. Copies carry only
                # the first bytes of each packet: queue the connection again instead.
                flow.kernel_mark = _REQUEUED
                counters["watch_requeued"] += 1
                self.engine.reinspect(flow)
                if self.marker is not None:
                    self.marker.requeue(flow)
                continue
            elif decision.offload and flow.kernel_mark != _REQUEUED:
                mark = MARK_ALLOW
            elif decision.oneway and flow.features is None and flow.kernel_mark & MARK_MASK == MARK_ONEWAY_WATCH:
                # the classifier is done: the server's packets pass without copies from now
                flow.kernel_mark = (flow.kernel_mark & ~MARK_MASK) | MARK_ONEWAY
                counters["oneway_unwatched"] += 1
                if self.marker is not None and self.marker.unwatch(flow):
                    flow.bypassed_toclient = flow.last
                continue
            else:
                continue
            if flow.kernel_mark == mark:
                continue
            flow.kernel_mark = mark
            ok = self.marker is not None and self.marker.set_mark(flow, action)
            if ok:
                flow.bypassed = flow.last       # no more copies: the rest is not counted
            if mark == MARK_ALLOW:
                counters["watch_ended"] += 1
            else:
                counters["watch_revoked"] += 1
                log.info("egress: revoked watched flow %s (%s, rule %s)%s", flow, action.value,
                         decision.verdict.rule, "" if ok else ": the connmark could not be rewritten")


class _PacketVerdicts:
    """A VerdictBatch stand-in that gives one packet's verdict through NetfilterQueue's Packet."""

    def __init__(self, pkt):
        self.pkt = pkt

    def add(self, _packet_id: int, verdict: int) -> None:
        (self.pkt.accept if verdict == NF_ACCEPT else self.pkt.drop)()

    def add_marked(self, _packet_id: int, verdict: int, mark: int) -> None:
        self.pkt.set_mark(mark)
        self.pkt.repeat()


_COUNTER = {Action.ALLOW: "accept", Action.DROP: "drop", Action.REJECT: "reject"}
_REQUEUED = 1          # Flow.kernel_mark of a connection sent back to the queue (not a mark value)
_HANDSHAKE = ("syn", "synack")    # Flow.initiator: the client is conntrack's ORIGINAL side


def verdict_message(queue_num: int, packet_id: int, verdict: int, mark: int | None = None) -> bytes:
    """One NFQNL_MSG_VERDICT message, as libnetfilter_queue's nfq_set_verdict2 writes it."""
    attrs = struct.pack("=HH", 12, NFQA_VERDICT_HDR) + struct.pack("!II", verdict, packet_id)
    if mark is not None:
        attrs += struct.pack("=HH", 8, NFQA_MARK) + struct.pack("!I", mark & 0xFFFFFFFF)
    return queue_message(NFQNL_MSG_VERDICT, queue_num, attrs)


_ID = struct.Struct("!II")                  # verdict, packet id (NFQA_VERDICT_HDR)
_ID_AND_MARK = struct.Struct("!II4sI")      # verdict, packet id, NFQA_MARK's attribute header, mark


class VerdictBatch:
    """The verdicts of one queue, written to its netlink socket together.

    The kernel takes any number of verdict messages in one sendmsg() (nfnetlink walks
    every message of the buffer), so packets that are handled back to back cost one
    system call between them instead of one each, and their re-injection is done in
    one go. Guarantees:
    - a verdict waits in the batch only while the driver is still reading packets that
      had already arrived: `QueueReader` sends the first verdict of a read at once, the
      others before it would block, after at most `limit` verdicts, and at the end of
      every read;
    - verdicts reach the kernel in the order they were given;
    - a failed send is retried one verdict at a time; a verdict the kernel still refuses
      is counted (`on_error`), never silently dropped from the count."""

    def __init__(self, sock, queue_num: int, limit: int = 8, on_error=None):
        self.sock = sock
        self.limit = max(1, int(limit))
        self.on_error = on_error
        plain = verdict_message(queue_num, 0, 0)
        marked = verdict_message(queue_num, 0, 0, 0)
        self._plain_head = plain[:-8]           # everything before verdict and id
        self._marked_head = marked[:-16]
        self._mark_attr = marked[-8:-4]
        self.pending: list[bytes] = []
        self.sends = 0                          # system calls made (verdicts per call = given / sends)

    def add(self, packet_id: int, verdict: int) -> None:
        self.pending.append(self._plain_head + _ID.pack(verdict, packet_id))

    def add_marked(self, packet_id: int, verdict: int, mark: int) -> None:
        self.pending.append(self._marked_head + _ID_AND_MARK.pack(verdict, packet_id, self._mark_attr, mark))

    def flush(self) -> None:
        pending = self.pending
        if not pending:
            return
        self.pending = []
        self.sends += 1
        try:
            self.sock.send(pending[0] if len(pending) == 1 else b"".join(pending))
            return
        except OSError:
            pass
        for message in pending:         # one by one: the refused verdicts are counted
            try:
                self.sock.send(message)
            except OSError as exc:
                if self.on_error is not None:
                    self.on_error(exc)


class QueueReader:
    """What NetfilterQueue.run_socket() reads from: the binding's netlink socket, made
    non-blocking, that reports "would block" after `left` messages. run_socket() stops
    on EAGAIN, so one call handles a bounded batch (run() would loop for as long as a
    flood lasts).

    It also owns the queue's VerdictBatch and sends it before reading on: the first
    packet of a read is answered before the next message is read (as NetfilterQueue
    answers every packet, so a packet that comes alone waits for no extra system
    call); the ones after it once `limit` verdicts are in hand, or when the queue has
    nothing more (EAGAIN), or when the read's budget is spent."""

    def __init__(self, fd: int, queue_num: int = 0, limit: int = 8, on_error=None):
        self.fd = fd
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER, fileno=os.dup(fd))
        self.sock.setblocking(False)
        self.verdicts = VerdictBatch(self.sock, queue_num, limit, on_error)
        self.left = 0
        self.first = False          # the read's first verdict is still to be sent alone

    def start(self, budget: int) -> None:
        """A new read of at most `budget` messages."""
        self.left = budget
        self.first = True

    def recv(self, size: int) -> bytes:
        verdicts = self.verdicts
        if self.left <= 0:
            verdicts.flush()
            raise BlockingIOError(errno.EAGAIN, "batch done")
        pending = verdicts.pending
        if pending and (self.first or len(pending) >= verdicts.limit):
            verdicts.flush()
            self.first = False
        self.left -= 1
        try:
            return self.sock.recv(size)
        except BlockingIOError:
            verdicts.flush()
            raise

    def close(self) -> None:
        self.sock.close()


def read_queue_stats(path: str = "/proc/net/netfilter/nfnetlink_queue") -> dict[int, dict]:
    """Kernel per-queue counters (this network namespace): queue_total (waiting now),
    queue_dropped (queue full), user_dropped (netlink buffer full), id_sequence."""
    stats = {}
    try:
        with open(path) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 8:
                    num = int(parts[0])
                    stats[num] = {"portid": int(parts[1]), "queue_total": int(parts[2]),
                                  "copy_mode": int(parts[3]), "copy_range": int(parts[4]),
                                  "queue_dropped": int(parts[5]), "user_dropped": int(parts[6]),
                                  "id_sequence": int(parts[7])}
    except OSError:
        pass
    return stats
