"""Proxy preambles in front of a mining protocol: SOCKS4/4a, SOCKS5 (with or without
username/password) and HTTP CONNECT. Miners support proxies (XMRig --proxy, ethminer
socks5://), so the JSON lines of a pool session may start after such a handshake.

`strip(up, down)` returns a `Preamble` telling how many bytes of each direction the
handshake takes and which target it asked for, `INCOMPLETE` while the handshake is
still arriving, or None when the streams do not start with a proxy handshake.
Never raises; reads at most the first few hundred bytes.
"""
from __future__ import annotations

import ipaddress


class Preamble:
    __slots__ = ("up", "down", "via", "target")

    def __init__(self, up: int, down: int, via: str, target: str):
        self.up = up            # bytes of the client stream taken by the handshake
        self.down = down        # bytes of the server stream taken by the handshake
        self.via = via          # "socks4", "socks5", "http-connect"
        self.target = target    # host:port the client asked the proxy for


INCOMPLETE = Preamble(-1, -1, "", "")


def strip(up: bytes, down: bytes) -> Preamble | None:
    if not up:
        return None
    first = up[0]
    if first == 5:
        return _socks5(up, down)
    if first == 4:
        return _socks4(up, down)
    if up[:8] == b"CONNECT ":
        return _connect(up, down)
    return None


def _socks5(up: bytes, down: bytes) -> Preamble | None:
    if len(up) < 2:
        return INCOMPLETE
    nmethods = up[1]
    if nmethods == 0 or nmethods > 16:
        return None
    pos = 2 + nmethods
    if len(up) < pos or len(down) < 2:
        return INCOMPLETE
    if down[0] != 5:
        return None
    method, dpos = down[1], 2
    if method == 2:                                 # username/password sub-negotiation
        if len(up) < pos + 2:
            return INCOMPLETE
        ulen = up[pos + 1]
        if len(up) < pos + 3 + ulen:
            return INCOMPLETE
        plen = up[pos + 2 + ulen]
        pos += 3 + ulen + plen
        dpos += 2
    elif method != 0:
        return None
    request = _socks5_address(up, pos)
    if request is None:
        return INCOMPLETE if len(up) < pos + 10 else None
    target, pos = request
    reply = _socks5_address(down, dpos)
    if reply is None:
        return INCOMPLETE if len(down) < dpos + 10 else None
    if down[dpos + 1] != 0:                         # the proxy refused
        return None
    return Preamble(pos, reply[1], "socks5", target)


def _socks5_address(data: bytes, pos: int) -> tuple[str, int] | None:
    """(host:port, end) of a SOCKS5 request/reply at pos, None if incomplete or invalid."""
    if len(data) < pos + 5 or data[pos] != 5 or data[pos + 2] != 0:
        return None
    atyp = data[pos + 3]
    at = pos + 4
    if atyp == 1:
        end = at + 4
        host = str(ipaddress.IPv4Address(data[at:end])) if len(data) >= end else ""
    elif atyp == 3:
        end = at + 1 + data[at]
        host = data[at + 1:end].decode("ascii", "replace")
    elif atyp == 4:
        end = at + 16
        host = str(ipaddress.IPv6Address(data[at:end])) if len(data) >= end else ""
    else:
        return None
    if len(data) < end + 2:
        return None
    port = int.from_bytes(data[end:end + 2], "big")
    return "%s:%d" % (host, port), end + 2


def _socks4(up: bytes, down: bytes) -> Preamble | None:
    if len(up) < 9:
        return INCOMPLETE
    if up[1] != 1:
        return None
    port = int.from_bytes(up[2:4], "big")
    ip = up[4:8]
    user_end = up.find(b"\0", 8, 8 + 256)
    if user_end < 0:
        return INCOMPLETE if len(up) < 8 + 256 else None
    pos = user_end + 1
    host = str(ipaddress.IPv4Address(ip))
    if ip[:3] == b"\0\0\0" and ip[3]:               # SOCKS4a: the name follows
        name_end = up.find(b"\0", pos, pos + 256)
        if name_end < 0:
            return INCOMPLETE if len(up) < pos + 256 else None
        host = up[pos:name_end].decode("ascii", "replace")
        pos = name_end + 1
    if len(down) < 8:
        return INCOMPLETE
    if down[0] != 0 or down[1] != 0x5A:
        return None
    return Preamble(pos, 8, "socks4", "%s:%d" % (host, port))


def _connect(up: bytes, down: bytes) -> Preamble | None:
    end = up.find(b"\r\n\r\n", 0, 4096)
    if end < 0:
        return INCOMPLETE if len(up) < 4096 else None
    target = up[8:up.find(b" ", 8, 8 + 300)].decode("ascii", "replace") if b" " in up[8:8 + 300] else ""
    dend = down.find(b"\r\n\r\n", 0, 4096)
    if dend < 0:
        return INCOMPLETE if len(down) < 4096 else None
    status = down[:16]
    if not (status.startswith(b"HTTP/1.") and status[8:13] == b" 200 "):
        return None
    return Preamble(end + 4, dend + 4, "http-connect", target)
