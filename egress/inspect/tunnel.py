"""Tunnel tools and services: ngrok, frp, chisel, cloudflared, bore, localtunnel, tailscale, WireGuard...

Guarantees (egress.inspect.base contract): pure, never raises, port independent,
reads at most `max_bytes` per direction. The domain list is data
(rules/tunnels.txt, loaded with the same immutable suffix matcher as the pool list);
a reload builds a new list and `swap`s it in.

Findings, all category "tunnel":
- "tunnel.service_domain": a TLS SNI, HTTP Host or DNS question under a listed
  tunnel-service domain (ngrok, trycloudflare / argotunnel, loca.lt, bore.pub,
  Tailscale control plane, ...). Names come from the facts of the TLS, HTTP and DNS
  detectors when they ran first, else from a parse of the first bytes here.
- "tunnel.chisel": an HTTP WebSocket upgrade whose Sec-WebSocket-Protocol is
  chisel's ("chisel-v3", older "chisel-v2"...).
- "tunnel.frp": frp's client login message (message type 'o', a length, then JSON
  with "privilege_key" and "run_id"), also after a yamux stream header, or frp's TLS
  mode (the single byte 0x17 before a TLS ClientHello).
- "tunnel.bore": bore's NUL-terminated JSON control messages ({"Hello":port},
  {"Authenticate":...}, {"Challenge":...}).
- "tunnel.wireguard" (UDP): a handshake initiation (type 1, reserved zero, exactly
  148 bytes) or response (type 2, 92 bytes).
"""
from __future__ import annotations

import re
from pathlib import Path

from egress.inspect import dns as dns_mod
from egress.inspect import http as http_mod
from egress.inspect import tls as tls_mod
from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView, shared
from egress.inspect.pools import PoolDomains, rules_file
from egress.types import Detection

MAX_BYTES = 4096
DEFAULT_PATH = rules_file("tunnels.txt")

_CHISEL = re.compile(r"chisel-v\d+")
_FRP_KEYS = (b'"privilege_key"', b'"run_id"')
_BORE = re.compile(rb'\{"(?:Hello|Authenticate|Challenge|Accept|Connection|Heartbeat)"[:}][^\x00]{0,200}\x00')
_FACT_NAMES = ("tls.sni", "http.host", "dns.query")


def load_tunnel_domains(path: str | Path = DEFAULT_PATH) -> PoolDomains:
    """The tunnel-service domain list (raises PoolListError with file:line on a bad file)."""
    return PoolDomains.load(path)


def _names_from_bytes(view: StreamView) -> tuple[list[tuple[str, str]], bool]:
    """(source, name) pairs parsed here, and whether more bytes could still name something."""
    if view.proto == 17:
        names = []
        for direction, d in list(view.datagrams)[:4]:
            if direction != 0:
                continue
            try:
                msg = dns_mod.parse_message(d)
            except dns_mod.DnsError:
                break
            names += [("dns.query", n) for n, _ in msg["questions"]]
        return names, False
    data = view.to_server
    if data[:1] == b"\x16":
        state, hs = tls_mod._handshake_stream(data)
        mstate, body = tls_mod._first_handshake(hs, 1)
        if mstate == "ok":
            hello = tls_mod.parse_client_hello(body)
            if hello and hello["sni"]:
                return [("tls.sni", hello["sni"])], False
            return [], False
        return [], mstate == "need" and state != "no"
    state, facts = shared(view, http_mod.request_facts, data)
    if state == "ok" and facts.get("http.host"):
        return [("http.host", facts["http.host"])], False
    return [], state == "need"


class TunnelDetector:
    name = "tunnel"
    protocols = frozenset({6, 17})
    max_bytes = MAX_BYTES

    def __init__(self, domains: PoolDomains | None = None):
        self.domains = domains if domains is not None else load_tunnel_domains()

    def swap(self, domains: PoolDomains) -> None:
        """Point at a reloaded list (one reference assignment)."""
        self.domains = domains

    def inspect(self, view: StreamView) -> InspectResult:
        found = self._protocol(view)
        if found is not None:
            return InspectResult(Status.MATCH, (found,))
        facts = view.facts
        names = [(k, facts[k]) for k in _FACT_NAMES if isinstance(facts.get(k), str)] if facts else []
        more = False
        if not names:
            names, more = _names_from_bytes(view)
        domains = self.domains
        for source, name in names:
            entry = domains.match(name)
            if entry is not None:
                return InspectResult(Status.MATCH, (Detection(
                    "tunnel", "tunnel.service_domain", {"source": source, "name": name[:128], "service": entry},
                    0.9),))
        if view.proto == 17:
            return NO_MATCH if view.datagrams else NEED_MORE
        if names or (view.closed_to_server and view.closed_to_client):
            return NO_MATCH
        if more or len(view.to_server) < 64 or len(view.to_client) < 64:
            # the protocol messages below need the first message of each side
            if len(view.to_server) + len(view.to_client) < self.max_bytes:
                return NEED_MORE
        return NO_MATCH

    @staticmethod
    def _protocol(view: StreamView) -> Detection | None:
        if view.proto == 17:
            for direction, d in list(view.datagrams)[:4]:
                if d[1:4] == b"\x00\x00\x00" and ((d[0] == 1 and len(d) == 148) or (d[0] == 2 and len(d) == 92)):
                    kind = "initiation" if d[0] == 1 else "response"
                    return Detection("tunnel", "tunnel.wireguard", {"message": kind})
            return None
        out, inp = view.to_server, view.to_client
        if out.startswith(b"GET "):
            state, facts = shared(view, http_mod.request_facts, out)
            proto = facts.get("http.websocket_protocol", "") if state == "ok" else ""
            if proto and _CHISEL.search(proto):         # (the pattern cannot match "")
                return Detection("tunnel", "tunnel.chisel", {"subprotocol": proto[:64]})
            return None
        head = out[:2048]
        if _FRP_KEYS[0] in head and _FRP_KEYS[1] in head:
            at = head.find(b"o")
            if 0 <= at < 32 and head.find(b"{", at) - at <= 9:
                return Detection("tunnel", "tunnel.frp", {"message": "login"})
        if out.startswith(b"\x17\x16\x03"):
            return Detection("tunnel", "tunnel.frp", {"message": "tls_head_byte"}, 0.8)
        if not (out.startswith(b'{"') or inp.startswith(b'{"')):
            return None
        for side, data in (("client", out), ("server", inp)):
            if data[:2] == b'{"' and _BORE.match(data[:256]):
                return Detection("tunnel", "tunnel.bore", {"side": side,
                                                           "message": data[2:data.find(b'"', 2)].decode("ascii", "replace")})
        return None
