"""Tunnel tools and services: domain list (rules/tunnels.txt) via SNI / Host / DNS, protocol
messages of chisel, frp, bore and WireGuard; negatives on real captures; fuzz."""
from __future__ import annotations

import json
import os
import struct

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.pools import PoolListError
from egress.inspect.tunnel import DEFAULT_PATH, TunnelDetector, load_tunnel_domains

try:
    from protocols_pcap import SHARED_PCAPS, python_client_hello, read_flows
except ImportError:
    from tests.inspect.protocols_pcap import SHARED_PCAPS, python_client_hello, read_flows

DET = TunnelDetector()
V4 = b"\x0a\x00\x00\x01"


def tcp(c: bytes, s: bytes = b"", facts=None, closed=False) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 443, c, s, closed_to_server=closed,
                      closed_to_client=closed, facts=facts)


def udp(*dgrams, facts=None) -> StreamView:
    return StreamView(17, V4, 40000, b"\x0a\x00\x00\x02", 51820, datagrams=tuple(dgrams), facts=facts)


def sig(result):
    return [(d.category, d.signature) for d in result.detections]


def test_default_list_loads_and_matches_on_label_boundaries():
    domains = load_tunnel_domains()
    assert len(domains) > 20
    assert domains.match("abc123.ngrok-free.app") == "ngrok-free.app"
    assert domains.match("quiet-fog-1234.trycloudflare.com") == "trycloudflare.com"
    assert domains.match("controlplane.tailscale.com")
    assert domains.match("tailscale.com") is None          # the website is not the tunnel
    assert domains.match("notngrok.io") is None


def test_bad_list_is_a_one_line_error(tmp_path):
    bad = tmp_path / "tunnels.txt"
    bad.write_text("ngrok.io\nthis is not a domain\n")
    with pytest.raises(PoolListError, match=r"tunnels.txt:2:"):
        load_tunnel_domains(bad)


def test_sni_of_a_real_client_hello():
    r = DET.inspect(tcp(python_client_hello("f00d-203-0-113-7.ngrok-free.app", ["http/1.1"])))
    assert sig(r) == [("tunnel", "tunnel.service_domain")]
    assert r.detections[0].evidence["service"] == "ngrok-free.app"
    ordinary = DET.inspect(tcp(python_client_hello("pypi.org", ["h2"])))
    assert ordinary.status is Status.NO_MATCH and not ordinary.detections


def test_names_from_facts_http_and_dns():
    assert sig(DET.inspect(tcp(b"", facts={"tls.sni": "region1.v2.argotunnel.com"})))
    r = DET.inspect(tcp(b"GET / HTTP/1.1\r\nHost: brave-cat-42.loca.lt\r\n\r\n"))
    assert r.detections[0].evidence == {"source": "http.host", "name": "brave-cat-42.loca.lt", "service": "loca.lt"}
    q = struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x0ccontrolplane\x09tailscale\x03com\x00\x00\x01\x00\x01"
    assert sig(DET.inspect(udp((0, q)))) == [("tunnel", "tunnel.service_domain")]


def test_chisel_websocket_subprotocol():
    req = (b"GET / HTTP/1.1\r\nHost: 10.0.0.2:8080\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: x3JJHMbDL1EzLkh9GBhXDw==\r\nSec-WebSocket-Protocol: chisel-v3\r\n"
           b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n")
    assert sig(DET.inspect(tcp(req))) == [("tunnel", "tunnel.chisel")]
    assert not DET.inspect(tcp(req.replace(b"chisel-v3", b"graphql-ws"), closed=True)).detections


def frp_login() -> bytes:
    body = json.dumps({"version": "0.52.3", "hostname": "", "os": "linux", "arch": "amd64", "user": "",
                       "privilege_key": "3b4f0e4c9d1f", "timestamp": 1700000000, "run_id": "",
                       "metas": None, "pool_count": 1}).encode()
    return b"o" + struct.pack(">q", len(body)) + body


def test_frp_login_plain_after_yamux_header_and_tls_head_byte():
    assert sig(DET.inspect(tcp(frp_login()))) == [("tunnel", "tunnel.frp")]
    yamux = struct.pack(">BBHII", 0, 0, 1, 1, len(frp_login()))
    assert sig(DET.inspect(tcp(yamux + frp_login()))) == [("tunnel", "tunnel.frp")]
    r = DET.inspect(tcp(b"\x17" + b"\x16\x03\x01\x00\x50" + b"\x01" * 80))
    assert sig(r) == [("tunnel", "tunnel.frp")] and r.detections[0].confidence < 1


def test_bore_control_messages():
    assert sig(DET.inspect(tcp(b'{"Hello":0}\x00'))) == [("tunnel", "tunnel.bore")]
    assert sig(DET.inspect(tcp(b"", b'{"Challenge":"6e2a9b3c-0f5c-4d5e-9a7b-1c2d3e4f5a6b"}\x00')))
    assert not DET.inspect(tcp(b'{"jsonrpc":"2.0","id":1,"method":"eth_blockNumber"}\n', closed=True)).detections


def wireguard(kind: int) -> bytes:
    if kind == 1:   # type, reserved, sender, ephemeral, static (enc), timestamp (enc), mac1, mac2
        return struct.pack("<BxxxI", 1, 0x1234) + os.urandom(32 + 48 + 28 + 16 + 16)
    return struct.pack("<BxxxII", 2, 0x5678, 0x1234) + os.urandom(32 + 16 + 16 + 16)


def test_wireguard_handshake():
    init, resp = wireguard(1), wireguard(2)
    assert (len(init), len(resp)) == (148, 92)
    assert sig(DET.inspect(udp((0, init)))) == [("tunnel", "tunnel.wireguard")]
    assert sig(DET.inspect(udp((1, resp))))
    assert not DET.inspect(udp((0, b"\x01\x01" + init[2:]))).detections     # reserved bytes not zero
    assert not DET.inspect(udp((0, init[:147]))).detections


def test_swap_reloads_the_list(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("tunnel.example\n")
    det = TunnelDetector(load_tunnel_domains(DEFAULT_PATH))
    v = tcp(b"", facts={"tls.sni": "a.tunnel.example"})
    assert not det.inspect(v).detections
    det.swap(load_tunnel_domains(path))
    assert det.inspect(v).detections


def test_no_tunnel_in_real_captures():
    if not SHARED_PCAPS.is_dir():
        pytest.skip("../shared/pcaps not present")
    for path in sorted(SHARED_PCAPS.glob("*.pcap*")):
        for f in read_flows(path):
            assert not DET.inspect(f.view()).detections, (path.name, f.client, f.server)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400), st.binary(max_size=100), st.lists(st.binary(max_size=200), max_size=3))
def test_fuzz_never_raises(c, s, dgrams):
    assert DET.inspect(tcp(c, s)).status in set(Status)
    assert DET.inspect(tcp(b"o" + c + b'"privilege_key""run_id"', s)).status in set(Status)
    assert DET.inspect(udp(*[(0, d) for d in dgrams])).status in set(Status)
