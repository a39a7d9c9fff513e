"""Who opened the connection: the client ("src" in EVE) of a new flow.

The rule, in order (the first that applies wins, and the flow records which one
in `Flow.initiator`):

1. "syn":    a TCP SYN without ACK was sent by the client.
2. "synack": a TCP SYN+ACK was sent by the server, so its receiver is the client.
3. "port":   the handshake was not captured (a capture started mid-connection, or
             a UDP/ICMP exchange); a service port decides: if exactly one side uses
             a port below 1024, that side is the server; otherwise if exactly one side
             uses a port in the ephemeral range (>= 32768, Linux's default
             ip_local_port_range and IANA's 49152+ both fall in it) the OTHER side is
             the server.
4. "first":  otherwise the sender of the first packet seen is the client.

Why not "first packet" alone (what tshark's stream numbering does): a capture that
starts mid-connection very often begins with a server's packet (a big response,
a retransmission), and calling port 443 the client inverts every later stage:
the policy would judge the wrong destination.
"""
from __future__ import annotations

from egress.types import ACK, PROTO_TCP, SYN

EPHEMERAL_START = 32768


def sender_is_client(proto: int, flags: int, sport: int, dport: int) -> tuple[bool, str]:
    """Decide from the first packet of a flow whether its sender is the client."""
    if proto == PROTO_TCP and flags & SYN:
        if flags & ACK:
            return False, "synack"
        return True, "syn"
    s_low, d_low = sport < 1024, dport < 1024
    if s_low != d_low:
        return d_low, "port"
    s_eph, d_eph = sport >= EPHEMERAL_START, dport >= EPHEMERAL_START
    if s_eph != d_eph:
        return s_eph, "port"
    return True, "first"
