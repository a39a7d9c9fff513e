"""Test helper (scapy, never on the hot path): split a capture into flows and build
the StreamView a detector would see, independently of the engine.

TCP: the client is the side that sent the SYN (else the first packet's sender);
each direction is reassembled by sequence number (duplicates and overlaps dropped),
up to `budget` bytes. UDP: datagrams in order. `sizes` lists payload packets as
(ts, direction, length), like the engine's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from egress.inspect.base import StreamView

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED_PCAPS = REPO_ROOT.parent / "shared" / "pcaps"


@dataclass
class PcapFlow:
    proto: int
    client: tuple
    server: tuple
    initiator_known: bool
    segs: list = field(default_factory=lambda: [[], []])   # per direction: (seq, payload)
    isn: list = field(default_factory=lambda: [None, None])
    datagrams: list = field(default_factory=list)
    sizes: list = field(default_factory=list)
    closed: list = field(default_factory=lambda: [False, False])

    def stream(self, direction: int, budget: int = 8192) -> bytes:
        segs = sorted(self.segs[direction], key=lambda s: s[0])
        if not segs:
            return b""
        base = self.isn[direction] if self.isn[direction] is not None else segs[0][0]
        out = bytearray()
        for seq, data in segs:
            off = (seq - base) & 0xFFFFFFFF
            if off > 1 << 30:       # before the base: retransmission of the SYN area
                continue
            if off > len(out):       # hole: stop at the in-order prefix
                break
            out += data[len(out) - off:]
            if len(out) >= budget:
                break
        return bytes(out[:budget])

    def view(self, budget: int = 8192, closed: bool = True) -> StreamView:
        import ipaddress
        cip = ipaddress.ip_address(self.client[0]).packed
        sip = ipaddress.ip_address(self.server[0]).packed
        if self.proto == 17:
            ts = b"".join(d for di, d in self.datagrams if di == 0)
            tc = b"".join(d for di, d in self.datagrams if di == 1)
            return StreamView(17, cip, self.client[1], sip, self.server[1], ts, tc,
                              datagrams=list(self.datagrams[:16]), sizes=self.sizes[:64],
                              initiator_known=self.initiator_known)
        return StreamView(6, cip, self.client[1], sip, self.server[1], self.stream(0, budget),
                          self.stream(1, budget), closed_to_server=closed, closed_to_client=closed,
                          sizes=self.sizes[:64], initiator_known=self.initiator_known)


def read_flows(path: Path) -> list[PcapFlow]:
    from scapy.all import IP, TCP, UDP, IPv6, PcapReader  # noqa: local import, tests only
    flows: dict = {}
    order: list = []
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            ip = pkt.getlayer(IP) or pkt.getlayer(IPv6)
            if ip is None:
                continue
            l4 = pkt.getlayer(TCP) or pkt.getlayer(UDP)
            if l4 is None:
                continue
            proto = 6 if isinstance(l4, TCP) else 17
            a, b = (ip.src, l4.sport), (ip.dst, l4.dport)
            key = (proto,) + tuple(sorted([a, b]))
            fl = flows.get(key)
            payload = bytes(l4.payload)
            # scapy keeps Ethernet padding inside the payload: cut it at the IP length
            if isinstance(ip, IP):
                l4_len = ip.len - ip.ihl * 4
            else:
                l4_len = ip.plen
            hdr = l4.dataofs * 4 if proto == 6 else 8
            payload = payload[:max(0, l4_len - hdr)]
            if fl is None:
                if proto == 6:
                    flags = int(l4.flags)
                    if flags & 0x12 == 0x12:
                        fl = PcapFlow(6, b, a, True)
                    else:
                        fl = PcapFlow(6, a, b, bool(flags & 0x02))
                else:
                    fl = PcapFlow(17, a, b, True)
                flows[key] = fl
                order.append(fl)
            d = 0 if a == fl.client else 1
            ts = float(pkt.time)
            if proto == 6:
                flags = int(l4.flags)
                if flags & 0x02:
                    fl.isn[d] = (l4.seq + 1) & 0xFFFFFFFF
                if flags & 0x05:
                    fl.closed[d] = True
                if payload and not (flags & 0x02):
                    # drop padding that scapy may keep past the IP total length
                    fl.segs[d].append((l4.seq, payload))
                    fl.sizes.append((ts, d, len(payload)))
            elif payload:
                fl.datagrams.append((d, payload))
                fl.sizes.append((ts, d, len(payload)))
    return order


def pcap_path(name: str) -> Path:
    return SHARED_PCAPS / name


def growing_views(view: StreamView, fine: int = 300):
    """Views of growing prefixes, replaying the payload packets of `view.sizes` in order.

    Within the first `fine` bytes of each direction the prefix grows one byte at a
    time (a detector must cope with any cut); after that it grows per packet.
    The views are not closed; the caller compares them with the full view.
    """
    streams = (view.to_server, view.to_client)
    have = [0, 0]
    sizes = []
    order = list(view.sizes) or [(0.0, 0, len(streams[0])), (0.0, 1, len(streams[1]))]
    for item in order:
        ts, d, n = item
        target = min(have[d] + n, len(streams[d]))
        sizes.append(item)
        while have[d] < target:
            have[d] = have[d] + 1 if have[d] < fine else target
            yield StreamView(view.proto, view.client_ip, view.client_port, view.server_ip, view.server_port,
                             streams[0][:have[0]], streams[1][:have[1]], sizes=tuple(sizes),
                             initiator_known=view.initiator_known)


def assert_consistent_prefixes(detector, view: StreamView, fine: int = 300):
    """Every prefix result is a valid tri-state answer whose facts never contradict the final ones.

    The engine keeps the first value of each fact, so a fact set early must already
    have its final value. Returns the final result.
    """
    from egress.inspect.base import Status
    final = detector.inspect(view)
    assert isinstance(final.status, Status)
    last = None
    for v in growing_views(view, fine):
        r = detector.inspect(v)
        assert isinstance(r.status, Status)
        for key, value in r.facts.items():
            if key in final.facts:
                assert final.facts[key] == value, (key, value, final.facts[key], len(v.to_server), len(v.to_client))
        last = r
    if last is not None:
        got = {(d.category, d.signature) for d in last.detections}
        want = {(d.category, d.signature) for d in final.detections}
        assert got == want, (got, want)
    return final


def python_client_hello(server_name: str, alpn) -> bytes:
    """The first TLS record(s) Python's ssl module sends to a loopback listener (a real ClientHello)."""
    import socket
    import ssl
    import threading
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    got = bytearray()

    def client():
        ctx = ssl.create_default_context()
        ctx.set_alpn_protocols(alpn)
        try:
            with socket.create_connection(srv.getsockname(), 5) as s:
                s.settimeout(5)
                with ctx.wrap_socket(s, server_hostname=server_name):
                    pass
        except (OSError, ssl.SSLError):
            pass

    t = threading.Thread(target=client, daemon=True)
    t.start()
    conn, _ = srv.accept()
    conn.settimeout(5)
    try:
        while len(got) < 5 or len(got) < 5 + int.from_bytes(got[3:5], "big"):
            chunk = conn.recv(65536)
            if not chunk:
                break
            got += chunk
    finally:
        conn.close()
        srv.close()
        t.join(5)
    return bytes(got)


def engine_replay(to_server: bytes, to_client: bytes, sizes, client=("10.204.0.2", 40000),
                  server=("10.204.0.9", 4444)) -> list[dict]:
    """Replay a recorded conversation as real TCP packets through the engine; its flow events.

    `sizes` gives the order, direction and length of the chunks (as a relay recorded
    them); timestamps keep their recorded spacing: the session's clock steps 1 us per
    packet, not TcpSession's default 1 ms, which would stretch a burst of back-to-back
    chunks into rounds a round trip apart (the SSH heuristics read those gaps).
    """
    from egress.engine import Engine
    from egress.testing.craft import TcpSession
    from egress.types import RawPacket
    streams, at = (to_server, to_client), [0, 0]
    t0 = sizes[0][0] if sizes else 0.0
    session = TcpSession(client, server, step=1e-6)
    session.handshake()
    base = session.t
    for ts, d, n in sizes:
        chunk = streams[d][at[d]:at[d] + n]
        at[d] += n
        if not chunk:
            continue
        session.t = max(session.t, base + (ts - t0))
        session.send(d == 0, chunk, ack=False)
    session.close()
    engine = Engine()
    for ts, pkt in session.packets:
        engine.process(RawPacket(ts, pkt, 101))
    engine.flush()
    return [e for e in engine.drain_events() if e["event_type"] == "flow"]
