"""SSH detector: banners, HASSH against published values, role reversal and reverse forwarding
with real OpenSSH sessions on loopback, SSH inside HTTP/WebSocket, prefixes and fuzz."""
from __future__ import annotations

import hashlib
import os
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.ssh import SshDetector, hassh_string

try:
    from protocols_pcap import SHARED_PCAPS, assert_consistent_prefixes, read_flows
    import sshlab
except ImportError:  # collected as a package module
    from tests.inspect.protocols_pcap import SHARED_PCAPS, assert_consistent_prefixes, read_flows
    from tests.inspect import sshlab

DET = SshDetector()
V4 = b"\x0a\x00\x00\x01"


def view(to_server: bytes, to_client: bytes, *, closed=False, initiator_known=True, sizes=()) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 2222, to_server, to_client, closed_to_server=closed,
                      closed_to_client=closed, sizes=sizes, initiator_known=initiator_known)


def sigs(result) -> set:
    return {(d.category, d.signature) for d in result.detections}


# -- building SSH messages the way RFC 4253 lays them out (for synthetic variants) ------

def name_list(names: str) -> bytes:
    return struct.pack(">I", len(names)) + names.encode()


def packet(payload: bytes, block: int = 8) -> bytes:
    pad = block - (len(payload) + 5) % block
    pad += block if pad < 4 else 0
    return struct.pack(">IB", len(payload) + pad + 1, pad) + payload + b"\x00" * pad


KEX_LISTS = ["curve25519-sha256,diffie-hellman-group14-sha256", "ssh-ed25519,rsa-sha2-512",
             "aes128-ctr,aes256-gcm@openssh.com", "aes128-ctr,chacha20-poly1305@openssh.com",
             "hmac-sha2-256,umac-64@openssh.com", "hmac-sha2-512", "none,zlib@openssh.com", "none", "", ""]


def kexinit(lists=KEX_LISTS) -> bytes:
    body = b"\x14" + b"C" * 16 + b"".join(name_list(x) for x in lists) + b"\x00" + b"\x00" * 4
    return packet(body)


def test_hassh_string_follows_the_salesforce_definition():
    # client: kex;enc c2s;mac c2s;cmp c2s - server: kex;enc s2c;mac s2c;cmp s2c
    assert hassh_string(KEX_LISTS, server=False) == \
        "curve25519-sha256,diffie-hellman-group14-sha256;aes128-ctr,aes256-gcm@openssh.com;" \
        "hmac-sha2-256,umac-64@openssh.com;none,zlib@openssh.com"
    assert hassh_string(KEX_LISTS, server=True) == \
        "curve25519-sha256,diffie-hellman-group14-sha256;aes128-ctr,chacha20-poly1305@openssh.com;" \
        "hmac-sha2-512;none"


def test_banners_and_hassh_from_synthetic_kexinit():
    c = b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n" + kexinit()
    s = b"SSH-2.0-dropbear_2022.83\r\n" + kexinit()
    r = DET.inspect(view(c, s))
    assert r.app_proto == "ssh" and ("ssh", "ssh.session") in sigs(r)
    assert r.facts["ssh.client_banner"] == "SSH-2.0-OpenSSH_9.2p1 Debian-2"
    assert r.facts["ssh.server_software"] == "dropbear_2022.83"
    assert r.facts["ssh.hassh"] == hashlib.md5(hassh_string(KEX_LISTS, False).encode()).hexdigest()
    assert r.facts["ssh.hassh_server"] == hashlib.md5(hassh_string(KEX_LISTS, True).encode()).hexdigest()


def test_server_pre_banner_lines_are_tolerated_and_ssh_1_99():
    s = b"Welcome to the jump host\r\nAuthorized use only\r\nSSH-2.0-OpenSSH_8.9\r\n"
    r = DET.inspect(view(b"SSH-1.99-Cisco-1.25\r\n", s))
    assert r.facts["ssh.server_banner"] == "SSH-2.0-OpenSSH_8.9"
    assert r.facts["ssh.client_banner"] == "SSH-1.99-Cisco-1.25"


@pytest.mark.parametrize("c,s", [
    (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"SSH-2.0-OpenSSH_9.2\r\nInvalid SSH identification string.\r\n"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", b""),
    (b"SSH-2.0", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    (b"hello world\n", b"220 smtp ESMTP\r\n"),
])
def test_other_protocols_are_not_ssh_sessions(c, s):
    r = DET.inspect(view(c, s, closed=True))
    assert ("ssh", "ssh.session") not in sigs(r)


def test_role_reversal_from_kex_messages_only_when_the_initiator_is_known():
    # the connecting side answers with KEX_ECDH_REPLY (31): it is the SSH server
    c = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit() + packet(b"\x1f" + b"K" * 200)
    s = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit() + packet(b"\x1e" + b"Q" * 32)
    assert ("reverse_tunnel", "ssh.role_reversal") in sigs(DET.inspect(view(c, s)))
    assert ("reverse_tunnel", "ssh.role_reversal") not in sigs(DET.inspect(view(c, s, initiator_known=False)))
    normal = DET.inspect(view(s, c))
    assert ("reverse_tunnel", "ssh.role_reversal") not in sigs(normal)
    assert normal.facts["ssh.kex_first"] == {"client": 30, "server": 31}


# -- SSH inside HTTP upgrade / WebSocket ----------------------------------------------

def ws_frames(data: bytes, masked: bool, size: int = 300) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        chunk = data[i:i + size]
        head = bytes([0x82])
        n = len(chunk)
        ln = bytes([n | (0x80 if masked else 0)]) if n < 126 else bytes([126 | (0x80 if masked else 0)]) + struct.pack(">H", n)
        if masked:
            key = os.urandom(4)
            chunk = key + bytes(b ^ key[j & 3] for j, b in enumerate(chunk))
        out += head + ln + chunk
    return out


UPGRADE_REQ = (b"GET /v1/events HTTP/1.1\r\nHost: tunnel.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
UPGRADE_RESP = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def test_ssh_inside_websocket_frames_is_found_with_its_hassh():
    c = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit()
    s = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit()
    plain = DET.inspect(view(c, s))
    r = DET.inspect(view(UPGRADE_REQ + ws_frames(c, masked=True), UPGRADE_RESP + ws_frames(s, masked=False)))
    assert {("ssh", "ssh.session"), ("tunnel", "ssh.over_websocket")} <= sigs(r)
    assert r.facts["ssh.hassh"] == plain.facts["ssh.hassh"]


def test_ssh_after_connect_and_raw_upgrade():
    c = b"SSH-2.0-OpenSSH_9.2\r\n"
    s = b"SSH-2.0-OpenSSH_9.2\r\n"
    r = DET.inspect(view(b"CONNECT 10.0.0.5:22 HTTP/1.1\r\nHost: 10.0.0.5:22\r\n\r\n" + c,
                         b"HTTP/1.1 200 Connection established\r\n\r\n" + s))
    assert ("tunnel", "ssh.over_http") in sigs(r)
    r = DET.inspect(view(b"GET / HTTP/1.1\r\nUpgrade: ssh\r\n\r\n" + c, b"HTTP/1.1 101 Switching\r\n\r\n" + s))
    assert ("tunnel", "ssh.over_http") in sigs(r)
    r = DET.inspect(view(UPGRADE_REQ + ws_frames(b"hello", True), UPGRADE_RESP + ws_frames(b"world", False),
                         closed=True))
    assert not r.detections


# -- real captures --------------------------------------------------------------------

def shared(name):
    path = SHARED_PCAPS / name
    if not path.is_file():
        pytest.skip("../shared/pcaps/%s is not present" % name)
    return path


def ssh_flow(name):
    for f in read_flows(shared(name)):
        if f.proto == 6 and f.view().to_server.startswith(b"SSH-"):
            return f.view()
    raise AssertionError("no SSH flow in %s" % name)


def test_hassh_matches_suricata_verify_published_values():
    # suricata-verify tests/ssh-hassh/test.rules and test.yaml expect exactly these
    r = DET.inspect(ssh_flow("sv__ssh-hassh.pcap"))
    assert r.facts["ssh.hassh"] == "2dd6531c7e89d3c925db9214711be76a"
    assert r.facts["ssh.hassh_server"] == "6832f1ce43d4397c2c0a3e2f8c94334e"
    assert r.facts["ssh.hassh_server_string"].endswith(";none,zlib@openssh.com")
    assert "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com" in r.facts["ssh.hassh_string"]


def test_captured_session_prefixes_agree_with_the_full_stream():
    v = ssh_flow("sv__ssh-hassh.pcap")
    final = assert_consistent_prefixes(DET, v)
    assert final.status is Status.MATCH


def test_gex_and_cisco_sessions():
    r = DET.inspect(ssh_flow("joy__ssh-gex-sha256.pcap"))
    assert r.facts["ssh.kex_first"] == {"client": 34, "server": 31}
    r = DET.inspect(ssh_flow("sv__bypass-ssh-enabled.pcap"))
    assert r.facts["ssh.client_banner"].startswith("SSH-1.99-")


# -- real OpenSSH on loopback -----------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    reason = sshlab.available()
    if reason:
        pytest.skip(reason)
    with tempfile.TemporaryDirectory(prefix="egp-ssh-") as d, sshlab.SshLab(Path(d)) as lab:
        relay = sshlab.Relay(lab.port)
        lab.relay = relay
        try:
            yield lab
        finally:
            relay.close()


def relayed(lab, *args, timeout=20):
    before = len(lab.relay.recordings)
    r = lab.run(lab.ssh(lab.relay.port, *args), timeout=timeout)
    assert r.returncode == 0, r.stderr[-300:]
    time.sleep(0.2)
    assert len(lab.relay.recordings) == before + 1
    return lab.relay.recordings[-1]


def test_real_openssh_session_is_ssh_and_nothing_else(lab):
    rec = relayed(lab, "root@127.0.0.1", "echo one; sleep 1.2; echo two; sleep 1.2; echo three")
    r = DET.inspect(rec.view())
    assert sigs(r) == {("ssh", "ssh.session")}
    assert r.facts["ssh.client_software"].startswith("OpenSSH_")
    assert len(r.facts["ssh.hassh"]) == 32
    assert r.facts["ssh.encrypted_pkts"][0] > 3
    assert_consistent_prefixes(DET, rec.view(closed=False), fine=120)


def test_role_reversal_with_sshd_on_the_connecting_side(lab):
    rec = sshlab.reversed_session(lab)
    r = DET.inspect(rec.view())
    assert ("reverse_tunnel", "ssh.role_reversal") in sigs(r)
    assert r.facts["ssh.kex_first"]["client"] in (31, 33)


def test_ssh_through_a_reverse_forward_is_seen_as_nested_kex_from_the_server(lab):
    rport = sshlab.free_port()
    outer = lab.start(lab.ssh(lab.relay.port, "-N", "-o", "ExitOnForwardFailure=yes",
                              "-R", "%d:127.0.0.1:%d" % (rport, lab.port), "root@127.0.0.1"))
    try:
        sshlab.wait_port(rport, 10)
        time.sleep(1.2)
        inner = lab.run(lab.ssh(rport, "root@127.0.0.1", "echo inner"))
        assert inner.stdout == b"inner\n"
        time.sleep(0.3)
    finally:
        lab.stop(outer)
    time.sleep(0.2)
    rec = lab.relay.recordings[-1]
    r = DET.inspect(rec.view())
    assert ("reverse_tunnel", "ssh.reverse_forward_suspected") in sigs(r)
    assert r.facts["ssh.nested_kex"] == "server"
    # and through the engine, from packets (its reassembly budget and size list)
    try:
        from protocols_pcap import engine_replay
    except ImportError:
        from tests.inspect.protocols_pcap import engine_replay
    [event] = engine_replay(bytes(rec.data[0]), bytes(rec.data[1]), rec.sizes)
    assert "reverse_tunnel" in {d["category"] for d in event["detections"]}


def test_proxy_jump_is_a_nested_kex_from_the_client_not_a_reverse_tunnel(lab):
    jump = " ".join(lab.ssh(lab.relay.port, "-W", "%h:%p", "root@127.0.0.1"))
    r = lab.run(lab.ssh(lab.port, "-o", "ProxyCommand=" + jump, "root@127.0.0.1", "echo jumped"))
    assert r.stdout == b"jumped\n", r.stderr[-300:]
    time.sleep(0.2)
    res = DET.inspect(lab.relay.recordings[-1].view())
    assert ("tunnel", "ssh.nested_kex") in sigs(res)
    assert not any(d.category == "reverse_tunnel" for d in res.detections)


# -- fuzz ---------------------------------------------------------------------------

SAMPLE_C = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit() + packet(b"\x1e" + b"Q" * 32) + packet(b"\x15")
SAMPLE_S = b"SSH-2.0-OpenSSH_9.2\r\n" + kexinit() + packet(b"\x1f" + b"K" * 100) + packet(b"\x15")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600), st.binary(max_size=600), st.booleans())
def test_fuzz_random_bytes_never_raise(c, s, closed):
    r = DET.inspect(view(c, s, closed=closed))
    assert r.status in (Status.MATCH, Status.NO_MATCH, Status.NEED_MORE)


@settings(max_examples=200, deadline=None)
@given(st.integers(0, len(SAMPLE_C) - 1), st.integers(0, 255), st.integers(0, len(SAMPLE_S)),
       st.lists(st.tuples(st.floats(0, 100), st.integers(-1, 2), st.integers(-5, 3000)), max_size=20))
def test_fuzz_mutated_sessions_never_raise(pos, byte, cut, sizes):
    c = SAMPLE_C[:pos] + bytes([byte]) + SAMPLE_C[pos + 1:]
    r = DET.inspect(view(c, SAMPLE_S[:cut], sizes=tuple(sizes)))
    assert r.status in (Status.MATCH, Status.NO_MATCH, Status.NEED_MORE)
    # a non-session is never a reverse tunnel
    if ("ssh", "ssh.session") not in sigs(r):
        assert not r.detections


def test_reversed_session_through_the_engine(lab):
    """The same real bytes as TCP packets through the engine: detections reach the flow event."""
    try:
        from protocols_pcap import engine_replay
    except ImportError:
        from tests.inspect.protocols_pcap import engine_replay
    rec = sshlab.reversed_session(lab)
    [event] = engine_replay(bytes(rec.data[0]), bytes(rec.data[1]), rec.sizes)
    cats = {(d["category"], d["signature"]) for d in event["detections"]}
    assert {("ssh", "ssh.session"), ("reverse_tunnel", "ssh.role_reversal")} <= cats
    assert event["app_proto"] == "ssh"
    plain = relayed(lab, "root@127.0.0.1", "true")
    [event] = engine_replay(bytes(plain.data[0]), bytes(plain.data[1]), plain.sizes)
    assert {d["category"] for d in event["detections"]} == {"ssh"}


# -- tunnel-only sessions (ssh -N) --------------------------------------------------------

from egress.inspect.ssh import _framing, _payload_range, _smallest_packet  # noqa: E402

CHACHA = (8, 16, True)


@pytest.mark.parametrize("enc,mac,smallest", [
    ("chacha20-poly1305@openssh.com", "hmac-sha2-256", 28),      # 4 + 8 + 16
    ("aes128-gcm@openssh.com", "hmac-sha2-256", 36),             # 4 + 16 + 16
    ("aes128-ctr", "hmac-sha2-256-etm@openssh.com", 52),         # 4 + 16 + 32
    ("aes256-ctr", "hmac-sha2-512", 80),                         # 16 (length inside) + 64
    ("aes128-ctr", "umac-64-etm@openssh.com", 28),               # 4 + 16 + 8
])
def test_framing_of_the_negotiated_cipher(enc, mac, smallest):
    lists = list(KEX_LISTS)
    lists[2] = lists[3] = enc + ",aes128-ctr"
    lists[4] = lists[5] = mac
    framing = _framing(lists, lists, to_server=True)
    assert _smallest_packet(framing) == smallest
    assert _payload_range(smallest, framing)[0] == 1


def test_unknown_framing_or_reversed_roles_make_no_tunnel_claim():
    from egress.inspect.ssh import _Side, _tunnel_shape
    pkts = transcript(LOGIN + " " + N_R_OPEN, FORWARDED)
    side = _Side()
    side.kexinit = list(KEX_LISTS)
    side.kexinit[2] = side.kexinit[3] = "chacha20-poly1305@openssh.com"
    assert _tunnel_shape(pkts, side, side, reversed_roles=False)["server_opened"] == 1
    assert _tunnel_shape(pkts, side, side, reversed_roles=True) is None
    side.kexinit[2] = side.kexinit[3] = "aes128-ocb@example.org"      # framing unknown: no sizes to read
    assert _tunnel_shape(pkts, side, side, reversed_roles=False) is None


def test_payload_ranges_match_openssh_messages_under_chacha():
    # sizes seen from OpenSSH 9.2: USERAUTH_SUCCESS 28, session open 52, direct-tcpip open 92
    assert _payload_range(28, CHACHA) == (1, 3)
    lo, hi = _payload_range(52, CHACHA)
    assert lo <= 24 <= hi < 40                   # CHANNEL_OPEN "session": 24 bytes
    lo, hi = _payload_range(92, CHACHA)
    assert lo <= 63 <= hi and lo >= 40           # direct-tcpip 127.0.0.1 from 127.0.0.1: 63 bytes
    assert _payload_range(30, CHACHA) is None    # not a multiple of the block


# Encrypted packets (chacha) of real OpenSSH 9.2 sessions as recorded: client '>' / server '<',
# size, and "@ms" after the phase's start where the timing matters (else 1 ms apart).
LOGIN = ">44@0 <44@0.1 >60@0.2 <44@0.8 >140@1 <100@8 >308@9 <28@24"
SESSION_OPEN = ">112 <412 <44@70 >112@70.2 <72@71 >36@71.1"   # open session; notices; confirm (40 ms
                                                                # later: Nagle); exec; success + data
N_L_OPEN = ">60 <264 <148@70"                # no-more-sessions; notices: then quiet
N_R_OPEN = ">128 <412 <28"                   # tcpip-forward + no-more-sessions; notices; REQUEST_SUCCESS
N_R_SPLIT = ">68@24.1 <412@24.3 >60@24.4 <28@24.5"   # the same, the client's two requests around the notices
N_R_SPLIT_2 = ">68@24.1 <264@24.3 <148@24.4 >60@24.6 <28@24.7"   # around notices in two segments
N_R_SLOW = ">68@24.1 <412@24.2 >60@26.5 <28@26.6"     # a loaded client: its second request 2.4 ms later
SESSION_OPEN_2 = ">112@24.1 <264@24.3 <148@24.4 <44@66 >112@66.2 <72@67 >36@67.1"   # notices in two segments
FORWARDED = "<92 >44 <44 >44 <44 >44 >36 <72 >36"    # server opens forwarded-tcpip, echo, close
DIRECT = ">92 <44 >44 <44 >44 <44 >36 <72 >36"       # client opens direct-tcpip, echo, close


def transcript(*phases: str, gap: float = 3.0, scale: float = 1.0) -> list:
    """Encrypted packets as (ts, dir, len); phases `gap` s apart; `scale` stretches the time within phases."""
    out, t = [], 0.0
    for k, phase in enumerate(phases):
        start = t + (gap if k else 0.0)
        for n, tok in enumerate(phase.split()):
            size, _, at = tok[1:].partition("@")
            t = start + float(at) / 1000 * scale if at else (start if n == 0 else t + 0.001 * scale)
            out.append((t, 0 if tok[0] == ">" else 1, int(size)))
    return out


def tunnel_of(pkts):
    from egress.inspect.ssh import _tunnel_only
    return _tunnel_only(pkts, CHACHA, CHACHA)


def test_tunnel_only_shapes_from_transcripts():
    rev = tunnel_of(transcript(LOGIN + " " + N_R_OPEN, FORWARDED, FORWARDED))
    assert rev["server_opened"] == 2 and rev["client_opened"] == 0 and rev["login_rounds"] == 1
    assert tunnel_of(transcript(LOGIN + " " + N_R_SPLIT, FORWARDED))["server_opened"] == 1
    # sshd's notices come unasked, before any answer could: however many segments they
    # take, and however late the client's second request, they do not end the round
    assert tunnel_of(transcript(LOGIN + " " + N_R_SPLIT_2, FORWARDED))["server_opened"] == 1
    assert tunnel_of(transcript(LOGIN + " " + N_R_SLOW, FORWARDED))["login_rounds"] == 1
    local = tunnel_of(transcript(LOGIN + " " + N_L_OPEN, DIRECT))
    assert local["client_opened"] == 1 and local["server_opened"] == 0
    # a session opens its channel in two client rounds: never tunnel-only, whatever follows
    assert tunnel_of(transcript(LOGIN + " " + SESSION_OPEN, FORWARDED, DIRECT)) is None
    assert tunnel_of(transcript(LOGIN + " " + SESSION_OPEN_2, FORWARDED, DIRECT)) is None
    # also from a server that sends no post-login notices (one answer, but a round trip later)
    assert tunnel_of(transcript(LOGIN + " >52 <44@30 >112@30.1 <72@31", FORWARDED)) is None
    # -N without any forwarded connection, or with only keepalives (27-byte requests): nothing to show
    assert tunnel_of(transcript(LOGIN + " " + N_R_OPEN)) is None
    assert tunnel_of(transcript(LOGIN + " " + N_L_OPEN, ">52 <28", ">52 <28")) is None
    # a command's late output answered by the client's EOF/CLOSE (not a confirmation)
    assert tunnel_of(transcript(LOGIN + " " + N_L_OPEN, "<160 >36 >60")) is None
    # no USERAUTH_SUCCESS-sized packet: no anchor, no claim
    assert tunnel_of(transcript(LOGIN.replace("<28", "<36") + " " + N_R_OPEN, FORWARDED)) is None


@pytest.mark.parametrize("scale", [1, 30, 100])
def test_tunnel_only_thresholds_follow_the_login_answers(scale):
    # a loaded or distant link: everything within a phase takes `scale` times longer
    # (the slowest login answer: 15 ms x scale); the idle gaps are 5 x that, or 3 s
    gap = max(3.0, 5 * 0.015 * scale)
    assert tunnel_of(transcript(LOGIN + " " + N_R_OPEN, FORWARDED, gap=gap, scale=scale))["server_opened"] == 1
    assert tunnel_of(transcript(LOGIN + " " + N_L_OPEN, DIRECT, gap=gap, scale=scale))["client_opened"] == 1
    assert tunnel_of(transcript(LOGIN + " " + SESSION_OPEN, FORWARDED, gap=gap, scale=scale)) is None
    # a pause shorter than 4 slowest answers is part of the conversation, not idleness
    if 4 * 0.015 * scale > 1.0:
        assert tunnel_of(transcript(LOGIN + " " + N_R_OPEN, FORWARDED, gap=3 * 0.015 * scale, scale=scale)) is None


# Real OpenSSH runs: tunnel-only sessions and the sessions they must not be confused with.
# Each scenario marks when it deliberately went idle; the recordings are judged with
# controlled idle gaps (Marks.retime: each idle period is exactly 3 s; sizes, order and
# the timing within a phase are as recorded, and the detector scales its thresholds by
# the login's answer times), so a slow machine cannot shorten an idle period below the
# threshold. The live timing is judged too and printed (pytest -s), not asserted.

CIPHERS = {
    "chacha": [],
    "aes-gcm": ["-c", "aes128-gcm@openssh.com"],
    "ctr-etm": ["-c", "aes128-ctr", "-m", "hmac-sha2-256-etm@openssh.com"],
    "ctr-hmac": ["-c", "aes256-ctr", "-m", "hmac-sha2-512"],
}
IDLE = 1.5


def _n_reverse(lab, echo, marks, opts):
    rport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-N", "-o", "ExitOnForwardFailure=yes",
                          "-R", "%d:127.0.0.1:%d" % (rport, echo.port), "root@127.0.0.1"))
    sshlab.wait_listen(rport)
    for _ in range(2):
        marks.idle(IDLE)
        sshlab.through_port(rport)
    marks.idle(0.3)
    return p


def _n_local(lab, echo, marks, opts):
    lport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-N", "-L", "%d:127.0.0.1:%d" % (lport, echo.port),
                          "root@127.0.0.1"))
    sshlab.wait_listen(lport)
    for _ in range(2):
        marks.idle(IDLE)
        sshlab.through_port(lport)
    marks.idle(0.3)
    return p


def _n_dynamic(lab, echo, marks, opts):
    dport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-N", "-D", "127.0.0.1:%d" % dport, "root@127.0.0.1"))
    sshlab.wait_listen(dport)
    for _ in range(2):
        marks.idle(IDLE)
        sshlab.through_socks(dport, echo.port)
    marks.idle(0.3)
    return p


def _n_local_at_once(lab, echo, marks, opts):
    lport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-N", "-L", "%d:127.0.0.1:%d" % (lport, echo.port),
                          "root@127.0.0.1"))
    sshlab.wait_listen(lport)
    sshlab.through_port(lport)           # a script using the forward right away: inside the login burst
    marks.idle(0.3)
    return p


def _n_reverse_unused(lab, echo, marks, opts):
    rport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-N", "-R", "%d:127.0.0.1:%d" % (rport, echo.port),
                          "root@127.0.0.1"))
    sshlab.wait_listen(rport)
    marks.idle(IDLE)
    return p


def _local_with_command(lab, echo, marks, opts):
    lport = sshlab.free_port()
    p = lab.start(lab.ssh(lab.relay.port, *opts, "-L", "%d:127.0.0.1:%d" % (lport, echo.port),
                          "root@127.0.0.1", "sleep 4"))
    sshlab.wait_listen(lport)
    for _ in range(2):
        marks.idle(IDLE)
        sshlab.through_port(lport)
    return p


def _interactive(lab, echo, marks, opts):
    p = subprocess.Popen(lab.ssh(lab.relay.port, *opts, "-tt", "root@127.0.0.1"), stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lab.procs.append(p)
    marks.idle(IDLE)
    for line in (b"echo hello\n", b"ls /\n", b"exit\n"):
        for ch in line:
            p.stdin.write(bytes([ch]))
            p.stdin.flush()
            time.sleep(0.05)
        marks.idle(IDLE)
    p.stdin.close()
    p.wait(10)
    return p


def _command(cmd, stdin=None, sleeps=0):
    def run(lab, echo, marks, opts):
        p = subprocess.Popen(cmd(lab, opts), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
        lab.procs.append(p)
        if stdin:
            p.stdin.write(stdin)
        p.stdin.close()
        for _ in range(sleeps):
            marks.idle(IDLE)
        p.wait(30)
        assert p.returncode == 0
        return p
    return run


def _opts(lab):
    return ["-i", str(lab.dir / "userkey"), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR"]


def _git_clone(lab, echo, marks, opts):
    d = lab.dir
    if not (d / "repo.git").exists():
        subprocess.run(["git", "init", "-q", "--bare", str(d / "repo.git")], check=True)
        subprocess.run(["git", "init", "-q", str(d / "work")], check=True)
        (d / "work" / "f").write_text("x" * 5000)
        subprocess.run(["git", "-C", str(d / "work"), "add", "f"], check=True)
        subprocess.run(["git", "-C", str(d / "work"), "-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm",
                        "m"], check=True)
        subprocess.run(["git", "-C", str(d / "work"), "push", "-q", str(d / "repo.git"), "HEAD:refs/heads/main"],
                       check=True, capture_output=True)
    target = d / ("clone%d" % len(lab.relay.recordings))
    env = dict(os.environ, GIT_SSH_COMMAND="ssh " + " ".join(_opts(lab) + opts))
    r = subprocess.run(["git", "clone", "-q", "ssh://root@127.0.0.1:%d%s" % (lab.relay.port, d / "repo.git"),
                        str(target)], env=env, capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr[-300:]


def _blob(lab):
    blob = lab.dir / "blob"
    if not blob.exists():
        blob.write_bytes(os.urandom(200_000))
    return blob


# name -> (run, ciphers, expected tunnel_only fact or None)
SCENARIOS = {
    "ssh -N -R, 2 connections": (_n_reverse, list(CIPHERS), "reverse"),
    "ssh -N -L, 2 connections": (_n_local, list(CIPHERS), "local"),
    "ssh -N -D, 2 SOCKS connections": (_n_dynamic, ["chacha", "aes-gcm"], "local"),
    # known misses (documented limits): nothing after the login burst to judge
    "ssh -N -L used at once (miss)": (_n_local_at_once, ["chacha"], None),
    "ssh -N -R never used (miss)": (_n_reverse_unused, ["chacha"], None),
    "ssh -L with a command": (_local_with_command, ["chacha"], None),
    "interactive, keystrokes": (_interactive, ["chacha", "ctr-etm"], None),
    "ssh host cmd": (_command(lambda lab, o: lab.ssh(lab.relay.port, *o, "root@127.0.0.1", "echo hi")),
                     list(CIPHERS), None),
    "ssh host cmd with pauses": (_command(lambda lab, o: lab.ssh(
        lab.relay.port, *o, "root@127.0.0.1", "for i in 1 2 3; do echo $i; sleep 1; done"), sleeps=2),
        ["chacha"], None),
    "ssh -T, commands on stdin": (_command(lambda lab, o: lab.ssh(lab.relay.port, *o, "-T", "root@127.0.0.1"),
                                           stdin=b"echo a\nsleep 1\necho b\nsleep 1\nls /\n", sleeps=2),
                                  ["chacha"], None),
    "scp": (_command(lambda lab, o: ["scp", *_opts(lab), *o, "-P", str(lab.relay.port), str(_blob(lab)),
                                     "root@127.0.0.1:%s" % (lab.dir / "copy")]), ["chacha", "aes-gcm"], None),
    "scp -O (legacy)": (_command(lambda lab, o: ["scp", "-O", *_opts(lab), *o, "-P", str(lab.relay.port),
                                                 str(_blob(lab)), "root@127.0.0.1:%s" % (lab.dir / "copy")]),
                        ["chacha"], None),
    "sftp": (_command(lambda lab, o: ["sftp", *_opts(lab), *o, "-P", str(lab.relay.port), "-b", "-",
                                      "root@127.0.0.1"],
                      stdin=b"ls /\nget /etc/services /dev/null\n"), ["chacha"], None),
    "git clone (git-upload-pack)": (_git_clone, ["chacha"], None),
}
CASES = [(name, cipher) for name, (_, ciphers, _) in SCENARIOS.items() for cipher in ciphers]


@pytest.fixture(scope="module")
def tunnel_runs(lab):
    """Every scenario once per cipher: name -> Recording, Marks."""
    echo = sshlab.EchoServer()
    runs = {}
    try:
        for name, cipher in CASES:
            run = SCENARIOS[name][0]
            before = len(lab.relay.recordings)
            marks = sshlab.Marks()
            p = run(lab, echo, marks, CIPHERS[cipher])
            if isinstance(p, subprocess.Popen):
                lab.stop(p)
            deadline = time.monotonic() + 5
            while len(lab.relay.recordings) == before and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.2)
            assert len(lab.relay.recordings) == before + 1, name
            runs[name, cipher] = (lab.relay.recordings[-1], marks)
    finally:
        echo.close()
    return runs


def tunnel_verdict(rec, sizes) -> tuple[str | None, set]:
    v = rec.view()
    v = StreamView(6, v.client_ip, v.client_port, v.server_ip, v.server_port, v.to_server, v.to_client,
                   closed_to_server=True, closed_to_client=True, sizes=tuple(sizes[:64]))
    r = DET.inspect(v)
    return r.facts.get("ssh.tunnel_only"), sigs(r)


@pytest.mark.parametrize("name,cipher", CASES)
def test_tunnel_only_on_real_openssh(tunnel_runs, name, cipher):
    rec, marks = tunnel_runs[name, cipher]
    expected = SCENARIOS[name][2]
    retimed = marks.retime(rec.sizes)
    verdict, found = tunnel_verdict(rec, retimed)
    # On a miss, what the detector was given: rare misses under load are to be studied
    assert verdict == expected, ("payload sizes (ts, direction, bytes)", [(round(t, 3), d, n) for t, d, n in retimed[:48]],
                                 "resumes", marks.times)
    if expected == "reverse":
        assert ("reverse_tunnel", "ssh.tunnel_only_reverse") in found
    elif expected == "local":
        assert ("tunnel", "ssh.tunnel_only") in found and not any(c == "reverse_tunnel" for c, _ in found)
    else:
        assert not {("reverse_tunnel", "ssh.tunnel_only_reverse"), ("tunnel", "ssh.tunnel_only")} & found
        assert not any(c == "reverse_tunnel" for c, _ in found)
    # as the engine calls it, packet by packet: no prefix claims what the whole does not
    try:
        from protocols_pcap import growing_views
    except ImportError:
        from tests.inspect.protocols_pcap import growing_views
    v = rec.view()
    whole = StreamView(6, v.client_ip, v.client_port, v.server_ip, v.server_port, v.to_server, v.to_client,
                       sizes=tuple(marks.retime(rec.sizes)[:64]))
    for prefix in growing_views(whole, fine=0):
        assert sigs(DET.inspect(prefix)) <= found | {("reverse_tunnel", "ssh.reverse_forward_suspected")}


def test_tunnel_only_table(tunnel_runs, capsys):
    """The detection / false-positive table, with controlled and with live timing (printed)."""
    rows = []
    for (name, cipher), (rec, marks) in tunnel_runs.items():
        controlled = tunnel_verdict(rec, marks.retime(rec.sizes))[0]
        live = tunnel_verdict(rec, rec.sizes)[0]
        rows.append((name, cipher, SCENARIOS[name][2], controlled, live))
    with capsys.disabled():
        print("\nscenario | cipher | expected | controlled timing | live timing")
        for row in rows:
            print(" | ".join(str(x) for x in row))
    assert all(r[2] == r[3] for r in rows)


def test_reverse_forward_through_the_engine_with_controlled_timing(tunnel_runs):
    """The -N -R session as TCP packets through the engine (its reassembly and size budgets)."""
    try:
        from protocols_pcap import engine_replay
    except ImportError:
        from tests.inspect.protocols_pcap import engine_replay
    rec, marks = tunnel_runs["ssh -N -R, 2 connections", "chacha"]
    sizes = marks.retime(rec.sizes)
    # the older server-initiated heuristic sees the same two episodes
    assert DET.inspect(StreamView(6, V4, 1, V4, 2, bytes(rec.data[0][:8192]), bytes(rec.data[1][:8192]),
                                  closed_to_server=True, closed_to_client=True,
                                  sizes=tuple(sizes[:64]))).facts["ssh.server_initiated"] >= 2
    [event] = engine_replay(bytes(rec.data[0]), bytes(rec.data[1]), sizes)
    found = {(d["category"], d["signature"]) for d in event["detections"]}
    assert ("reverse_tunnel", "ssh.tunnel_only_reverse") in found
    rec, marks = tunnel_runs["ssh host cmd", "chacha"]
    [event] = engine_replay(bytes(rec.data[0]), bytes(rec.data[1]), marks.retime(rec.sizes))
    assert {d["category"] for d in event["detections"]} == {"ssh"}


def test_engine_replay_keeps_the_recorded_spacing(monkeypatch):
    """The harness above must not stretch a burst: the client's two -N requests around
    sshd's notices arrive 0.1 ms apart, and 1 ms per packet made them two rounds (a CI miss)."""
    try:
        from protocols_pcap import engine_replay
    except ImportError:
        from tests.inspect.protocols_pcap import engine_replay
    views = []
    inspect = SshDetector.inspect
    monkeypatch.setattr(SshDetector, "inspect", lambda self, view: views.append(view) or inspect(self, view))
    up, down = b"SSH-2.0-OpenSSH_9.2\r\n" + b"u" * 128, b"SSH-2.0-OpenSSH_9.2\r\n" + b"d" * 440
    sizes = [(10.0, 0, 21), (10.0171, 1, 21), (10.0250, 0, 68), (10.0251, 1, 412), (10.0252, 0, 60),
             (10.0253, 1, 28)]
    engine_replay(up, down, sizes)
    seen = views[-1].sizes
    assert [(d, n) for _, d, n in seen] == [(d, n) for _, d, n in sizes]
    for (t, _, _), (t_seen, _, _) in zip(sizes, seen):
        assert t_seen - seen[0][0] == pytest.approx(t - sizes[0][0], abs=20e-6)
