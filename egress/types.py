"""The vocabulary shared by every stage: packets, flow keys, detections, verdicts.

No logic lives here, only small value types, so that every stage can import them
without importing each other. Guarantees:

- `Packet` is what the decoder produces; its fields are plain ints/bytes so that the
  hot path never touches scapy or string formatting. Addresses stay packed bytes
  (4 or 16 long) until something prints them (`ip_text`).
- `Detection` and `Verdict` are immutable; a `Decision` is what the engine returns
  for one packet, and the drivers turn it into a kernel verdict or a log line.
"""
from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from typing import Any, Mapping

# IP protocol numbers we name; everything else is reported by number.
PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

PROTO_NAMES = {PROTO_ICMP: "ICMP", PROTO_TCP: "TCP", PROTO_UDP: "UDP", PROTO_ICMPV6: "IPv6-ICMP",
               2: "IGMP", 47: "GRE", 50: "ESP", 51: "AH", 132: "SCTP"}

# TCP flag bits.
FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80

# Packet direction relative to the flow's initiator (the "client").
TO_SERVER = 0
TO_CLIENT = 1


def proto_name(proto: int) -> str:
    return PROTO_NAMES.get(proto) or str(proto)


def ip_text(addr: bytes) -> str:
    """Packed IPv4/IPv6 address -> its usual text form ('' for anything else).

    Remembered per bytes address (a gateway's flows share few addresses; IPv6 text is
    costly): the same text as ip_text_reference."""
    if type(addr) is not bytes:
        return ip_text_reference(addr)
    text = _IP_TEXTS.get(addr)
    if text is None:
        text = ip_text_reference(addr)
        if len(_IP_TEXTS) >= 65536:
            _IP_TEXTS.clear()
        _IP_TEXTS[addr] = text
    return text


_IP_TEXTS: dict[bytes, str] = {}


def ip_text_reference(addr: bytes) -> str:
    """The definition of ip_text."""
    if len(addr) == 4:
        return "%d.%d.%d.%d" % (addr[0], addr[1], addr[2], addr[3])
    if len(addr) == 16:
        return str(ipaddress.IPv6Address(addr))
    return ""


class RawPacket:
    """One captured or queued packet before decoding.

    `linktype` uses the pcap LINKTYPE numbers (1 Ethernet, 101 raw IP, 113 Linux
    cooked v1, 276 Linux cooked v2, 228/229 raw IPv4/IPv6). NFQUEUE delivers raw IP.
    `iface` is the interface the packet came in on when the source knows it (the
    live queue does, a capture file does not): it attributes a flow to a sandbox
    declared by interface.
    """
    __slots__ = ("ts", "data", "linktype", "wire_len", "iface")

    def __init__(self, ts: float, data: bytes, linktype: int = 101, wire_len: int | None = None,
                 iface: str | None = None):
        self.ts = ts
        self.data = data
        self.linktype = linktype
        self.wire_len = len(data) if wire_len is None else wire_len
        self.iface = iface


class Packet:
    """A decoded IP packet. Built only by `egress.decode`.

    `payload` is the transport payload as captured (may be shorter than the wire
    length when the capture or the queue copy range cut it: see `truncated`).
    `anomalies` is a tuple of short names ("ipv4-bad-ihl", "tcp-truncated", ...);
    a packet with `proto == -1` could not be decoded to IP at all.
    """
    __slots__ = ("ts", "version", "src", "dst", "proto", "sport", "dport", "flags", "seq", "ack",
                 "window", "payload", "ip_len", "ttl", "fragment", "truncated", "anomalies",
                 "icmp_type", "icmp_code", "tcp_options")

    def __init__(self, ts: float, version: int, src: bytes, dst: bytes, proto: int,
                 sport: int = 0, dport: int = 0, flags: int = 0, seq: int = 0, ack: int = 0,
                 window: int = 0, payload: bytes = b"", ip_len: int = 0, ttl: int = 0,
                 fragment: bool = False, truncated: bool = False, anomalies: tuple = (),
                 icmp_type: int = -1, icmp_code: int = -1, tcp_options: bytes = b""):
        self.ts = ts
        self.version = version
        self.src = src
        self.dst = dst
        self.proto = proto
        self.sport = sport
        self.dport = dport
        self.flags = flags
        self.seq = seq
        self.ack = ack
        self.window = window
        self.payload = payload
        self.ip_len = ip_len
        self.ttl = ttl
        self.fragment = fragment
        self.truncated = truncated
        self.anomalies = anomalies
        self.icmp_type = icmp_type
        self.icmp_code = icmp_code
        self.tcp_options = tcp_options

    def __repr__(self) -> str:
        return "Packet(%s %s:%d -> %s:%d len=%d flags=%#x%s)" % (
            proto_name(self.proto), ip_text(self.src), self.sport, ip_text(self.dst), self.dport,
            len(self.payload), self.flags, " anomalies=%s" % (self.anomalies,) if self.anomalies else "")


@dataclass(frozen=True, slots=True)
class Detection:
    """One finding of a detector (or of the policy) about a flow.

    `category` is one of CATEGORIES; `signature` a stable dotted name such as
    "stratum.v1.subscribe"; `evidence` small JSON-able facts (a method name, a
    banner) that explain the finding to a human.
    """
    category: str
    signature: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    confidence: float = 1.0

    def to_json(self) -> dict:
        out = {"category": self.category, "signature": self.signature}
        if self.confidence != 1.0:
            out["confidence"] = round(self.confidence, 3)
        out.update(self.evidence)
        return out


CATEGORIES = ("mining", "ssh", "reverse_tunnel", "reverse_shell", "tunnel", "scan", "metadata", "policy")


class Action(str, enum.Enum):
    ALLOW = "allow"
    DROP = "drop"
    REJECT = "reject"


class Mode(str, enum.Enum):
    ENFORCE = "enforce"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the policy decided for a flow, and why.

    `action` is what the policy wants; `mode` says whether it is enforced. In audit
    mode the kernel verdict is always accept, but the EVE output shows the action
    that enforce mode would have taken. `rule` names the rule that matched
    ("default" for the explicit default) and `reasons` are short human strings.
    `final` says the verdict will not change with more packets, so the live driver
    may hand the flow to the kernel fast path.
    """
    action: Action = Action.ALLOW
    mode: Mode = Mode.ENFORCE
    rule: str = "default"
    reasons: tuple[str, ...] = ()
    final: bool = False
    alert: bool = False

    @property
    def enforced_action(self) -> Action:
        """The action the kernel must apply: audit mode never blocks."""
        return self.action if self.mode is Mode.ENFORCE else Action.ALLOW

    def to_json(self) -> dict:
        return {"action": self.action.value, "mode": self.mode.value, "rule": self.rule,
                "reasons": list(self.reasons)}


PENDING = Verdict(rule="pending", reasons=("undecided",))


class Decision:
    """The engine's answer for one packet: the kernel action plus the flow it belongs to.

    `action` is what the driver applies to this packet (audit mode already folded
    in). `flow` is the flow object (None when the packet was not tracked, e.g. not
    IP); `verdict` is the flow's current verdict; `offload` says the flow is decided
    for good and may take the kernel fast path; `watch` says the flow is allowed and
    needs no more inline verdicts, but the engine must still see its packets (the
    classifier has checkpoints to come), so the kernel may pass them and send copies;
    `oneway` says the flow is still inspected, but on the client's side only (its
    server side is spent, egress.inspect.stage): of the server's packets, all but FIN,
    SYN and RST change nothing a verdict reads except the classifier's features, so the
    kernel may pass them (and send copies while the classifier watches).
    """
    __slots__ = ("action", "verdict", "flow", "offload", "revoked", "watch", "oneway")

    def __init__(self, action: Action, verdict: Verdict, flow: Any = None, offload: bool = False,
                 revoked: bool = False, watch: bool = False, oneway: bool = False):
        self.action = action
        self.verdict = verdict
        self.flow = flow
        self.offload = offload
        self.revoked = revoked
        self.watch = watch
        self.oneway = oneway

    def __repr__(self) -> str:
        return "Decision(%s, rule=%s, offload=%s%s%s)" % (self.action.value, self.verdict.rule, self.offload,
                                                         ", watch" if self.watch else "",
                                                         ", oneway" if self.oneway else "")
