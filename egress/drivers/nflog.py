"""The watch path: copies of the packets of allowed flows that the classifier still watches.

A flow that the detectors and the policy have decided to allow, but whose classifier has
not had its last look yet (it watches a flow up to its 512-packet checkpoint), does not
need an inline verdict for every packet: its packets may pass at once, as long as the
engine still sees them and can revoke the flow when a later checkpoint blocks it. The
daemon therefore gives such a flow the WATCH connmark; the chain then sends a copy of
each of its packets' headers to an NFLOG group and accepts the packet in the kernel
(see egress.drivers.iptables). This module reads that group: one raw nfnetlink_log
socket, no library, parsed with struct.

Why not keep such flows in the queue: each queued packet costs a verdict round trip,
during which the kernel re-injects and forwards the packet in the daemon's context
(~14 us of kernel time plus the Python callback); a copy of its first bytes costs the
daemon a receive and a parse. On a short connection with a model loaded, four of nine
packets were queued only so that the classifier could count them.

Guarantees:
- `parse_messages(data)` never raises on malformed input: a message it cannot read is
  counted (`malformed`) and skipped, the rest of the datagram is still read;
- `read(batch)` returns at most `batch` packets and never blocks;
- packets the kernel could not deliver (the socket buffer overflowed: ENOBUFS) are
  counted (`overrun`), never silently lost: the flows they belonged to miss packets,
  which only weakens their features (their inline decisions were made already);
- the timestamp is the kernel's when it is a wall-clock time, else the caller's clock.
"""
from __future__ import annotations

import errno
import os
import socket
import struct
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLMSG_ERROR = 0x2

# config attributes (linux/netfilter/nfnetlink_log.h)
NFULA_CFG_CMD = 1
NFULA_CFG_MODE = 2
NFULA_CFG_TIMEOUT = 4
NFULA_CFG_QTHRESH = 5
NFULNL_CFG_CMD_BIND = 1
NFULNL_CFG_CMD_UNBIND = 2
NFULNL_COPY_PACKET = 2

# packet attributes
NFULA_MARK = 2
NFULA_TIMESTAMP = 3
NFULA_IFINDEX_INDEV = 4
NFULA_PAYLOAD = 9

# The classifier reads lengths, flags and timing, which are all in the headers; the
# IP total length gives the size on the wire. 128 bytes hold IPv6 + TCP with options.
DEFAULT_COPY_RANGE = 128
# egress's first NFLOG group (`egress run --watch-group`); a worker of `--workers` uses
# this + its slot. Groups 0 and 1 are left to ulogd and friends.
DEFAULT_WATCH_GROUP = 5700

_NLMSG = struct.Struct("=IHHII")
_NFA = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_TIMESTAMP = struct.Struct("!QQ")


def _attr(attr_type: int, value: bytes) -> bytes:
    body = _NFA.pack(4 + len(value), attr_type) + value
    return body + b"\0" * (-len(body) % 4)


def config_message(group: int, attrs: bytes, seq: int, family: int = socket.AF_UNSPEC) -> bytes:
    """An NFULNL_MSG_CONFIG request for one NFLOG group."""
    body = struct.pack("=BBH", family, 0, socket.htons(group)) + attrs
    return _NLMSG.pack(16 + len(body), (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG,
                       NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body


def parse_messages(data: bytes, counters: dict | None = None) -> list[tuple[float, bytes, int, int]]:
    """Packets in one netlink datagram: (kernel timestamp or 0.0, IP bytes, input
    ifindex or 0, mark). Messages that are not packets are skipped; broken ones counted."""
    out = []
    offset, end = 0, len(data)
    while end - offset >= 16:
        length, msg_type, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
        if length < 16 or offset + length > end:
            _count(counters, "malformed")
            break
        if msg_type == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET:
            packet = _parse_packet(data, offset + 20, offset + length)
            if packet is None:
                _count(counters, "malformed")
            else:
                out.append(packet)
        offset += (length + 3) & ~3
    return out


def _parse_packet(data: bytes, pos: int, end: int):
    ts, payload, indev, mark = 0.0, None, 0, 0
    while end - pos >= 4:
        attr_len, attr_type = _NFA.unpack_from(data, pos)
        if attr_len < 4 or pos + attr_len > end:
            return None
        attr_type &= 0x7FFF          # NLA_F_NESTED / NLA_F_NET_BYTEORDER
        value_at = pos + 4
        if attr_type == NFULA_PAYLOAD:
            payload = data[value_at:pos + attr_len]
        elif attr_type == NFULA_TIMESTAMP and attr_len >= 20:
            sec, usec = _TIMESTAMP.unpack_from(data, value_at)
            ts = sec + usec / 1e6
        elif attr_type == NFULA_IFINDEX_INDEV and attr_len >= 8:
            (indev,) = _BE32.unpack_from(data, value_at)
        elif attr_type == NFULA_MARK and attr_len >= 8:
            (mark,) = _BE32.unpack_from(data, value_at)
        pos += (attr_len + 3) & ~3
    if payload is None:
        return None
    return ts, payload, indev, mark


def _count(counters: dict | None, name: str) -> None:
    if counters is not None:
        counters[name] = counters.get(name, 0) + 1


class NflogReader:
    """One bound NFLOG group in the current network namespace."""

    def __init__(self, group: int, copy_range: int = DEFAULT_COPY_RANGE, rcvbuf: int = 8 << 20,
                 clock=time.time):
        self.group = group
        self.copy_range = copy_range
        self.rcvbuf = rcvbuf
        self.clock = clock
        self.sock: socket.socket | None = None
        self.counters = {"packets": 0, "malformed": 0, "overrun": 0}
        self._seq = 0

    def open(self) -> None:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, self.rcvbuf)     # SO_RCVBUFFORCE (root)
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.bind((0, 0))
            self.sock = sock
            self._configure(_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])))
            mode = struct.pack("!IBB", self.copy_range, NFULNL_COPY_PACKET, 0)
            self._configure(_attr(NFULA_CFG_MODE, mode)
                            + _attr(NFULA_CFG_QTHRESH, _BE32.pack(1))      # deliver each packet at once
                            + _attr(NFULA_CFG_TIMEOUT, _BE32.pack(0)))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            self.sock = None
            raise

    def _configure(self, attrs: bytes, timeout: float = 1.0) -> None:
        """Send one config request and wait for its ACK; OSError when the kernel refuses."""
        self._seq += 1
        seq = self._seq
        self.sock.sendto(config_message(self.group, attrs, seq), (0, 0))
        self.sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.sock.recv(65536)
            offset = 0
            while len(data) - offset >= 16:
                length, msg_type, _flags, msg_seq, _pid = _NLMSG.unpack_from(data, offset)
                if msg_type == NLMSG_ERROR and msg_seq == seq:
                    (error,) = struct.unpack_from("=i", data, offset + 16)
                    if error:
                        raise OSError(-error, "NFLOG group %d config: %s" % (self.group, os.strerror(-error)))
                    return
                offset += max(16, (length + 3) & ~3)
        raise OSError(errno.ETIMEDOUT, "no answer to the NFLOG config of group %d" % self.group)

    def fileno(self) -> int:
        return self.sock.fileno()

    def read(self, batch: int = 512) -> list[tuple[float, bytes, int, int]]:
        """Up to `batch` packets that are waiting, without blocking."""
        out: list = []
        sock, counters, clock = self.sock, self.counters, self.clock
        while len(out) < batch:
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:      # the kernel dropped copies: count, go on
                    counters["overrun"] += 1
                    continue
                raise
            now = clock()           # each datagram is read as soon as it is queued (one packet each)
            for ts, payload, indev, mark in parse_messages(data, counters):
                if not now - 1.0 < ts <= now + 0.001:
                    ts = now
                out.append((ts, payload, indev, mark))
        counters["packets"] += len(out)
        return out

    def close(self) -> None:
        if self.sock is None:
            return
        try:
            self.sock.setblocking(True)
            self._configure(_attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_UNBIND])), timeout=0.2)
        except OSError:
            pass
        self.sock.close()
        self.sock = None
