"""The contract between the engine and the protocol detectors.

A detector is a pure function of what the flow has shown so far (a `StreamView`)
to an `InspectResult`:

- it never keeps state between calls: the engine calls it again with a longer
  view whenever new in-order bytes (or new datagrams) arrive, and the detector
  re-reads from the start; budgets keep that bounded;
- it never raises on any input (garbage, truncation, half a message): a parse
  failure is NO_MATCH or NEED_MORE, never an exception. The engine still guards
  every call and counts a raise as an anomaly, but that is a bug;
- it is port-independent: ports may be reported as evidence, never required;
- it is tri-state: MATCH (done, found), NO_MATCH (done, not this protocol),
  NEED_MORE (call again with more bytes). A detector may return detections and
  facts with NEED_MORE too (for example SSH: banners now, HASSH after KEXINIT);
  the engine merges them and keeps calling until MATCH/NO_MATCH, until the
  client's direction (TCP; either direction of a datagram flow) has shown the
  detector's `max_bytes` (or the reassembly budget), or until both directions are
  closed (then it is done). A TCP server's direction that reached the reassembly
  budget, or the stage's packet budget, first shows as closed from then on
  (egress.inspect.stage: the server cannot end the inspection of the client).

A detector may declare `client_side_only = True`: its answer follows from
`view.to_server` and `view.closed_to_server` alone (and parses of them), and it
answers "wait" only with the shared NEED_MORE constant (no facts, no detections).
The engine then does not call it again while only the server's side of the flow
changed (its answer could not change: see InspectStage._server_side_news_only).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

from egress.types import Detection


class Status(enum.Enum):
    MATCH = "match"
    NO_MATCH = "no_match"
    NEED_MORE = "need_more"


@dataclass(frozen=True, slots=True)
class InspectResult:
    """What one detector call found.

    `app_proto` names the application protocol when the detector recognised it
    (Suricata's names where they exist: "tls", "ssh", "http", "dns", "stratum",
    "websocket", ...). `facts` are flow metadata for the policy and the EVE output
    (e.g. {"sni": "pool.example"}, {"ssh.client_banner": "SSH-2.0-OpenSSH_9.2"}).
    """
    status: Status
    detections: tuple[Detection, ...] = ()
    app_proto: str | None = None
    facts: Mapping[str, Any] = field(default_factory=dict)


NO_MATCH = InspectResult(Status.NO_MATCH)
NEED_MORE = InspectResult(Status.NEED_MORE)


class StreamView:
    """A read-only view of one flow for detectors, rebuilt cheaply by the engine.

    `to_server` / `to_client` hold the reassembled, in-order prefix of each TCP
    direction (up to the engine's reassembly budget). For UDP and other datagram
    protocols they hold the concatenated payloads and `datagrams` lists the first
    datagrams as (direction, payload) pairs, direction 0 = to server, 1 = to client.
    `closed_to_server` / `closed_to_client` are true when no more bytes will come in
    that direction (FIN/RST seen, or the budget is full): a detector may then
    answer NO_MATCH instead of NEED_MORE. `facts` are what other detectors already
    learned (read-only), `app_proto` the flow's protocol as known so far.
    `sizes` lists the first payload-carrying packets as (ts, direction, length).
    `memo` holds parses that several detectors need of the same bytes (see `shared`).
    The engine hands its entries on to the flow's next view while their bytes object
    is still that view's `to_server` or `to_client` (a direction that did not grow), so
    an entry is `(data, ...)` with the bytes it was computed from first, and its answer
    must follow from its key and the objects it holds, nothing else of the view.
    """
    __slots__ = ("proto", "client_ip", "client_port", "server_ip", "server_port", "to_server",
                 "to_client", "datagrams", "closed_to_server", "closed_to_client", "facts",
                 "app_proto", "sizes", "initiator_known", "memo", "walked")

    def __init__(self, proto: int, client_ip: bytes, client_port: int, server_ip: bytes,
                 server_port: int, to_server: bytes = b"", to_client: bytes = b"",
                 datagrams: Sequence[tuple[int, bytes]] = (), closed_to_server: bool = False,
                 closed_to_client: bool = False, facts: Mapping[str, Any] | None = None,
                 app_proto: str | None = None, sizes: Sequence[tuple[float, int, int]] = (),
                 initiator_known: bool = True):
        self.proto = proto
        self.client_ip = client_ip
        self.client_port = client_port
        self.server_ip = server_ip
        self.server_port = server_port
        self.to_server = to_server
        self.to_client = to_client
        self.datagrams = datagrams
        self.closed_to_server = closed_to_server
        self.closed_to_client = closed_to_client
        self.facts = facts if facts is not None else {}
        self.app_proto = app_proto
        self.sizes = sizes
        self.initiator_known = initiator_known
        self.memo: dict = {}
        self.walked: tuple | None = None     # mining_http.exchange's last answer on this view


def shared(view: StreamView, parse: Callable[[bytes], Any], data: bytes) -> Any:
    """`parse(data)`, computed once per view: the detectors of one round share it.

    `parse` must be a pure function of `data` (same bytes, same answer) and its result
    is shared, so callers treat it as read-only (copy before changing it). The key is
    the identity of `data`; the memo keeps `data` alive, so an identity cannot be
    reused by other bytes while the entry exists. The engine's next view of the flow
    keeps the entry while `data` is still one of its directions (no new bytes there).
    A view built by hand works too (its memo starts empty).
    """
    key = (parse, id(data))
    entry = view.memo.get(key)
    if entry is not None and entry[0] is data:
        return entry[1]
    result = parse(data)
    view.memo[key] = (data, result)
    return result


class Detector(Protocol):
    """What the engine needs of a detector."""
    name: str                    # stable short name, e.g. "stratum"
    protocols: frozenset[int]    # IP protocols it applies to, e.g. {6} or {6, 17}
    max_bytes: int               # per-direction byte budget; past it, the detector is done

    def inspect(self, view: StreamView) -> InspectResult: ...
