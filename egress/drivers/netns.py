"""Throw-away sandbox/gateway/outside hosts built from Linux network namespaces.

`Topology` builds three namespaces joined by two veth pairs::

    sbx (eth0) ──── (sbx0) gw (ext0) ──── (eth0) ext

with private IPv4 and IPv6 (ULA) addresses that exist only inside them, forwarding
on in `gw`, and default routes in `sbx` and `ext` pointing at `gw`. The veth pairs are
created directly inside the namespaces (`ip -n`), so the root namespace never sees an
interface, an address or a route of a topology.

Guarantees:
- Everything it creates (namespaces, and the processes started with `popen`) is
  removed by `close()`, which the context manager runs on any exit: normal return,
  exception, Ctrl-C. `close()` is idempotent and never raises.
- Names are `<prefix><suffix>-sbx|gw|ext` with a random suffix, so concurrent
  topologies never collide; addresses may repeat across topologies because every
  namespace has its own routing table.
- Nothing here touches the root namespace's iptables, routes or sysctls; the only file
  outside /run/netns is the optional /etc/netns/<name>/resolv.conf (`set_resolver`),
  removed again by close().
"""
from __future__ import annotations

import ipaddress
import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field

ROLES = ("sbx", "gw", "ext")


class NetnsError(RuntimeError):
    pass


def ip_cmd(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise NetnsError("ip %s: %s" % (" ".join(args), proc.stderr.strip() or proc.stdout.strip()))
    return proc


def netns_exists(name: str) -> bool:
    return os.path.exists("/run/netns/" + name)


@dataclass
class Addresses:
    """The addresses of one topology, derived from an IPv4 /16 and an IPv6 /48."""
    v4: ipaddress.IPv4Network
    v6: ipaddress.IPv6Network

    def _v4(self, link: int, host: int) -> str:
        return str(self.v4.network_address + link * 256 + host)

    def _v6(self, link: int, host: int) -> str:
        return str(self.v6.network_address + (link << 64) + host)

    # link 1: sbx <-> gw ; link 2: gw <-> ext
    @property
    def sbx4(self) -> str: return self._v4(1, 2)
    @property
    def gw_sbx4(self) -> str: return self._v4(1, 1)
    @property
    def gw_ext4(self) -> str: return self._v4(2, 1)
    @property
    def ext4(self) -> str: return self._v4(2, 2)
    @property
    def sbx6(self) -> str: return self._v6(1, 2)
    @property
    def gw_sbx6(self) -> str: return self._v6(1, 1)
    @property
    def gw_ext6(self) -> str: return self._v6(2, 1)
    @property
    def ext6(self) -> str: return self._v6(2, 2)
    @property
    def sbx_net4(self) -> str: return "%s/24" % self._v4(1, 0)
    @property
    def sbx_net6(self) -> str: return "%s/64" % self._v6(1, 0)

    def ext_extra4(self, n: int) -> str:
        """Additional outside addresses (e.g. one per emulated server) on the ext link."""
        return self._v4(2, 10 + n)


@dataclass
class Topology:
    """sbx/gw/ext namespaces; use as a context manager (see the module docstring)."""
    subnet4: str = "10.205.0.0/16"
    subnet6: str = "fd05:205::/48"
    prefix: str = "egl-"
    suffix: str = field(default_factory=lambda: secrets.token_hex(3))
    mtu: int = 1500

    def __post_init__(self) -> None:
        self.addr = Addresses(ipaddress.IPv4Network(self.subnet4), ipaddress.IPv6Network(self.subnet6))
        self.ns = {role: "%s%s-%s" % (self.prefix, self.suffix, role) for role in ROLES}
        self.sbx_iface = "sbx0"       # gw's interface toward the sandbox
        self.ext_iface = "ext0"       # gw's interface toward the outside
        self._procs: list[subprocess.Popen] = []
        self._created: list[str] = []
        self._extra4: list[str] = []
        self._etc_dirs: list[str] = []

    # -- life cycle ---------------------------------------------------------------

    def __enter__(self) -> "Topology":
        try:
            self.create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def create(self) -> None:
        for role in ROLES:
            ip_cmd("netns", "add", self.ns[role])
            self._created.append(self.ns[role])
            self.run(role, "ip", "link", "set", "lo", "up")
            # No duplicate address detection: a tentative link-local address delays the
            # first IPv6 neighbour discovery by ~2 s.
            self.run(role, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0", "net.ipv6.conf.default.accept_dad=0")
        sbx, gw, ext = (self.ns[r] for r in ROLES)
        ip_cmd("-n", gw, "link", "add", self.sbx_iface, "type", "veth", "peer", "name", "eth0", "netns", sbx)
        ip_cmd("-n", gw, "link", "add", self.ext_iface, "type", "veth", "peer", "name", "eth0", "netns", ext)
        a = self.addr
        for ns, dev, v4, v6 in ((sbx, "eth0", a.sbx4, a.sbx6), (gw, self.sbx_iface, a.gw_sbx4, a.gw_sbx6),
                                (gw, self.ext_iface, a.gw_ext4, a.gw_ext6), (ext, "eth0", a.ext4, a.ext6)):
            ip_cmd("-n", ns, "link", "set", dev, "mtu", str(self.mtu), "up")
            ip_cmd("-n", ns, "addr", "add", v4 + "/24", "dev", dev)
            # nodad: the address is usable at once (no 1-2 s duplicate address detection)
            ip_cmd("-n", ns, "-6", "addr", "add", v6 + "/64", "dev", dev, "nodad")
        self.run("gw", "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.run("gw", "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        for ns, via4, via6 in ((sbx, a.gw_sbx4, a.gw_sbx6), (ext, a.gw_ext4, a.gw_ext6)):
            ip_cmd("-n", ns, "route", "add", "default", "via", via4)
            ip_cmd("-n", ns, "-6", "route", "add", "default", "via", via6)

    def add_ext_address(self, n: int) -> str:
        """Give ext another IPv4 address (n >= 0) and return it; routed like the others."""
        address = self.addr.ext_extra4(n)
        ip_cmd("-n", self.ns["ext"], "addr", "add", address + "/24", "dev", "eth0")
        self._extra4.append(address)
        return address

    def set_resolver(self, role: str, nameserver: str) -> None:
        """Programs run with `ip netns exec` in `role` resolve names through `nameserver`:
        iproute2 bind-mounts /etc/netns/<name>/resolv.conf over /etc/resolv.conf."""
        directory = os.path.join("/etc/netns", self.ns[role])
        os.makedirs(directory, exist_ok=True)
        self._etc_dirs.append(directory)
        with open(os.path.join(directory, "resolv.conf"), "w") as f:
            f.write("nameserver %s\noptions timeout:1 attempts:1\n" % nameserver)

    def set_rps(self, role: str, cpus=(), iface: str = "eth0") -> dict[str, str]:
        """Steer the receive work of `role`'s `iface` (default: eth0 of sbx or ext) to
        `cpus` with RPS (Receive Packet Steering); `()` switches RPS off again (the
        kernel's default, mask 0). Returns the previous mask of each rx queue.

        Why: a veth delivers what it transmits through the receiving namespace's backlog,
        and without RPS the softirq that drains that backlog runs at once, on the sending
        CPU, inside the sender's syscall. On the benchmark's gateway the sender is the
        daemon: a verdict re-injected by egress is forwarded to ext0/sbx0, and the whole
        TCP work of the receiving host (the server's SYN handling, accept wake-ups, the
        answer coming back and being queued) runs inside the daemon's verdict syscall and
        is charged to it. On a real gateway the sandbox host and the Internet servers are
        other machines. With RPS on sbx's and ext's eth0 the packet is queued to another
        CPU's backlog (an IPI), and that work runs there, as it would on the remote hosts;
        `egress run --cpus` keeps the daemon off those CPUs. The mask is per namespace (the
        namespace's /sys/class/net), nothing outside the topology changes, and the veth
        disappears with its namespace.
        """
        text = cpu_mask(cpus)
        queues = self.run(role, "sh", "-c", "ls -d /sys/class/net/%s/queues/rx-*" % iface).stdout.split()
        before = {}
        for queue in queues:
            path = queue + "/rps_cpus"
            before[path] = self.run(role, "cat", path).stdout.strip()
            self.run(role, "sh", "-c", "echo %s > %s" % (text, path))
        return before

    def close(self) -> None:
        for directory in self._etc_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        self._etc_dirs.clear()
        for proc in reversed(self._procs):
            stop_process(proc)
        self._procs.clear()
        for name in reversed(self._created):
            kill_netns_pids(name)
            ip_cmd("netns", "del", name, check=False)
        self._created.clear()

    # -- running programs inside ---------------------------------------------------

    def argv(self, role: str, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns[role], *argv]

    def run(self, role: str, *argv: str, check: bool = True, timeout: float = 30.0,
            input: str | bytes | None = None, text: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(self.argv(role, *argv), capture_output=True, text=text, timeout=timeout,
                              input=input)
        if check and proc.returncode != 0:
            raise NetnsError("%s: %s failed (%d): %s" % (role, " ".join(argv), proc.returncode,
                                                         (proc.stderr or proc.stdout or "").strip()[:500]))
        return proc

    def popen(self, role: str, argv: list[str], **kwargs) -> subprocess.Popen:
        """Start a program in a namespace; it is stopped by close() if still running."""
        kwargs.setdefault("start_new_session", True)
        proc = subprocess.Popen(self.argv(role, *argv), **kwargs)
        self._procs.append(proc)
        return proc


def cpu_mask(cpus) -> str:
    """CPUs as the hex mask sysfs reads (comma-separated 32-bit words): (0,) -> "1",
    (0, 1) -> "3", (33,) -> "2,00000000", () -> "0"."""
    mask = 0
    for cpu in cpus:
        mask |= 1 << int(cpu)
    words = []
    while True:
        words.append(mask & 0xFFFFFFFF)
        mask >>= 32
        if not mask:
            break
    words.reverse()
    return ",".join(["%x" % words[0]] + ["%08x" % w for w in words[1:]])


def stop_process(proc: subprocess.Popen, timeout: float = 3.0) -> None:
    """SIGTERM, then SIGKILL, the process we started (by pid, never by name)."""
    if proc.poll() is not None:
        return
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    except ProcessLookupError:
        pass


def kill_netns_pids(name: str) -> None:
    """Kill processes still living in a namespace we created (stray children of our own
    programs, e.g. sshd's session processes), so that deleting it frees it for good."""
    proc = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
    for pid in proc.stdout.split():
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass
    if proc.stdout.strip():
        time.sleep(0.05)


def cleanup_stale(prefix: str = "egl-") -> list[str]:
    """Delete leftover namespaces with our prefix (after a crash); returns their names."""
    removed = []
    for name in sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []:
        if name.startswith(prefix):
            kill_netns_pids(name)
            ip_cmd("netns", "del", name, check=False)
            removed.append(name)
    return removed
