"""Helpers for the end-to-end tests: a Topology with servers in ext and egress in gw.

Everything started here is registered with the Topology, so its close() (run by the
fixtures on any exit) stops it; namespaces, rules and processes never outlive a test
module.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from egress.drivers.netns import Topology
from egress.drivers.servers import make_cert, read_record

PY = sys.executable


class Gateway:
    """`egress run` inside the gateway namespace."""

    def __init__(self, topo: Topology, workdir: Path, rules: list[str] | None = None, extra: list[str] | None = None,
                 name: str = "gw"):
        self.topo = topo
        self.eve = workdir / ("%s-eve.json" % name)
        self.log = workdir / ("%s-stderr.log" % name)
        argv = [PY, "-m", "egress.cli", "run", "--sandbox-iface", topo.sbx_iface, "--eve", str(self.eve),
                "--metrics", "off", "-v"]
        for r in rules or []:
            argv += ["--rules", str(r)]
        argv += extra or []
        self._log = open(self.log, "w")
        self.proc = topo.popen("gw", argv, stdout=subprocess.DEVNULL, stderr=self._log)
        self.wait_for("egress: ready", timeout=20)

    def stderr(self) -> str:
        return self.log.read_text()

    def wait_for(self, text: str, timeout: float = 10.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.stderr().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("egress run exited %s: %s" % (self.proc.returncode, self.stderr()[-2000:]))
            time.sleep(0.05)
        raise TimeoutError("no %r from egress run within %ss: %s" % (text, timeout, self.stderr()[-2000:]))

    def hup(self, expect: str) -> None:
        before = self.stderr().count(expect)
        self.proc.send_signal(signal.SIGHUP)
        self.wait_for(expect, count=before + 1)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=timeout)
        self._log.close()
        return self.proc.returncode

    def stats(self) -> dict:
        """The daemon's counters from the 'stats' line it logs when it stops."""
        lines = [l for l in self.stderr().splitlines() if l.startswith("egress: stats ")]
        assert lines, self.stderr()[-2000:]
        return json.loads(lines[-1][len("egress: stats "):])

    def events(self, event_type: str | None = "flow") -> list[dict]:
        if not self.eve.exists():
            return []
        out = [json.loads(line) for line in self.eve.read_text().splitlines() if line.strip()]
        return [e for e in out if event_type is None or e["event_type"] == event_type]

    def flows_to(self, port: int) -> list[dict]:
        return [e for e in self.events() if e["dest_port"] == port]


class Lab:
    """Topology + workdir + server launchers."""

    def __init__(self, topo: Topology, workdir: Path):
        self.topo = topo
        self.workdir = workdir
        self.ext4 = topo.addr.ext4
        self.ext6 = topo.addr.ext6
        self._cert = None

    @property
    def cert(self) -> tuple[str, str]:
        if self._cert is None:
            self._cert = make_cert(str(self.workdir), ["files.egress.test", "git.egress.test", "pool.egress.test"])
        return self._cert

    def server(self, kind: str, *args: str, record: str | None = None, duration: float = 120) -> str:
        """Start `python -m egress.drivers.servers KIND` in ext; returns its record path."""
        record = record or str(self.workdir / ("%s-%d.jsonl" % (kind, len(self.topo._procs))))
        proc = self.topo.popen("ext", [PY, "-m", "egress.drivers.servers", kind, *args, "--record", record,
                                       "--duration", str(duration)], stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError("%s server did not start: %r" % (kind, line))
        return record

    def sim_pool(self, module: str, port: int, *args: str, host: str | None = None, duration: float = 60) -> str:
        """An emulated mining pool (egress.sim) in ext; returns its record path."""
        record = str(self.workdir / ("pool-%s-%d.jsonl" % (module, port)))
        proc = self.topo.popen("ext", [PY, "-m", "egress.sim." + module, "pool", "--listen", "%s:%d" % (host or self.ext4, port),
                                       "--duration", str(duration), "--record", record, "--job-interval", "0.3", *args],
                               stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        if "listening" not in line:
            raise RuntimeError("pool did not start: %r" % line)
        return record

    def echo(self, host: str, port: int) -> None:
        """An echo server in ext on host:port, started once per topology."""
        started = self.__dict__.setdefault("_echo", set())
        if (host, port) not in started:
            start_echo(self.topo, host, port)
            started.add((host, port))

    def sbx(self, *argv: str, timeout: float = 20.0, check: bool = False, env: dict | None = None):
        """Run a program in the sandbox (through the gateway); returns CompletedProcess."""
        full = list(argv)
        if env:
            full = ["env"] + ["%s=%s" % kv for kv in env.items()] + full
        return self.topo.run("sbx", *full, check=check, timeout=timeout)

    def tcp_exchange(self, host: str, port: int, send: bytes = b"hello\n", timeout: float = 3.0) -> str:
        """Connect from sbx, send, read until close; 'ok:<reply>' or 'error:<ExceptionName>'."""
        code = ("import socket,sys\n"
                "try:\n"
                " s=socket.create_connection((%r,%d),timeout=%r); s.sendall(%r); s.shutdown(socket.SHUT_WR); d=b''\n"
                " while True:\n"
                "  c=s.recv(65536)\n"
                "  if not c: break\n"
                "  d+=c\n"
                " print('ok:'+d.decode('latin-1'))\n"
                "except Exception as e: print('error:'+type(e).__name__)\n") % (host, port, timeout, send)
        return self.sbx(PY, "-c", code, timeout=timeout * 3 + 5).stdout.strip()


def records(path: str) -> list[dict]:
    return read_record(path)


def have(tool: str) -> bool:
    from shutil import which
    return which(tool) is not None


def echo_server_code(host: str, port: int, duration: float = 60) -> str:
    """A bounded threaded echo server (for long-lived connection tests)."""
    return ("import socket,threading,time\n"
            "s=socket.socket(socket.AF_INET6 if ':' in %r else socket.AF_INET);s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            "s.bind((%r,%d));s.listen(8);s.settimeout(0.2);print('ready',flush=True);end=time.time()+%r\n"
            "def h(c):\n"
            " c.settimeout(30)\n"
            " try:\n"
            "  while True:\n"
            "   d=c.recv(65536)\n"
            "   if not d: break\n"
            "   c.sendall(d)\n"
            " except OSError: pass\n"
            " c.close()\n"
            "while time.time()<end:\n"
            " try: c,_=s.accept()\n"
            " except socket.timeout: continue\n"
            " threading.Thread(target=h,args=(c,),daemon=True).start()\n") % (host, host, port, duration)


def start_echo(topo: Topology, host: str, port: int) -> None:
    proc = topo.popen("ext", [PY, "-c", echo_server_code(host, port)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"

