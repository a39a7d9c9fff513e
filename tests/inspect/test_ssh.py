"""SSH detector: banners, HASSH against published values, role reversal and reverse forwarding
with real OpenSSH sessions on loopback, SSH inside HTTP/WebSocket, prefixes and fuzz."""
from __future__ import annotations

import hashlib
import os
import socket
import struct
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


def test_server_opened_channels_of_a_reverse_forward(lab):
    echo = socket.socket()
    echo.bind(("127.0.0.1", 0))
    echo.listen(4)

    def serve():
        while True:
            try:
                c, _ = echo.accept()
            except OSError:
                return
            with c:
                while data := c.recv(4096):
                    c.sendall(data)

    threading.Thread(target=serve, daemon=True).start()
    rport = sshlab.free_port()
    outer = lab.start(lab.ssh(lab.relay.port, "-N", "-o", "ExitOnForwardFailure=yes",
                              "-R", "%d:127.0.0.1:%d" % (rport, echo.getsockname()[1]), "root@127.0.0.1"))
    try:
        sshlab.wait_port(rport, 10)
        for _ in range(2):
            time.sleep(1.5)
            with socket.create_connection(("127.0.0.1", rport), 5) as c:
                for j in range(3):
                    c.sendall(b"ping %d\n" % j)
                    c.recv(100)
                    time.sleep(0.1)
        time.sleep(0.5)
    finally:
        lab.stop(outer)
        echo.close()
    time.sleep(0.2)
    r = DET.inspect(lab.relay.recordings[-1].view())
    assert r.facts["ssh.server_initiated"] >= 2
    assert ("reverse_tunnel", "ssh.reverse_forward_suspected") in sigs(r)


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
