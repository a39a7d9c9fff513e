"""One bidirectional flow: who opened it, what each side sent, what was learned.

Guarantees:
- `client_*` is the initiator (the side that sent the SYN, else see
  `egress.flow.orientation`); direction 0 is client -> server ("toserver").
- Counters are plain int slots, so a tracked flow costs a few hundred bytes;
  anything larger (reassembly buffers, the detector queue, feature state) is
  allocated lazily and released when inspection is done.
- Only the engine mutates a Flow; detectors, features, classifier and policy read it.
"""
from __future__ import annotations

from typing import Any

from egress.types import PENDING, PROTO_TCP, Verdict, ip_text, proto_name

# TCP life cycle as seen from the packets (Suricata's names for the EVE "state").
STATE_NEW = "new"
STATE_ESTABLISHED = "established"
STATE_CLOSED = "closed"

# Why a flow ended (EVE flow.reason, as Suricata: timeout, forced, shutdown).
END_TIMEOUT = "timeout"
END_CLOSED = "closed"
END_EVICTED = "forced"
END_SHUTDOWN = "shutdown"
END_REUSED = "reused"        # a new connection on the same 5-tuple (its close went unseen)


class Flow:
    __slots__ = (
        # identity
        "flow_id", "key", "proto", "version", "client_ip", "client_port", "server_ip", "server_port",
        "initiator", "sandbox", "in_iface",
        # counters and timing
        "start", "last", "pkts_toserver", "pkts_toclient", "bytes_toserver", "bytes_toclient",
        "payload_toserver", "payload_toclient", "first_payload_dir", "sizes",
        # TCP state
        "state", "syn", "isn", "synack", "fin_toserver", "fin_toclient", "fin_seq", "rst", "end_reason",
        # inspection
        "streams", "datagrams", "inspecting", "payload_packets", "payload_packets_toclient", "oneway",
        "app_proto", "facts", "detections", "anomalies",
        # classification, policy
        "features", "ml", "verdict", "verdict_dirty", "packets_allowed", "alerted",
        # enforcement (the live driver's bookkeeping)
        "kernel_mark", "bypassed", "bypassed_toclient",
    )

    def __init__(self, flow_id: int, key: tuple, proto: int, version: int, client_ip: bytes,
                 client_port: int, server_ip: bytes, server_port: int, ts: float, initiator: str):
        self.flow_id = flow_id
        self.key = key
        self.proto = proto
        self.version = version
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.initiator = initiator          # how the client was chosen: "syn", "synack", "port", "first"
        self.sandbox: dict | None = None    # attribution (sandbox id, episode) when known
        self.in_iface: str | None = None    # interface of the flow's first packet (live only)
        self.start = ts
        self.last = ts
        self.pkts_toserver = 0
        self.pkts_toclient = 0
        self.bytes_toserver = 0
        self.bytes_toclient = 0
        self.payload_toserver = 0
        self.payload_toclient = 0
        self.first_payload_dir = -1         # who spoke first: 0 client, 1 server, -1 nobody yet
        self.sizes: list | None = None      # first payload packets: (ts, direction, length)
        self.state = STATE_NEW
        self.syn = False
        self.isn = -1                       # the client's initial sequence number; -1: no SYN seen
        self.synack = False
        self.fin_toserver = False
        self.fin_toclient = False
        self.fin_seq: list | None = None    # [toserver, toclient]: each direction's first FIN's sequence number
        self.rst = False
        self.end_reason = ""
        self.streams: list | None = None    # [Reassembler toserver, Reassembler toclient] while inspecting
        self.datagrams: list | None = None  # first datagrams of a UDP flow while inspecting
        self.inspecting: list | None = None  # detectors still undecided for this flow
        self.payload_packets = 0            # the client's payload packets the detectors have been fed
        self.payload_packets_toclient = 0   # the server's
        self.oneway = False                 # the server's side is spent: only the client's is inspected
        self.app_proto: str | None = None
        self.facts: dict[str, Any] = {}
        self.detections: list = []
        self.anomalies: dict[str, int] | None = None
        self.features: Any = None           # egress.features accumulator, when a model is loaded
        self.ml: dict | None = None         # last classifier result: {"model", "class", "scores"}
        self.verdict: Verdict = PENDING
        self.verdict_dirty = True           # something the policy reads changed since it last decided
        self.packets_allowed = 0            # packets let through so far (to know a block is a revocation)
        self.alerted: set | None = None     # signatures already written as alert events
        self.kernel_mark = 0                # egress mark bits the live driver gave the connection (0: none)
        self.bypassed = 0.0                 # packet time from which the kernel passed or dropped the rest of
                                            # the connection without egress seeing it (live fast path); 0: never
        self.bypassed_toclient = 0.0        # the same for the server's side alone (live ONEWAY, no copies)

    # -- small read-only helpers for the later stages --------------------------------

    @property
    def proto_name(self) -> str:
        return proto_name(self.proto)

    @property
    def src_ip(self) -> str:
        return ip_text(self.client_ip)

    @property
    def dest_ip(self) -> str:
        return ip_text(self.server_ip)

    @property
    def duration(self) -> float:
        return self.last - self.start

    @property
    def is_tcp(self) -> bool:
        return self.proto == PROTO_TCP

    def categories(self) -> set[str]:
        return {d.category for d in self.detections}

    def add_anomaly(self, name: str) -> None:
        if self.anomalies is None:
            self.anomalies = {}
        self.anomalies[name] = self.anomalies.get(name, 0) + 1

    def __repr__(self) -> str:
        return "Flow(%d %s %s:%d -> %s:%d %s)" % (self.flow_id, self.proto_name, self.src_ip,
                                                   self.client_port, self.dest_ip, self.server_port,
                                                   self.state)
