"""Who is the client when the handshake was (not) captured."""
import pytest

from egress.flow.orientation import sender_is_client
from egress.types import ACK, PROTO_TCP, PROTO_UDP, PSH, SYN


@pytest.mark.parametrize("flags, sport, dport, expected", [
    (SYN, 443, 50000, (True, "syn")),            # the SYN decides, whatever the ports
    (SYN | ACK, 3333, 40000, (False, "synack")),
    (ACK | PSH, 443, 53059, (False, "port")),    # a capture that starts with the server's data
    (ACK, 55317, 8333, (True, "port")),          # both high: the ephemeral side is the client
    (ACK, 5000, 6000, (True, "first")),          # nothing to go by: first sender
])
def test_tcp(flags, sport, dport, expected):
    assert sender_is_client(PROTO_TCP, flags, sport, dport) == expected


def test_udp_dns_response_seen_first_still_names_the_resolver_as_server():
    assert sender_is_client(PROTO_UDP, 0, 53, 41000) == (False, "port")
