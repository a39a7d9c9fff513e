"""Test helper: real OpenSSH sessions on loopback, recorded by a TCP relay as a detector would see them.

sshd runs from a temporary config on 127.0.0.1 (a private mount namespace gives it
the /run/sshd privilege-separation directory without touching the host). A relay
in this process sits between a real `ssh` and sshd and records each direction's
bytes and (ts, direction, length) per received chunk, which is what the engine's
StreamView holds. Every process is started here, ended here by pid, also on
failure; every wait is bounded.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

from egress.inspect.base import StreamView

SSHD = "/usr/sbin/sshd"
LOOPBACK = b"\x7f\x00\x00\x01"


def available() -> str | None:
    """None if the lab can run here, else the reason."""
    if os.geteuid() != 0:
        return "needs root (sshd in a private mount namespace)"
    for tool in (SSHD, shutil.which("ssh"), shutil.which("ssh-keygen"), shutil.which("unshare")):
        if not tool or not os.path.exists(tool):
            return "needs OpenSSH server/client and unshare"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError("nothing listens on %d" % port)


class Recording:
    """Both directions of one relayed TCP connection."""

    def __init__(self):
        self.data = [bytearray(), bytearray()]
        self.sizes: list[tuple[float, int, int]] = []
        self.lock = threading.Lock()

    def add(self, direction: int, chunk: bytes) -> None:
        with self.lock:
            self.data[direction] += chunk
            self.sizes.append((time.monotonic(), direction, len(chunk)))

    def view(self, budget: int = 8192, max_sizes: int = 64, closed: bool = True) -> StreamView:
        with self.lock:
            return StreamView(6, LOOPBACK, 40000, LOOPBACK, 22, bytes(self.data[0][:budget]),
                              bytes(self.data[1][:budget]), closed_to_server=closed, closed_to_client=closed,
                              sizes=tuple(self.sizes[:max_sizes]), initiator_known=True)


def _pump(src: socket.socket, dst, direction: int, rec: Recording) -> None:
    try:
        while True:
            chunk = src.recv(65536)
            if not chunk:
                break
            rec.add(direction, chunk)
            if hasattr(dst, "sendall"):
                dst.sendall(chunk)
            else:
                dst.write(chunk)
                dst.flush()
    except (OSError, ValueError):
        pass
    finally:
        try:
            if hasattr(dst, "shutdown"):
                dst.shutdown(socket.SHUT_WR)
            else:
                dst.close()
        except OSError:
            pass


class Relay:
    """Listens on a loopback port; each accepted connection is relayed to `target` and recorded."""

    def __init__(self, target_port: int):
        self.target_port = target_port
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.recordings: list[Recording] = []
        self.threads: list[threading.Thread] = []
        self._accept = threading.Thread(target=self._serve, daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        try:
            while True:
                client, _ = self.sock.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 5)
                rec = Recording()
                self.recordings.append(rec)
                for args in ((client, upstream, 0, rec), (upstream, client, 1, rec)):
                    t = threading.Thread(target=_pump, args=args, daemon=True)
                    t.start()
                    self.threads.append(t)
        except OSError:
            return

    def close(self) -> None:
        self.sock.close()
        for t in self.threads:
            t.join(5)


class SshLab:
    """A throw-away sshd on loopback with one authorized key; use as a context manager."""

    def __init__(self, workdir: Path):
        self.dir = Path(workdir)
        self.port = free_port()
        self.procs: list[subprocess.Popen] = []

    def __enter__(self) -> "SshLab":
        d = self.dir
        for name in ("hostkey", "userkey"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True,
                           timeout=20)
        shutil.copy(d / "userkey.pub", d / "authorized_keys")
        (d / "sshd_config").write_text(
            "Port %d\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\nPidFile %s\n"
            "StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nAllowTcpForwarding yes\nGatewayPorts no\n"
            "Subsystem sftp /usr/lib/openssh/sftp-server\nLogLevel ERROR\n" % (self.port, d / "hostkey", d / "authorized_keys", d / "sshd.pid"))
        self.procs.append(subprocess.Popen(self._ns(["-D", "-e", "-f", str(d / "sshd_config")]),
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        try:
            wait_port(self.port)
        except Exception:
            self.__exit__()
            raise
        return self

    @staticmethod
    def _ns(sshd_args: list[str]) -> list[str]:
        script = ('mount -t tmpfs tmpfs /run && mkdir -p /run/sshd && chmod 755 /run/sshd && exec %s "$@"'
                  % SSHD)
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sshd"] + sshd_args

    def ssh(self, port: int, *args: str) -> list[str]:
        return ["ssh", "-i", str(self.dir / "userkey"), "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=5", "-p", str(port), *args]

    def run(self, cmd: list[str], timeout: float = 20) -> subprocess.CompletedProcess:
        return subprocess.run(cmd, capture_output=True, timeout=timeout)

    def start(self, cmd: list[str]) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def inetd_sshd(self) -> subprocess.Popen:
        """An `sshd -i` speaking SSH on its stdin/stdout (the server side of a reversed connection)."""
        p = subprocess.Popen(self._ns(["-i", "-e", "-f", str(self.dir / "sshd_config")]), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            self.stop(p)


def reversed_session(lab: SshLab, command: str = "echo reversed") -> Recording:
    """The sandbox connects OUT and then acts as the SSH server (reverse_ssh-style implant).

    Recorded connection: client = the sandbox (it opened the TCP connection), whose
    bytes come from `sshd -i`; server = the outside listener, whose bytes come from a
    real `ssh` client that the outside host points at its own side of the pipe.
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    client_side = socket.socket()
    client_side.bind(("127.0.0.1", 0))
    client_side.listen(1)
    rec = Recording()
    threads = []
    try:
        # the sandbox: connect out, bridge the socket to sshd -i
        sandbox = socket.create_connection(listener.getsockname(), 5)
        outside, _ = listener.accept()
        daemon = lab.inetd_sshd()

        def from_daemon():
            try:
                while True:
                    chunk = daemon.stdout.read1(65536)
                    if not chunk:
                        break
                    sandbox.sendall(chunk)
            except (OSError, ValueError):
                pass
            finally:
                try:
                    sandbox.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threads.append(threading.Thread(target=from_daemon, daemon=True))
        threads.append(threading.Thread(target=_pump, args=(sandbox, daemon.stdin, 1, Recording()), daemon=True))
        # the outside host: its ssh client talks to `outside` through a local socket pair
        ssh_port = client_side.getsockname()[1]
        proc = lab.start(lab.ssh(ssh_port, "root@127.0.0.1", command))
        conn, _ = client_side.accept()
        # record what crosses the sandbox's connection: dir 0 = sandbox -> outside
        threads.append(threading.Thread(target=_pump, args=(outside, conn, 0, rec), daemon=True))
        threads.append(threading.Thread(target=_pump, args=(conn, outside, 1, rec), daemon=True))
        for t in threads:
            t.start()
        proc.wait(20)
        lab.stop(daemon)
        for t in threads:
            t.join(5)
    finally:
        listener.close()
        client_side.close()
    return rec


# -- tunnel-only scenarios (ssh -N) -----------------------------------------------------

def wait_listen(port: int, timeout: float = 10.0) -> None:
    """Wait until something LISTENs on `port` without connecting to it (a probe would be forwarded)."""
    deadline = time.monotonic() + timeout
    suffix = ":%04X" % port
    while time.monotonic() < deadline:
        for name in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(name) as f:
                if any(p[1].endswith(suffix) and p[3] == "0A" for p in (line.split() for line in f.readlines()[1:])):
                    return
        time.sleep(0.05)
    raise TimeoutError("nothing listens on %d" % port)


class EchoServer:
    """A loopback TCP echo server (the far end of the forwards); threads end with close()."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c: socket.socket) -> None:
        with c:
            try:
                c.settimeout(10)
                while data := c.recv(4096):
                    c.sendall(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


def echo_rounds(sock: socket.socket, rounds: int = 3) -> None:
    for j in range(rounds):
        sock.sendall(b"ping %d\n" % j)
        sock.recv(100)
        time.sleep(0.1)


def through_port(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port), 5) as c:
        echo_rounds(c)


def through_socks(port: int, target_port: int) -> None:
    """A minimal SOCKS5 client (RFC 1928, no auth, CONNECT to 127.0.0.1:target_port)."""
    with socket.create_connection(("127.0.0.1", port), 5) as c:
        c.settimeout(5)
        c.sendall(b"\x05\x01\x00")
        assert c.recv(2) == b"\x05\x00"
        c.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + target_port.to_bytes(2, "big"))
        assert c.recv(10)[:2] == b"\x05\x00"
        echo_rounds(c)


class Marks:
    """Monotonic times at which a scenario deliberately went idle and resumed.

    `retime` takes the machine's idleness out of a recording: each idle period becomes
    exactly `gap` seconds, measured from the phase's last packet, while the timing
    inside a phase (answers, the client's own pace) stays as recorded. Sizes,
    directions and order stay real.
    """

    def __init__(self):
        self.times: list[float] = []

    def idle(self, seconds: float) -> None:
        self.times.append(time.monotonic())
        time.sleep(seconds)
        self.times.append(time.monotonic())

    def retime(self, sizes, gap: float = 3.0) -> list[tuple[float, int, int]]:
        resumes = self.times[1::2]
        out, phase, shift, prev = [], 0, 0.0, None
        for ts, d, n in sizes:
            if phase < len(resumes) and ts >= resumes[phase]:
                while phase < len(resumes) and ts >= resumes[phase]:
                    phase += 1
                if prev is not None:
                    shift = (out[-1][0] + gap) - ts      # this packet comes `gap` after the last one
            out.append((ts + shift, d, n))
            prev = ts
        return out
