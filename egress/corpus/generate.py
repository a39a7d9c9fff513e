"""Generate a labelled corpus: real programs in network namespaces, recorded with tcpdump.

    python -m egress.corpus generate --out DIR [--scale small|full] [--seed N] [--only GLOB]
    egress train --generate-corpus DIR ...

Guarantees:
- Two namespaces per run, `egc-<id>-sbx` (the sandbox, 10.206.0.2/16) and `egc-<id>-ext`
  (the outside, one address 10.206.X.Y/16 per scenario instance), joined by a veth pair
  with segmentation offload limited to one segment (packets look like a real link's,
  not 64 KB super-packets). Nothing else is reachable; no outside host is contacted.
- Each scenario instance runs bounded (its duration plus a hard timeout), is recorded by
  its own tcpdump on the sandbox's interface (filter: its outside address) into
  DIR/pcaps/<scenario>/<n>.pcap, and gets one labels.tsv row (the whole file has the
  scenario's label; group = scenario name, so held-out groups are unseen configurations).
- Every process is started by this module and stopped by its id; namespaces are deleted
  at the end, also on errors and Ctrl-C.
- Real programs: OpenSSH sshd/ssh/scp (interactive sessions, scp, git over SSH, `ssh -R`
  reverse tunnels, role-reversed SSH through a relay), git (dumb HTTPS and SSH),
  Python's TLS and HTTP stacks (downloads, API calls, pip/npm-like fetch patterns,
  WebSocket), a DNS server/client, egress.sim's Stratum/XMRig/eth-proxy emulators (plain,
  TLS, WebSocket), and /bin/sh behind a reverse shell.
"""
from __future__ import annotations

import fnmatch
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from egress.classify.dataset import Label, write_labels

PY = sys.executable
PROG = "egress.corpus.programs"
SSH_OPTS = ["-F", "/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "BatchMode=yes", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
SBX_IP = "10.206.0.2"
SERVICE_PORTS = [443, 80, 8443, 3333, 4444, 5555, 9999, 14444, 22, 2222, 8080, 45700]


class Topology:
    """The two namespaces and the veth between them."""

    def __init__(self, run_id: str, n_addresses: int):
        self.sbx = "egc-%s-sbx" % run_id
        self.ext = "egc-%s-ext" % run_id
        self.sbx_if = "egc%ss" % run_id
        self.ext_if = "egc%se" % run_id
        self.addresses = ["10.206.%d.%d" % (1 + i // 200, 10 + i % 200) for i in range(n_addresses)]

    def up(self) -> None:
        _ip("netns", "add", self.sbx)
        _ip("netns", "add", self.ext)
        _ip("link", "add", self.sbx_if, "netns", self.sbx, "type", "veth", "peer", "name", self.ext_if,
            "netns", self.ext)
        for ns, ifname, addr in ((self.sbx, self.sbx_if, SBX_IP), (self.ext, self.ext_if, "10.206.0.1")):
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "link", "set", ifname, "gso_max_segs", "1", "gso_max_size", "1500")
            _ip("-n", ns, "addr", "add", addr + "/16", "dev", ifname)
            _ip("-n", ns, "link", "set", ifname, "up")
        for addr in self.addresses:
            _ip("-n", self.ext, "addr", "add", addr + "/16", "dev", self.ext_if)

    def down(self) -> None:
        for ns in (self.sbx, self.ext):
            # anything still running in our namespaces descends from a process this run started
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, check=False)
            for pid in r.stdout.split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], stderr=subprocess.DEVNULL, check=False)


def _ip(*args: str) -> None:
    r = subprocess.run(["ip", *args], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("ip %s: %s" % (" ".join(args), r.stderr.strip()))


class Run:
    """One scenario instance: its address, ports, scratch directory and processes."""

    def __init__(self, topo: Topology, index: int, ip: str, tmp: Path, rng: random.Random, shared: "Shared",
                 duration: float):
        self.topo = topo
        self.index = index
        self.ip = ip
        self.tmp = tmp
        self.rng = rng
        self.shared = shared
        self.duration = duration
        self.port = rng.choice(SERVICE_PORTS)
        self.local_port = 20000 + index * 4        # loopback ports inside the namespaces
        self.procs: list[subprocess.Popen] = []

    def spawn(self, ns: str, argv: list, stdin=None, stdout=subprocess.DEVNULL, env=None) -> subprocess.Popen:
        full_env = dict(os.environ, **(env or {}))
        p = subprocess.Popen(["ip", "netns", "exec", ns] + [str(a) for a in argv], stdin=stdin, stdout=stdout,
                             stderr=subprocess.PIPE, start_new_session=True, env=full_env, cwd=self.tmp)
        self.procs.append(p)
        return p

    def ext(self, argv, **kw) -> subprocess.Popen:
        return self.spawn(self.topo.ext, argv, **kw)

    def sbx(self, argv, **kw) -> subprocess.Popen:
        return self.spawn(self.topo.sbx, argv, **kw)

    def wait_line(self, p: subprocess.Popen, needle: str, timeout: float = 10.0, stream: str = "stdout") -> bool:
        """Wait until the process prints a line containing `needle` (readiness)."""
        f = p.stdout if stream == "stdout" else p.stderr
        found = threading.Event()

        def scan():
            for line in iter(f.readline, b""):
                if needle.encode() in line:
                    found.set()
                    break
            # keep draining so the process never blocks on a full pipe
            for _ in iter(f.readline, b""):
                pass
        threading.Thread(target=scan, daemon=True).start()
        return found.wait(timeout)

    def wait(self, p: subprocess.Popen, timeout: float) -> int | None:
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)      # the group this run created for p
                except ProcessLookupError:
                    pass
        deadline = time.time() + 3
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()

    # -- building blocks ----------------------------------------------------------------------

    def sshd(self, ns: str, ip: str, port: int) -> subprocess.Popen:
        d = self.tmp / ("sshd-%s-%d" % (ns[-3:], port))
        d.mkdir(exist_ok=True)
        cfg = d / "sshd_config"
        cfg.write_text("\n".join([
            "Port %d" % port, "ListenAddress %s" % ip, "HostKey %s" % self.shared.host_key,
            "PidFile %s" % (d / "sshd.pid"), "AuthorizedKeysFile %s" % self.shared.authorized_keys,
            "PermitRootLogin yes", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "AllowTcpForwarding yes", "PermitTTY yes", "LogLevel INFO",
            "Subsystem sftp /usr/lib/openssh/sftp-server", "MaxStartups 100", "",
        ]))
        p = self.spawn(ns, ["/usr/sbin/sshd", "-D", "-e", "-f", cfg])
        self.wait_line(p, "Server listening", stream="stderr")
        return p

    def ssh(self, port: int, *extra) -> list:
        return ["ssh", *SSH_OPTS, "-i", self.shared.client_key, "-p", str(port), *extra]

    def web_server(self, ns: str, ip: str, port: int, tls: bool, root: str | None = None,
                   push: float = 2.0) -> subprocess.Popen:
        argv = [PY, "-m", PROG, "web-server", "--listen", "%s:%d" % (ip, port), "--duration", self.duration + 15,
                "--cert-dir", self.tmp, "--push-interval", push]
        if tls:
            argv.append("--tls")
        if root:
            argv += ["--root", root]
        p = self.spawn(ns, argv, stdout=subprocess.PIPE)
        self.wait_line(p, "listening")
        return p


@dataclass
class Shared:
    """Keys and a git repository made once per generation."""
    host_key: Path
    client_key: Path
    authorized_keys: Path
    repo_parent: Path
    repo: Path
    files: list


def _make_shared(tmp: Path, rng: random.Random) -> Shared:
    keys = tmp / "keys"
    keys.mkdir()
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(keys / "client")], check=True)
    shutil.copy(keys / "client.pub", keys / "authorized_keys")
    for f in keys.iterdir():
        os.chmod(f, 0o600)
    # a repository with some history: text and binary files of assorted sizes
    work = tmp / "repo-work"
    work.mkdir()
    env = dict(os.environ, GIT_AUTHOR_NAME="dev", GIT_AUTHOR_EMAIL="dev@example.invalid",
               GIT_COMMITTER_NAME="dev", GIT_COMMITTER_EMAIL="dev@example.invalid")
    subprocess.run(["git", "init", "-q", str(work)], check=True, env=env)
    for c in range(4):
        for i in range(rng.randint(5, 15)):
            p = work / ("src%d" % (i % 4)) / ("f%d_%d.py" % (c, i))
            p.parent.mkdir(exist_ok=True)
            p.write_text("\n".join("def f%d(x):  # %s\n    return x * %d" % (k, os.urandom(8).hex(), k)
                                   for k in range(rng.randint(20, 400))))
        (work / ("blob%d.bin" % c)).write_bytes(os.urandom(rng.randint(50_000, 400_000)))
        subprocess.run(["git", "-C", str(work), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "c%d" % c], check=True, env=env)
    parent = tmp / "srv"
    parent.mkdir()
    repo = parent / "repo.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(repo)], check=True, env=env)
    subprocess.run(["git", "-C", str(repo), "update-server-info"], check=True, env=env)
    files = []
    for n in (100_000, 700_000, 2_000_000, 4_000_000):
        f = tmp / ("data-%d.bin" % n)
        f.write_bytes(os.urandom(n))
        files.append(f)
    return Shared(keys / "host", keys / "client", keys / "authorized_keys", parent, repo, files)


# --- scenarios ------------------------------------------------------------------------------------
# Each takes a Run and returns after its traffic is done (the caller stops what is left).

def web(pattern: str, tls: bool) -> Callable[[Run], None]:
    def scenario(r: Run) -> None:
        r.web_server(r.topo.ext, r.ip, r.port, tls, push=r.rng.choice([0.5, 1.0, 3.0]))
        argv = [PY, "-m", PROG, "web-client", "--connect", "%s:%d" % (r.ip, r.port), "--pattern", pattern,
                "--seed", r.rng.randrange(1 << 30), "--duration", r.duration]
        r.wait(r.sbx(argv + (["--tls"] if tls else [])), r.duration + 30)
    return scenario


def dns(r: Run) -> None:
    p = r.ext([PY, "-m", PROG, "dns-server", "--listen", "%s:53" % r.ip, "--duration", r.duration + 5],
              stdout=subprocess.PIPE)
    r.wait_line(p, "listening")
    r.wait(r.sbx([PY, "-m", PROG, "dns-client", "--connect", "%s:53" % r.ip, "--duration", r.duration,
                  "--seed", r.rng.randrange(1 << 30)]), r.duration + 10)


def mining(module: str, variant: str, tls: bool, ws: bool, rare: bool = False,
           poisson: str | None = None) -> Callable[[Run], None]:
    """Pool outside, 1-3 miners in the sandbox. `rare`: a slow miner that seldom finds a
    share, so the flow is mostly the pool pushing jobs. `poisson`: the protocol name for
    egress.corpus.poisson (exponential share gaps, jobs on random block arrivals)."""
    prog = "egress.corpus.poisson" if poisson else module if "." in module else "egress.sim." + module
    pre = [poisson] if poisson else []

    def scenario(r: Run) -> None:
        rng = r.rng
        job = rng.choice([0.3, 0.7, 1.5, 3.0, 5.0]) if not rare else rng.choice([0.3, 0.7, 1.5])
        flags = (["--tls"] if tls else []) + (["--ws"] if ws else [])
        pool = r.ext([PY, "-m", prog, *pre, "pool", "--listen", "%s:%d" % (r.ip, r.port),
                      "--duration", r.duration + 10, "--job-interval", job, "--variant", variant,
                      "--seed", rng.randrange(1 << 30)] + flags, stdout=subprocess.PIPE)
        r.wait_line(pool, "listening")
        miners = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            share = rng.choice([0.3, 0.6, 1.0, 2.0, 4.0]) if not rare else rng.choice([5.0, 8.0, 15.0])
            miners.append(r.sbx([PY, "-m", prog, *pre, "client", "--connect", "%s:%d" % (r.ip, r.port),
                                 "--duration", r.duration * rng.uniform(0.6, 1.0), "--share-interval", share,
                                 "--jitter", rng.choice([0.05, 0.2, 0.5]), "--variant", variant,
                                 "--periodic-interval", rng.choice([2.0, 5.0, 10.0]),
                                 "--seed", rng.randrange(1 << 30)] + flags))
            time.sleep(rng.uniform(0.0, 1.5))
        for m in miners:
            r.wait(m, r.duration + 20)
    return scenario


def grpc(tls: bool) -> Callable[[Run], None]:
    def scenario(r: Run) -> None:
        argv = ["--duration", r.duration, "--seed", r.rng.randrange(1 << 30)] + (["--tls"] if tls else [])
        srv = r.ext([PY, "-m", PROG, "grpc-stream", "--listen", "%s:%d" % (r.ip, r.port), "--cert-dir", r.tmp]
                    + argv, stdout=subprocess.PIPE)
        r.wait_line(srv, "listening")
        r.wait(r.sbx([PY, "-m", PROG, "grpc-stream", "--connect", "%s:%d" % (r.ip, r.port)] + argv), r.duration + 15)
    return scenario


def ssh_interactive(r: Run) -> None:
    r.sshd(r.topo.ext, r.ip, r.port)
    typist = r.sbx([PY, "-m", PROG, "typist", "--by-key", "--duration", r.duration, "--seed",
                    r.rng.randrange(1 << 30)], stdout=subprocess.PIPE)
    r.wait(r.sbx(r.ssh(r.port, "-tt", "root@" + r.ip), stdin=typist.stdout), r.duration + 20)


def p2p(r: Run) -> None:
    peer = r.ext([PY, "-m", PROG, "p2p-node", "--listen", "%s:%d" % (r.ip, r.port), "--duration", r.duration,
                  "--seed", r.rng.randrange(1 << 30)], stdout=subprocess.PIPE)
    r.wait_line(peer, "listening")
    r.wait(r.sbx([PY, "-m", PROG, "p2p-node", "--connect", "%s:%d" % (r.ip, r.port), "--duration", r.duration,
                  "--seed", r.rng.randrange(1 << 30)]), r.duration + 15)


def ssh_idle(r: Run) -> None:
    """A session left open with keepalives and a command now and then (an agent's control channel)."""
    r.sshd(r.topo.ext, r.ip, r.port)
    typist = r.sbx([PY, "-m", PROG, "typist", "--duration", r.duration, "--initial-wait", 2,
                    "--seed", r.rng.randrange(1 << 30)], stdout=subprocess.PIPE)
    r.wait(r.sbx(r.ssh(r.port, "-tt", "-o", "ServerAliveInterval=%d" % r.rng.choice([1, 2, 5]), "root@" + r.ip),
                 stdin=typist.stdout), r.duration + 20)


def ssh_commands(r: Run) -> None:
    """An agent running one-off remote commands (a new connection each)."""
    r.sshd(r.topo.ext, r.ip, r.port)
    end = time.time() + r.duration
    from egress.corpus.programs import COMMANDS
    while time.time() < end:
        r.wait(r.sbx(r.ssh(r.port, "root@" + r.ip, r.rng.choice(COMMANDS))), 20)
        time.sleep(r.rng.uniform(0.2, 2.0))


def scp(direction: str) -> Callable[[Run], None]:
    def scenario(r: Run) -> None:
        r.sshd(r.topo.ext, r.ip, r.port)
        f = r.rng.choice(r.shared.files)
        base = ["scp", *SSH_OPTS, "-i", r.shared.client_key, "-P", str(r.port)]
        if direction == "up":
            argv = base + [f, "root@%s:%s" % (r.ip, r.tmp / "up.bin")]
        else:
            argv = base + ["root@%s:%s" % (r.ip, f), r.tmp / "down.bin"]
        r.wait(r.sbx(argv), r.duration + 30)
    return scenario


def git_ssh(r: Run) -> None:
    r.sshd(r.topo.ext, r.ip, r.port)
    cmd = " ".join(str(a) for a in r.ssh(r.port))
    r.wait(r.sbx(["git", "clone", "-q", "ssh://root@%s:%d%s" % (r.ip, r.port, r.shared.repo), r.tmp / "clone"],
                 env={"GIT_SSH_COMMAND": cmd}), r.duration + 30)


def git_https(tls: bool) -> Callable[[Run], None]:
    def scenario(r: Run) -> None:
        r.web_server(r.topo.ext, r.ip, r.port, tls, root=str(r.shared.repo_parent))
        url = "%s://%s:%d/static/repo.git" % ("https" if tls else "http", r.ip, r.port)
        r.wait(r.sbx(["git", "-c", "http.sslVerify=false", "clone", "-q", url, r.tmp / "clone"]), r.duration + 30)
    return scenario


def reverse_tunnel(inner: str) -> Callable[[Run], None]:
    """`ssh -N -R` from the sandbox; the outside then uses the tunnel: HTTP fetches from a
    sandbox web server, an interactive SSH session into the sandbox, or a bulk scp; or
    ("idle") not yet: a tunnel-only session that carries nothing but keepalives."""
    def scenario(r: Run) -> None:
        rng = r.rng
        r.sshd(r.topo.ext, r.ip, r.port)
        remote = r.local_port                 # on the outside's loopback
        target = r.local_port + 1             # on the sandbox's loopback
        if inner == "http":
            r.web_server(r.topo.sbx, "127.0.0.1", target, tls=False)
        else:
            r.sshd(r.topo.sbx, "127.0.0.1", target)
        keepalive = ["-o", "ServerAliveInterval=%d" % rng.choice([1, 3, 15])] if rng.random() < 0.7 else []
        r.sbx(r.ssh(r.port, "-N", *keepalive, "-R", "127.0.0.1:%d:127.0.0.1:%d" % (remote, target), "root@" + r.ip))
        time.sleep(rng.uniform(1.5, 3.0))
        if inner == "idle":               # a tunnel held open for later: only keepalives cross it
            time.sleep(r.duration)
            return
        if inner == "http":
            p = r.ext([PY, "-m", PROG, "fetch-loop", "--connect", "127.0.0.1:%d" % remote, "--duration",
                       r.duration, "--seed", rng.randrange(1 << 30)])
        elif inner == "interactive":
            typist = r.ext([PY, "-m", PROG, "typist", "--by-key", "--duration", r.duration, "--seed",
                            rng.randrange(1 << 30)], stdout=subprocess.PIPE)
            p = r.ext(r.ssh(remote, "-tt", "root@127.0.0.1"), stdin=typist.stdout)
        else:   # exfiltration of a file through the tunnel
            p = r.ext(["scp", *SSH_OPTS, "-i", r.shared.client_key, "-P", str(remote),
                       "root@127.0.0.1:%s" % rng.choice(r.shared.files), r.tmp / "exfil.bin"])
        r.wait(p, r.duration + 30)
        time.sleep(rng.uniform(0.5, 2.0))
    return scenario


def role_reversed_ssh(inner: str) -> Callable[[Run], None]:
    """The sandbox opens the TCP connection (a relay to its own sshd); the outside runs the
    SSH client over it: an SSH session whose server is the side that connected out."""
    def scenario(r: Run) -> None:
        rng = r.rng
        target = r.local_port + 2
        r.sshd(r.topo.sbx, "127.0.0.1", target)
        proxy = "%s -m %s accept-pipe --listen %s:%d --duration %d" % (PY, PROG, r.ip, r.port, r.duration + 10)
        ssh = ["ssh", *SSH_OPTS, "-i", r.shared.client_key, "-o", "ProxyCommand=" + proxy]
        if inner == "interactive":
            typist = r.ext([PY, "-m", PROG, "typist", "--by-key", "--duration", r.duration, "--initial-wait", 3,
                            "--seed", rng.randrange(1 << 30)], stdout=subprocess.PIPE)
            p = r.ext(ssh + ["-tt", "root@sandbox"], stdin=typist.stdout)
        else:
            p = r.ext(ssh + ["root@sandbox", "cat %s; sleep 1; cat %s" % (rng.choice(r.shared.files),
                                                                          rng.choice(r.shared.files))])
        time.sleep(1.0)
        r.sbx([PY, "-m", PROG, "relay", "--connect", "%s:%d" % (r.ip, r.port), "--to", "127.0.0.1:%d" % target,
               "--duration", r.duration + 10])
        r.wait(p, r.duration + 30)
    return scenario


def reverse_shell(tls: bool, by_key: bool) -> Callable[[Run], None]:
    def scenario(r: Run) -> None:
        argv = [PY, "-m", PROG, "shell-operator", "--listen", "%s:%d" % (r.ip, r.port), "--duration", r.duration,
                "--cert-dir", r.tmp, "--seed", r.rng.randrange(1 << 30)]
        op = r.ext(argv + (["--tls"] if tls else []) + (["--by-key"] if by_key else []), stdout=subprocess.PIPE)
        r.wait_line(op, "listening")
        r.sbx([PY, "-m", PROG, "reverse-shell", "--connect", "%s:%d" % (r.ip, r.port), "--duration",
               r.duration + 5] + (["--tls"] if tls else []))
        r.wait(op, r.duration + 15)
    return scenario


def scenarios() -> list[tuple[str, str, Callable[[Run], None], int]]:
    """(name, label, function, weight): weight = instances per unit of scale."""
    out = []
    for tls in (True, False):
        t = "tls" if tls else "plain"
        out += [("benign/https-bulk/" + t, "benign", web("bulk", tls), 2),
                ("benign/api-calls/" + t, "benign", web("api", tls), 3),
                ("benign/pip-like/" + t, "benign", web("pip", tls), 2),
                ("benign/npm-like/" + t, "benign", web("npm", tls), 1),
                ("benign/websocket/" + t, "benign", web("ws", tls), 3),
                ("benign/git-http/" + t, "benign", git_https(tls), 1),
                ("benign/llm-stream/" + t, "benign", web("llm", tls), 2),
                ("benign/telemetry/" + t, "benign", web("telemetry", tls), 2),
                ("benign/sse/" + t, "benign", web("sse", tls), 2),
                # push-style apps: the server speaks unasked, timers drive small client messages
                ("benign/sse-live/" + t, "benign", web("sse-live", tls), 2),
                ("benign/longpoll/" + t, "benign", web("longpoll", tls), 2),
                ("benign/pubsub-feed/" + t, "benign", web("pubsub-feed", tls), 2),
                ("benign/pubsub-ticker/" + t, "benign", web("pubsub-ticker", tls), 2),
                ("benign/telemetry-batch/" + t, "benign", web("telemetry-batch", tls), 2),
                ("benign/ci-poll/" + t, "benign", web("ci-poll", tls), 2),
                ("benign/grpc-stream/" + t, "benign", grpc(tls), 2)]
    out += [("benign/dns", "benign", dns, 1),
            ("benign/ssh-interactive", "benign", ssh_interactive, 3),
            ("benign/ssh-commands", "benign", ssh_commands, 1),
            ("benign/scp-up", "benign", scp("up"), 1),
            ("benign/scp-down", "benign", scp("down"), 1),
            ("benign/git-ssh", "benign", git_ssh, 2),
            ("benign/ssh-idle-keepalive", "benign", ssh_idle, 2),
            ("benign/crypto-p2p-node", "benign", p2p, 3)]
    for module, variants in (("stratum", ("btc", "ethstratum")), ("xmr", ("xmrig", "coinhive")),
                             ("ethproxy", ("ethproxy",))):
        for variant in variants:
            for tls, ws in ((False, False), (True, False), (False, True), (True, True)):
                if ws and module != "xmr" and variant != "ethstratum":
                    continue          # WebSocket mining is the browser-miner (coinhive-like) shape
                name = "mining/%s-%s/%s%s" % (module, variant, "tls" if tls else "plain", "-ws" if ws else "")
                out.append((name, "mining", mining(module, variant, tls, ws), 2))
    for tls in (False, True):
        t = "tls" if tls else "plain"
        out.append(("mining/stratum-zcash/" + t, "mining", mining("egress.corpus.zcash", "zcash", tls, False), 2))
        for module, variant in (("stratum", "btc"), ("xmr", "xmrig"), ("ethproxy", "ethproxy"),
                                ("egress.corpus.zcash", "zcash")):
            name = "mining/%s-%s/%s-rare" % (module.rsplit(".", 1)[-1], variant, t)
            out.append((name, "mining", mining(module, variant, tls, False, rare=True), 1))
    for protocol, module, variant in (("stratum", "stratum", "btc"), ("xmr", "xmr", "xmrig"),
                                      ("ethproxy", "ethproxy", "ethproxy"), ("zcash", "egress.corpus.zcash", "zcash")):
        for tls in (False, True):
            t = "tls" if tls else "plain"
            out.append(("mining/poisson-%s/%s" % (protocol, t), "mining",
                        mining(module, variant, tls, False, poisson=protocol), 1))
            out.append(("mining/poisson-%s/%s-rare" % (protocol, t), "mining",
                        mining(module, variant, tls, False, rare=True, poisson=protocol), 1))
    for inner in ("http", "interactive", "scp"):
        out.append(("reverse_tunnel/ssh-R/" + inner, "reverse_tunnel", reverse_tunnel(inner), 3))
    out.append(("reverse_tunnel/ssh-R/idle", "reverse_tunnel", reverse_tunnel("idle"), 1))
    for inner in ("interactive", "bulk"):
        out.append(("reverse_tunnel/role-reversed/" + inner, "reverse_tunnel", role_reversed_ssh(inner), 2))
    for tls in (False, True):
        for by_key in (False, True):
            out.append(("reverse_shell/%s/%s" % ("tls" if tls else "plain", "keys" if by_key else "lines"),
                        "reverse_shell", reverse_shell(tls, by_key), 2))
    return out


SCALES = {"tiny": 0.5, "small": 1.0, "full": 3.0}


def generate(out, scale: str = "small", seed: int = 1, only: list[str] | None = None, concurrency: int = 8,
             log=print, duration: tuple[float, float] | None = None) -> list[Label]:
    """Run every scenario (matching `only` globs) the scale's number of times; write pcaps and labels.tsv."""
    if os.geteuid() != 0:
        raise RuntimeError("corpus generation needs root (network namespaces, tcpdump)")
    out = Path(out)
    (out / "pcaps").mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    plan = []
    for name, label, fn, weight in scenarios():
        if only and not any(fnmatch.fnmatch(name, g) for g in only):
            continue
        for k in range(max(1, int(round(weight * SCALES[scale])))):
            plan.append((name, label, fn, k))
    lo, hi = duration or ((6.0, 14.0) if scale != "full" else (8.0, 25.0))
    topo = Topology("%x" % (os.getpid() % 0xFFF), len(plan))
    tmp = Path(tempfile.mkdtemp(prefix="egc-"))
    labels: list[Label] = []
    lock = threading.Lock()
    try:
        topo.up()
        shared = _make_shared(tmp, rng)
        jobs = [(i, name, label, fn, k, random.Random(rng.randrange(1 << 62)), rng.uniform(lo, hi))
                for i, (name, label, fn, k) in enumerate(plan)]

        def run_one(job):
            i, name, label, fn, k, jrng, dur = job
            rel = Path("pcaps") / name.replace("/", "_") / ("%03d.pcap" % k)
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            work = tmp / ("run%03d" % i)
            work.mkdir()
            r = Run(topo, i, topo.addresses[i], work, jrng, shared, dur)
            started = time.time()
            cap = r.sbx(["tcpdump", "-i", topo.sbx_if, "-U", "-n", "-s", "1600", "-w", (out / rel).resolve(),
                         "host", r.ip])
            ok = r.wait_line(cap, "listening on", stream="stderr")
            try:
                if ok:
                    fn(r)
                time.sleep(0.5)
            except Exception as exc:          # one broken scenario must not stop the corpus
                log("scenario %s #%d failed: %s" % (name, k, exc))
            finally:
                r.stop_all()
            size = (out / rel).stat().st_size if (out / rel).exists() else 0
            if size > 24:
                with lock:
                    labels.append(Label(str(rel), "*", label, name, name))
            log("%-45s #%d %5.1fs %8d bytes" % (name, k, time.time() - started, size))

        with ThreadPoolExecutor(max_workers=concurrency) as pool:
            list(pool.map(run_one, jobs))
    finally:
        topo.down()
        shutil.rmtree(tmp, ignore_errors=True)
    labels.sort(key=lambda lab: lab.file)
    write_labels(out / "labels.tsv", labels)
    return labels
