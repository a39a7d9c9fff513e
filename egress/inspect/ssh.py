"""SSH: banners, HASSH, role reversal, SSH inside HTTP/WebSocket, reverse forwarding through encryption.

Guarantees (the detector contract of egress.inspect.base): pure, never raises, port
independent, reads at most `max_bytes` per direction.

What it reports:

- "ssh" / "ssh.session" as soon as one side sent an SSH identification line
  ("SSH-2.0-..." or "SSH-1.99-...", RFC 4253 section 4.2; the peer that speaks second
  may send other lines before its banner) and the other side did not show a different
  protocol. Facts: ssh.client_banner / ssh.server_banner (by TCP role: client = the
  side that opened the connection), ssh.client_software / ssh.server_software.
- HASSH (Salesforce): md5 of "kex;enc;mac;cmp" from the client's SSH_MSG_KEXINIT
  (client-to-server lists) -> ssh.hassh, and from the server's (server-to-client
  lists) -> ssh.hassh_server, with the strings as ssh.hassh_string /
  ssh.hassh_server_string. Like the banners they are keyed by TCP role.
- "reverse_tunnel" / "ssh.role_reversal": after the KEXINITs, only an SSH server sends
  SSH_MSG_KEXDH_REPLY / KEX_ECDH_REPLY / KEX_DH_GEX_GROUP (31) or KEX_DH_GEX_REPLY (33),
  and only a client sends 30, 32 or 34. If the side that opened the TCP connection
  sends a server-only message (or the accepting side a client-only one), the
  connecting side is the SSH server: what reverse-shell implants such as reverse_ssh
  do. Only reported when the initiator is known (SYN seen).
- "tunnel" / "ssh.over_websocket" (or "ssh.over_http" for a CONNECT or another
  Upgrade): an SSH banner after an HTTP upgrade, raw or inside WebSocket data frames
  (client frames unmasked here), as wstunnel and similar tools carry it. Any request
  of a keep-alive connection may be the upgrade (mining_http.exchange); the detector
  waits while a later request can still come (mining_http.more_requests).
- Through encryption, from `view.sizes` (ts, direction, length of each payload
  packet), mapped past the end of the clear-text key exchange (SSH_MSG_NEWKEYS):
  * "ssh.nested_kex": a second SSH handshake carried inside the session: a small
    packet each way (channel open / banners), then a packet each way of KEXINIT
    size (900..2200 bytes), then a key-exchange init one way answered by a larger
    reply of 300+ bytes (host key + signature, plus the KEM ciphertext with
    sntrup761 or mlkem768) the other way, all within 5 seconds. The inner SSH client
    is the side that sent that init. If it is the server side, the inner client sits
    behind the server: a reverse forward (`ssh -R` used to reach back into the
    sandbox) -> "reverse_tunnel" / "ssh.reverse_forward_suspected" (confidence 0.6);
    if it is the client side (ProxyJump, `-W`) -> "tunnel" / "ssh.nested_kex" (0.5).
    The last step is what separates a real nested handshake from OpenSSH's own
    hostkeys-00 / hostkeys-prove-00 exchange right after authentication, which has
    a KEXINIT-sized pair too but no larger reply after it.
  * "ssh.server_initiated": after the session is established (8+ encrypted packets),
    the server speaks after an idle second with nobody talking, the client answers
    within 0.5 s and both keep talking (4+ packets in the next 3 s): the shape of a
    forwarded-tcpip channel opened by the server for an `ssh -R` listener. An
    interactive session is driven by the client (keystrokes, then echo). Counted in
    the fact ssh.server_initiated; from two such episodes on it is reported as
    "reverse_tunnel" / "ssh.reverse_forward_suspected" with confidence 0.4 (a single
    one may be a ClientAliveInterval keepalive that happened to meet a keystroke).
  * tunnel-only sessions (`ssh -N` with -R, -L or -D). The cipher and MAC each
    direction negotiated (RFC 4253 7.1: the SSH client's first choice the server also
    lists, from the two KEXINITs) fix the framing: block size, AEAD tag or MAC length,
    whether the 4-byte length field is inside the block alignment. That gives the
    smallest possible packet (1-byte payload: 28 bytes with chacha20-poly1305, 36 with
    AES-GCM) and, for any packet, the payload length it can hold with minimal padding.
    SSH_MSG_USERAUTH_SUCCESS is the server's first packet of the smallest size after
    two or more client packets: the anchor where the connection protocol starts (no
    anchor, no claim). A client that wants a shell, a command, scp, sftp or git then
    opens a "session" channel and must wait for the confirmation before it sends the
    channel request: two client rounds in the burst that follows the login (a new
    round needs an answer first: a server packet that came a round trip after the
    round began; sshd's post-login notices, EXT_INFO and hostkeys-00, come unasked
    and sooner).
    With -N the client sends only global requests (tcpip-forward, no-more-sessions)
    in one round, then waits. Forwarded connections come later, each after an idle
    gap, as a CHANNEL_OPEN of 40+ payload bytes (a keepalive request holds 27, a
    confirmation 17) answered within an answer window by a packet that can hold an
    OPEN_CONFIRMATION (17 bytes; EOF, CLOSE, WINDOW_ADJUST and a keystroke hold 5..10):
    opened by the server (forwarded-tcpip: an -R listener inside the sandbox is being
    used from outside) -> "reverse_tunnel" / "ssh.tunnel_only_reverse" (confidence
    0.6); opened by the client (direct-tcpip: -L or -D) -> "tunnel" / "ssh.tunnel_only"
    (0.5). Evidence: login_rounds, server_opened, client_opened, idle_gap; fact
    ssh.tunnel_only: "reverse" or "local". The login's answer times set the timing
    thresholds (the RTT and the load): idle gap max(1 s, 4 x the slowest answer),
    answer window max(0.5 s, 3 x the slowest), a round trip max(1 ms, half the fastest).
    Measured on real OpenSSH 9.2 (tests/inspect/test_ssh.py, four cipher/MAC
    families): -N -R, -N -L and -N -D with two forwarded connections are found; an
    interactive shell, `ssh host cmd`, `ssh -T`, scp (SFTP and legacy), sftp, git
    clone and `ssh -L host cmd` are not called tunnel-only.
  These are deliberately conservative and low confidence: they are features for the
  classifier, and evidence for a human, not proof.

Limits of the encrypted-phase heuristics (known, measured in tests/inspect/test_ssh.py):
- they see what the engine keeps: the first 8 KiB per direction and the first 64
  payload packets. A nested handshake or the first forwarded connection later than
  that is missed (an -N session with a forwarded connection in its first ~40 packets
  is within reach; a nested SSH after a long interactive session is not).
- a forwarded connection that arrives within the login burst (before the first idle
  gap) makes a second client round: the session is then not called tunnel-only (an
  -N -L used by a script right away, e.g. `ssh -f -N -L ...; curl ...`). An -N session
  whose forwards carry nothing is not distinguishable from an idle login.
- sizes assume OpenSSH's minimal padding; an implementation with random padding can
  make a small message look big enough to be a channel open. Several SSH packets in
  one TCP segment add up to one size (handled: the open is the first packet of a
  burst, and a session's second round is a count, not a size).
- a server that delays a session channel's confirmation by more than the idle gap
  splits the login burst; the session is then judged on what follows (a server
  packet of channel-open size answered by one of confirmation size), so a shell
  whose unprompted output is answered by a paste could look like a -R channel. A
  server without post-login notices on a link under 1 ms makes its confirmation
  look like part of the client's round, with the same consequence; so does a loaded
  server whose notices reach the gateway a round trip after the client's first
  request, when the client's second request of that round comes after them.

This is not JA4SSH (whose licence forbids product use); the size features are our own.
"""
from __future__ import annotations

import functools
import hashlib
import re

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.inspect.mining_http import exchange, more_requests
from egress.types import Detection

MAX_BYTES = 8192
_BANNER_MAX = 255                 # RFC 4253: identification line incl. CR LF
_PRE_BANNER_LINES = 16            # other lines a server may send before its banner
_PRE_BANNER_BYTES = 2048
_MAX_PACKET = 35000               # RFC 4253 6.1: packets of at least this size must be accepted
_BANNER_RE = re.compile(rb"SSH-(\d+\.\d+)-([\x21-\x2c\x2e-\x7e][\x20-\x7e]*)\Z")
_HTTP_METHODS = (b"GET ", b"POST ", b"CONNECT ", b"PUT ", b"HEAD ", b"OPTIONS ", b"PATCH ",
                 b"DELETE ")

_PRINTABLE = bytes(range(0x20, 0x7F))

MSG_KEXINIT = 20
MSG_NEWKEYS = 21
SERVER_ONLY_KEX = frozenset({31, 33})
CLIENT_ONLY_KEX = frozenset({30, 32, 34})

# size heuristics on encrypted packets (bytes of TCP payload)
_SMALL_MAX = 200
_KEXINIT_LO, _KEXINIT_HI = 900, 2200
_KEX_REPLY_MIN = 300
_NESTED_WINDOW = 5.0
_ESTABLISHED_PKTS = 8
_IDLE_GAP = 1.0
_ANSWER_WITHIN = 0.5
_FOLLOW_WINDOW = 3.0


class _Side:
    """What one direction showed in clear text."""
    __slots__ = ("state", "banner", "kexinit", "kex_msgs", "newkeys_end", "end")

    def __init__(self):
        self.state = "need"          # need | no | banner
        self.banner = ""
        self.kexinit: list[str] | None = None
        self.kex_msgs: list[int] = []   # message numbers after KEXINIT, before NEWKEYS
        self.newkeys_end = -1           # stream offset where encryption starts (-1: not yet)
        self.end = 0                    # offset parsed so far


def _parse_banner(data: bytes, allow_pre_lines: bool) -> tuple[str, str, int]:
    """-> (state, banner, offset after banner); state need | no | banner."""
    off = 0
    for _ in range(_PRE_BANNER_LINES + 1):
        rest = data[off:off + _BANNER_MAX + 1]
        if len(rest) < 4:
            return ("need" if b"SSH-".startswith(rest) or allow_pre_lines and off else
                    "no" if rest else "need"), "", 0
        nl = rest.find(b"\n")
        if rest.startswith(b"SSH-"):
            if nl < 0:
                return ("no" if len(rest) > _BANNER_MAX else "need"), "", 0
            line = rest[:nl].rstrip(b"\r")
            m = _BANNER_RE.match(line)
            if not m:
                return "no", "", 0
            return "banner", line.decode("ascii"), off + nl + 1
        if not allow_pre_lines or rest.startswith(b"HTTP/") or rest.startswith(_HTTP_METHODS):
            return "no", "", 0
        if nl < 0:
            return ("no" if len(rest) > _BANNER_MAX else "need"), "", 0
        if rest[:nl].translate(None, _PRINTABLE + b"\t\r"):
            return "no", "", 0
        off += nl + 1
        if off > _PRE_BANNER_BYTES:
            return "no", "", 0
    return "no", "", 0


def _parse_kexinit(payload: bytes) -> list[str] | None:
    """SSH_MSG_KEXINIT payload -> its ten name-lists, or None if malformed."""
    pos = 17                         # msg byte + 16-byte cookie
    lists = []
    for _ in range(10):
        if pos + 4 > len(payload):
            return None
        n = int.from_bytes(payload[pos:pos + 4], "big")
        pos += 4
        if n > len(payload) - pos:
            return None
        raw = payload[pos:pos + n]
        if raw.translate(None, _PRINTABLE):
            return None              # name-lists are US-ASCII without controls
        lists.append(raw.decode("ascii"))
        pos += n
    return lists


def _parse_side(data: bytes, allow_pre_lines: bool) -> _Side:
    side = _Side()
    state, banner, off = _parse_banner(data, allow_pre_lines)
    side.state = state
    if state != "banner":
        return side
    side.banner = banner
    if banner.startswith("SSH-1.") and not banner.startswith("SSH-1.99"):
        side.end = off               # SSH-1 binary packets are not parsed
        return side
    # clear-text binary packets until NEWKEYS (RFC 4253 6: no MAC before the first NEWKEYS)
    while off + 6 <= len(data):
        plen = int.from_bytes(data[off:off + 4], "big")
        pad = data[off + 4]
        if plen < 5 or plen > _MAX_PACKET or pad < 4 or pad >= plen:
            break                    # not an SSH binary packet: stop reading this side
        if off + 4 + plen > len(data):
            break                    # incomplete: more bytes may come
        payload = data[off + 5:off + 4 + plen - pad]
        off += 4 + plen
        if not payload:
            break
        msg = payload[0]
        if msg == MSG_KEXINIT and side.kexinit is None:
            side.kexinit = _parse_kexinit(payload)
        elif msg == MSG_NEWKEYS:
            side.newkeys_end = off
            break
        elif side.kexinit is not None and 30 <= msg <= 49 and len(side.kex_msgs) < 8:
            side.kex_msgs.append(msg)
    side.end = off
    return side


def _software(banner: str) -> str:
    parts = banner.split("-", 2)
    return parts[2] if len(parts) == 3 else ""


def hassh_string(kexinit: list[str], server: bool) -> str:
    """The HASSH input: kex;enc;mac;cmp of the given side's direction."""
    if server:
        return ";".join((kexinit[0], kexinit[3], kexinit[5], kexinit[7]))
    return ";".join((kexinit[0], kexinit[2], kexinit[4], kexinit[6]))


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("ascii")).hexdigest()


# -- HTTP upgrade / WebSocket unwrapping -------------------------------------------

def _ws_payload(data: bytes, limit: int = MAX_BYTES) -> bytes:
    """Concatenated payloads of the complete WebSocket data frames at the start of `data`."""
    out = bytearray()
    pos = 0
    while pos + 2 <= len(data) and len(out) < limit:
        b0, b1 = data[pos], data[pos + 1]
        opcode = b0 & 0x0F
        masked = b1 & 0x80
        n = b1 & 0x7F
        pos += 2
        if n == 126:
            if pos + 2 > len(data):
                break
            n = int.from_bytes(data[pos:pos + 2], "big")
            pos += 2
        elif n == 127:
            if pos + 8 > len(data):
                break
            n = int.from_bytes(data[pos:pos + 8], "big")
            pos += 8
        key = b""
        if masked:
            if pos + 4 > len(data):
                break
            key = data[pos:pos + 4]
            pos += 4
        chunk = data[pos:pos + n]
        pos += n
        if key:
            chunk = bytes(c ^ key[i & 3] for i, c in enumerate(chunk[:limit]))
        if opcode in (0, 1, 2):
            out += chunk
        elif opcode not in (8, 9, 10):
            break                    # not WebSocket framing
        if len(chunk) < n:
            break                    # partial frame: what we have is still a valid prefix
    return bytes(out[:limit])


def _unwrap_http(view: StreamView, walked=None) -> tuple[str, bytes, bytes] | None:
    """If the flow is an HTTP upgrade/CONNECT that switched protocols: (kind, inner c->s, inner s->c).

    Any request of a keep-alive connection may be the one that switches (a harmless GET
    first does not hide a later Upgrade): the requests and responses are walked
    (mining_http.exchange, shared with the other HTTP detectors) to the response that
    switched, 101 or a 2xx to CONNECT, and the request it answers. `walked`: that
    exchange of the view when the caller has it already."""
    if not view.to_server.startswith(_HTTP_METHODS):
        return None
    requests, responses = walked or exchange(view, view.to_server, view.to_client)   # shared: one walk a round
    k = responses.switch
    if k < 0 or k >= len(requests.msgs):
        return None
    req = requests.msgs[k]
    inner_c, inner_s = view.to_server[req.end:], view.to_client[responses.end:]
    if responses.msgs[-1].code == 101:
        if b"websocket" in req.upgrade:
            return "websocket", _ws_payload(inner_c), _ws_payload(inner_s)
        return "http", inner_c, inner_s
    return "http", inner_c, inner_s


def _http_more(view: StreamView, walked=None) -> bool:
    """Whether a later request of the connection may still switch protocols."""
    requests, responses = walked or exchange(view, view.to_server, view.to_client)
    up_done = view.closed_to_server or len(view.to_server) >= MAX_BYTES
    down_done = view.closed_to_client or len(view.to_client) >= MAX_BYTES
    return more_requests(requests, responses, up_done, down_done)


# -- encrypted-phase shape heuristics -------------------------------------------------

def _encrypted_packets(sizes, client: _Side, server: _Side) -> list:
    """The (ts, dir, len) packets that lie entirely after each direction's NEWKEYS."""
    ends = (client.newkeys_end, server.newkeys_end)
    if ends[0] < 0 or ends[1] < 0:
        return []
    seen = [0, 0]
    out = []
    for item in sizes:
        try:
            ts, d, n = item
        except (TypeError, ValueError):
            return []
        if d not in (0, 1):
            continue
        if seen[d] >= ends[d]:
            out.append((ts, d, n))
        seen[d] += n
    return out


def _nested_kex(pkts: list) -> int | None:
    """Direction (0/1) of the inner SSH client (it sends the key-exchange init) of a nested handshake, or None."""
    big = {d for _, d, ln in pkts if _KEXINIT_LO <= ln <= _KEXINIT_HI}
    if len(big) < 2:
        return None                  # no KEXINIT-sized packet each way: nothing to look for
    n = len(pkts)
    for i in range(n - 1):
        ts0, d0, l0 = pkts[i]
        if l0 > _SMALL_MAX:
            continue
        # the other side's small answer (banner, or channel confirmation then banners) ...
        j = next((k for k in range(i + 1, min(i + 4, n)) if pkts[k][1] != d0), None)
        if j is None or pkts[j][2] > _SMALL_MAX:
            continue
        # ... then a KEXINIT-sized packet each way ...
        kex = [k for k in range(j + 1, min(j + 6, n))
               if _KEXINIT_LO <= pkts[k][2] <= _KEXINIT_HI and pkts[k][0] - ts0 <= _NESTED_WINDOW]
        pair = next(((a, b) for a in kex for b in kex if a < b and pkts[a][1] != pkts[b][1]), None)
        if pair is None:
            continue
        # ... then a key-exchange init one way answered by a larger reply (host key +
        # signature, and the KEM ciphertext with sntrup761/mlkem768) the other way.
        after = pkts[pair[1] + 1:pair[1] + 5]
        for a, (ta, da, la) in enumerate(after):
            if ta - ts0 > _NESTED_WINDOW:
                break
            if any(db != da and lb >= _KEX_REPLY_MIN and lb > la and tb - ts0 <= _NESTED_WINDOW
                   for tb, db, lb in after[a + 1:]):
                return da
    return None


def _server_initiated(pkts: list) -> int:
    """Episodes where the server spoke first after an idle gap and a conversation followed."""
    count = 0
    for i in range(max(1, _ESTABLISHED_PKTS), len(pkts)):
        ts, d, _ = pkts[i]
        if d != 1 or ts - pkts[i - 1][0] < _IDLE_GAP:
            continue
        rest = pkts[i + 1:]
        answer = next((p for p in rest if p[1] == 0), None)
        if answer is None or answer[0] - ts > _ANSWER_WITHIN:
            continue
        follow = [p for p in rest if p[0] - ts <= _FOLLOW_WINDOW]
        if len(follow) >= 4 and {p[1] for p in follow} == {0, 1}:
            count += 1
    return count


# -- tunnel-only sessions (ssh -N) ------------------------------------------------

# Cipher framing (RFC 4253 6, RFC 5647, PROTOCOL.chacha20poly1305, PROTOCOL etm):
# name -> (block size, AEAD tag bytes or 0). AEAD ciphers leave the 4-byte length
# field out of the block alignment.
_CIPHERS = {
    "chacha20-poly1305@openssh.com": (8, 16),
    "aes128-gcm@openssh.com": (16, 16), "aes256-gcm@openssh.com": (16, 16),
    "aes128-ctr": (16, 0), "aes192-ctr": (16, 0), "aes256-ctr": (16, 0),
    "aes128-cbc": (16, 0), "aes192-cbc": (16, 0), "aes256-cbc": (16, 0), "3des-cbc": (8, 0),
}
_MACS = {"hmac-sha2-256": 32, "hmac-sha2-512": 64, "hmac-sha1": 20, "hmac-md5": 16,
         "umac-64@openssh.com": 8, "umac-128@openssh.com": 16}

_OPEN_MIN_PAYLOAD = 40        # CHANNEL_OPEN direct-/forwarded-tcpip: 45+ / 48+ bytes; keepalive 27, confirm 17
_CONFIRM_PAYLOAD = 17         # CHANNEL_OPEN_CONFIRMATION; EOF/CLOSE/WINDOW_ADJUST/a keystroke are 5..10
_TUNNEL_IDLE_MIN = 1.0        # an idle gap: at least this long, or 4 x the slowest login answer
_TUNNEL_ANSWER_MIN = 0.5      # a channel open is answered within this, or 3 x the slowest login answer
_RTT_CAP = 2.0
_ROUND_MIN = 0.001            # a server packet this soon after a round began cannot answer it


def _negotiate(client_list: str, server_list: str) -> str | None:
    """RFC 4253 7.1: the first algorithm on the SSH client's list that the server also lists."""
    offered = set(server_list.split(","))
    return next((a for a in client_list.split(",") if a in offered), None)


def _framing(ssh_client: list[str], ssh_server: list[str], to_server: bool) -> tuple[int, int, bool] | None:
    """(block, trailer bytes, length field outside the alignment) of one direction, None if unknown."""
    i = 2 if to_server else 3
    return _framing_of(ssh_client[i], ssh_server[i], ssh_client[i + 2], ssh_server[i + 2])


@functools.lru_cache(maxsize=256)
def _framing_of(client_enc: str, server_enc: str, client_mac: str, server_mac: str):
    # cached: the engine calls the detector again for every packet of a flow, and a
    # fleet of sandboxes offers few distinct algorithm lists (bounded, pure)
    cipher = _negotiate(client_enc, server_enc)
    if cipher not in _CIPHERS:
        return None
    block, tag = _CIPHERS[cipher]
    if tag:
        return block, tag, True
    mac = _negotiate(client_mac, server_mac)
    if not mac:
        return None
    etm = mac.endswith("-etm@openssh.com")
    size = _MACS.get(mac.replace("-etm@openssh.com", "@openssh.com" if mac.startswith("umac") else "")
                     if etm else mac)
    return (block, size, etm) if size else None


def _payload_range(size: int, framing: tuple[int, int, bool]) -> tuple[int, int] | None:
    """Payload bytes of ONE packet of `size` bytes with minimal padding (OpenSSH's), or None if impossible."""
    block, trailer, outside = framing
    aligned = size - trailer - (4 if outside else 0)    # what the block alignment covers
    padded = aligned - (0 if outside else 4)            # padding_length byte + payload + padding
    if padded < 1 + 1 + 4 or aligned % block:
        return None
    return max(1, padded - 1 - (block + 3)), padded - 1 - 4


def _smallest_packet(framing: tuple[int, int, bool]) -> int:
    """Size of a packet with a 1-byte payload (minimal padding): USERAUTH_SUCCESS, REQUEST_SUCCESS."""
    block, trailer, outside = framing
    aligned = 1 + 1 + 4 + (0 if outside else 4)
    aligned = -(-aligned // block) * block
    return aligned + trailer + (4 if outside else 0)


def _auth_end(pkts: list, down: tuple[int, int, bool]) -> int | None:
    """Index of SSH_MSG_USERAUTH_SUCCESS in the encrypted packets, or None.

    It is the first server packet of the smallest possible size (SERVICE_ACCEPT,
    USERAUTH_FAILURE and PK_OK carry names and keys) after at least two client packets
    (the service request and an authentication request). OpenSSH's sshd sends it from
    its pre-auth process, so it never shares a TCP segment with post-auth messages.
    """
    smallest = _smallest_packet(down)
    client_pkts = 0
    for i, (_, d, n) in enumerate(pkts):
        if d == 0:
            client_pkts += 1
        elif client_pkts >= 2 and n == smallest:
            return i
    return None


def _login_answers(pkts: list) -> list[float]:
    """How long the server took to answer each client round of the login (seconds)."""
    answers, asked = [], None
    for ts, d, _ in pkts:
        if d == 0:
            asked = ts if asked is None else asked
        elif asked is not None:
            answers.append(ts - asked)
            asked = None
    return answers


def _login_rounds(burst: list, fastest: float) -> int:
    """Client rounds in the burst after USERAUTH_SUCCESS.

    A round is what the client sends before it needs an answer. A client packet starts
    a new round only after the server answered the round: a server packet that came at
    least a round trip after the round began (half the fastest login answer, at least
    1 ms). OpenSSH's sshd sends its post-login notices (EXT_INFO, hostkeys-00) unasked,
    right after USERAUTH_SUCCESS: they reach the gateway within that time of the
    client's first request, however many segments they take and however late a loaded
    client sends its second request of the same round.
    """
    rounds, start, answered = 0, None, False
    later = max(_ROUND_MIN, fastest / 2)
    for ts, d, _ in burst:
        if d == 1:
            answered = answered or (start is not None and ts - start >= later)
        elif start is None or answered:
            rounds += 1
            start, answered = ts, False
    return rounds


def _tunnel_only(pkts: list, up, down) -> dict | None:
    """The shape of a session that carries forwarded connections only (`ssh -N`), or None.

    After authentication an OpenSSH client that wants a shell, a command, scp, sftp or
    git opens a "session" channel and must wait for its confirmation before sending the
    channel request (pty-req/env/shell/exec/subsystem): two client rounds back to back.
    With -N it sends only global requests (tcpip-forward for -R, no-more-sessions) in a
    single round and then waits. Forwarded connections come later, each after an idle
    gap, as a CHANNEL_OPEN of 40+ payload bytes answered by a packet that can hold an
    OPEN_CONFIRMATION (17 bytes): opened by the server (forwarded-tcpip: an `ssh -R`
    listener) or by the client (direct-tcpip: -L / -D).
    """
    if not pkts or pkts[-1][0] - pkts[0][0] < _TUNNEL_IDLE_MIN:
        return None                   # no idle gap yet, nothing to judge (most calls of a flow)
    end = _auth_end(pkts, down)
    if end is None:
        return None
    # the login's answers measure the round-trip time and the load: the slowest bounds
    # the idle and answer thresholds, the fastest tells an answer from the client's pace
    answers = _login_answers(pkts[:end + 1])
    if not answers:
        return None
    slowest = min(max(answers), _RTT_CAP)
    idle = max(_TUNNEL_IDLE_MIN, 4 * slowest)
    answer = max(_TUNNEL_ANSWER_MIN, 3 * slowest)
    bursts: list[list] = []
    for p in pkts[end + 1:]:
        if not bursts or p[0] - bursts[-1][-1][0] >= idle:
            bursts.append([])
        bursts[-1].append(p)
    if len(bursts) < 2:
        return None
    rounds = _login_rounds(bursts[0], min(answers))
    if rounds != 1:
        return None
    opened = [0, 0]                       # channel opens by the client (local), by the server (reverse)
    for burst in bursts[1:]:
        ts0, d0, n0 = burst[0]
        r = _payload_range(n0, up if d0 == 0 else down)
        if r is None or r[0] < _OPEN_MIN_PAYLOAD or len(burst) < 3:
            continue
        reply = next((p for p in burst[1:] if p[1] != d0), None)
        if reply is None or reply[0] - ts0 > answer:
            continue
        held = _payload_range(reply[2], down if d0 == 0 else up)
        if held is not None and held[1] >= _CONFIRM_PAYLOAD:
            opened[d0] += 1
    if not any(opened):
        return None
    return {"login_rounds": rounds, "client_opened": opened[0], "server_opened": opened[1],
            "idle_gap": round(idle, 3)}


# -- the detector ------------------------------------------------------------------

class SshDetector:
    name = "ssh"
    protocols = frozenset({6})
    max_bytes = MAX_BYTES

    def inspect(self, view: StreamView) -> InspectResult:
        to_server, to_client = view.to_server, view.to_client
        wrapper = None
        if to_server.startswith(_HTTP_METHODS) or to_client.startswith(b"HTTP/"):
            # one lookup of the shared walk for both helpers (a pure parse: the same answer)
            walked = exchange(view, to_server, to_client)
            unwrapped = _unwrap_http(view, walked)
            if unwrapped is None:
                # an HTTP exchange that has not (yet) switched protocols: wait while a later
                # request of the connection may still do it
                if len(to_server) >= self.max_bytes or view.closed_to_server or not _http_more(view, walked):
                    return NO_MATCH
                return NEED_MORE
            wrapper, to_server, to_client = unwrapped
        client = _parse_side(to_server, allow_pre_lines=False)
        server = _parse_side(to_client, allow_pre_lines=True)
        if client.state == "no" and server.state != "banner":
            # the initiator may be the one that sent pre-banner lines (reversed roles)
            client = _parse_side(to_server, allow_pre_lines=True)
        if "banner" not in (client.state, server.state):
            if client.state == "no" or server.state == "no":
                return NO_MATCH
            if (view.closed_to_server and view.closed_to_client) or \
                    len(to_server) >= self.max_bytes or len(to_client) >= self.max_bytes:
                return NO_MATCH
            return NEED_MORE
        if "no" in (client.state, server.state) and not _one_sided_ok(client, server, to_server, to_client):
            return NO_MATCH

        facts: dict = {}
        evidence: dict = {}
        for role, side in (("client", client), ("server", server)):
            if side.state == "banner":
                facts["ssh.%s_banner" % role] = side.banner
                facts["ssh.%s_software" % role] = _software(side.banner)
                evidence["%s_banner" % role] = side.banner
        detections = [Detection("ssh", "ssh.session", evidence)]

        reversed_roles = False
        if client.kex_msgs or server.kex_msgs:
            c_first = client.kex_msgs[:1]
            s_first = server.kex_msgs[:1]
            reversed_roles = bool(set(c_first) & SERVER_ONLY_KEX or set(s_first) & CLIENT_ONLY_KEX)
            if c_first and s_first:
                facts["ssh.kex_first"] = {"client": c_first[0], "server": s_first[0]}
            if reversed_roles and view.initiator_known:
                detections.append(Detection("reverse_tunnel", "ssh.role_reversal", {
                    "initiator_sent": client.kex_msgs[:4], "acceptor_sent": server.kex_msgs[:4],
                    "initiator_banner": client.banner}))
        if client.kexinit:
            s = hassh_string(client.kexinit, server=False)
            facts["ssh.hassh_string"], facts["ssh.hassh"] = s, _md5(s)
            facts["ssh.hostkey_algorithms_client"] = client.kexinit[1]
        if server.kexinit:
            s = hassh_string(server.kexinit, server=True)
            facts["ssh.hassh_server_string"], facts["ssh.hassh_server"] = s, _md5(s)
            facts["ssh.hostkey_algorithms_server"] = server.kexinit[1]
        if reversed_roles:
            facts["ssh.roles_reversed"] = True
        if wrapper is not None:
            facts["ssh.wrapper"] = wrapper
            sig = "ssh.over_websocket" if wrapper == "websocket" else "ssh.over_http"
            detections.append(Detection("tunnel", sig, {"wrapper": wrapper}))

        # The engine keeps the first value of a fact, so the size-derived facts, which
        # grow with the flow, are only set on the last call (the detections are set as
        # soon as they are found: the engine de-duplicates them).
        done = (view.closed_to_server and view.closed_to_client) or \
            max(len(view.to_server), len(view.to_client)) >= self.max_bytes
        if wrapper is None:
            pkts = _encrypted_packets(view.sizes, client, server)
            nested = _nested_kex(pkts) if pkts else None
            episodes = _server_initiated(pkts) if pkts else 0
            if nested == 1:
                detections.append(Detection("reverse_tunnel", "ssh.reverse_forward_suspected",
                                            {"shape": "nested_kex_from_server"}, 0.6))
            elif nested == 0:
                detections.append(Detection("tunnel", "ssh.nested_kex", {"shape": "nested_kex_from_client"}, 0.5))
            if episodes >= 2 and nested != 1:
                detections.append(Detection("reverse_tunnel", "ssh.reverse_forward_suspected",
                                            {"shape": "server_initiated", "episodes": episodes}, 0.4))
            if nested is not None:
                facts["ssh.nested_kex"] = "server" if nested == 1 else "client"
            tunnel = _tunnel_shape(pkts, client, server, reversed_roles) if pkts else None
            if tunnel is not None and tunnel["server_opened"]:
                detections.append(Detection("reverse_tunnel", "ssh.tunnel_only_reverse", tunnel, 0.6))
            elif tunnel is not None:
                detections.append(Detection("tunnel", "ssh.tunnel_only", tunnel, 0.5))
            if tunnel is not None and done:
                facts["ssh.tunnel_only"] = "reverse" if tunnel["server_opened"] else "local"
            if pkts and done:
                facts["ssh.encrypted_pkts"] = [sum(1 for p in pkts if p[1] == 0),
                                               sum(1 for p in pkts if p[1] == 1)]
                facts["ssh.server_initiated"] = episodes

        status = Status.MATCH if done else Status.NEED_MORE
        return InspectResult(status, tuple(detections), "ssh", facts)


def _tunnel_shape(pkts: list, client: _Side, server: _Side, reversed_roles: bool) -> dict | None:
    """_tunnel_only with the framing of each direction from the two KEXINITs (normal roles only)."""
    if reversed_roles or not client.kexinit or not server.kexinit:
        return None
    up = _framing(client.kexinit, server.kexinit, to_server=True)
    down = _framing(client.kexinit, server.kexinit, to_server=False)
    if up is None or down is None:
        return None
    return _tunnel_only(pkts, up, down)


def _one_sided_ok(client: _Side, server: _Side, to_server: bytes, to_client: bytes) -> bool:
    """One side has a banner, the other does not: SSH only if the other side is not another protocol.

    A server that answers garbage with its banner and "Protocol mismatch." is still an
    SSH server, but a flow that speaks HTTP to it is not an SSH session: require that
    the other side sent nothing but blank lines (someone pressing Enter in nc).
    """
    other = to_client if client.state == "banner" else to_server
    return not other.strip()
