"""Real OpenSSH through the gateway under a policy that allows SSH but blocks reverse
tunnels: -N with -L and -D carry data intact, while an `ssh -R` tunnel is cut as soon as
the outside uses it to reach back into the sandbox (nested SSH handshake inside the
session), and the outside never gets a shell in the sandbox."""
from __future__ import annotations

import hashlib
import os
import subprocess
import time

import pytest

from tests.e2e.lab import Gateway, start_echo
from tests.e2e.test_live import start_sshd, write_rules


@pytest.fixture(scope="module")
def ssh_lab(lab, tmp_path_factory):
    if not os.path.exists("/usr/sbin/sshd") or not os.path.exists("/usr/bin/ssh"):
        pytest.skip("needs OpenSSH's sshd and ssh")
    d = tmp_path_factory.mktemp("ssh")
    os.chmod(d, 0o755)
    ssh = start_sshd(lab, d, port=2200)
    gw = Gateway(lab.topo, lab.workdir, rules=[write_rules(d / "rules.yaml")], name="sshfwd")
    yield ssh, d, gw
    gw.stop()


def wait_port(lab, role: str, port: int, timeout: float = 8.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ":%d " % port in lab.topo.run(role, "ss", "-ltnH", check=False).stdout:
            return True
        time.sleep(0.1)
    return False


def test_ssh_N_L_forward_carries_data(lab, ssh_lab):
    ssh, _, _ = ssh_lab
    start_echo(lab.topo, lab.ext4, 7300)
    fwd = lab.topo.popen("sbx", [*ssh[:-1], "-N", "-L", "7301:%s:7300" % lab.ext4, ssh[-1]],
                         stderr=subprocess.DEVNULL)
    try:
        assert wait_port(lab, "sbx", 7301)
        payload = os.urandom(200_000).hex()[:100_000]
        assert lab.tcp_exchange("127.0.0.1", 7301, payload.encode(), timeout=5) == "ok:" + payload
    finally:
        fwd.terminate()


def test_ssh_D_socks_proxy_carries_a_download(lab, ssh_lab):
    ssh, d, _ = ssh_lab
    www = d / "www"
    www.mkdir()
    blob = os.urandom(500_000)
    (www / "blob").write_bytes(blob)
    cert, key = lab.cert
    lab.server("https", "--host", lab.ext4, "--port", "8443", "--cert", cert, "--key", key, "--root", str(www))
    socks = lab.topo.popen("sbx", [*ssh[:-1], "-N", "-D", "127.0.0.1:1080", ssh[-1]], stderr=subprocess.DEVNULL)
    try:
        assert wait_port(lab, "sbx", 1080)
        got = lab.sbx("sh", "-c", "curl -sS -k --max-time 10 --socks5 127.0.0.1:1080 https://%s:8443/blob | sha256sum"
                      % lab.ext4)
        assert got.stdout.split()[0] == hashlib.sha256(blob).hexdigest(), got.stderr
    finally:
        socks.terminate()


def test_ssh_R_tunnel_is_cut_when_the_outside_reaches_back(lab, ssh_lab):
    ssh, d, gw = ssh_lab
    # The sandbox's own sshd, the target an attacker would reach through -R.
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "sbx_host")], check=True)
    (d / "sbx_sshd").write_text("Port 22\nListenAddress 127.0.0.1\nHostKey %s\nAuthorizedKeysFile %s\n"
                                "PasswordAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\n"
                                % (d / "sbx_host", d / "authorized_keys"))
    lab.topo.popen("sbx", ["/usr/sbin/sshd", "-D", "-e", "-f", str(d / "sbx_sshd")], stderr=subprocess.DEVNULL)
    tunnel = lab.topo.popen("sbx", [*ssh[:-1], "-N", "-R", "9999:127.0.0.1:22", ssh[-1]], stderr=subprocess.DEVNULL)
    try:
        assert wait_port(lab, "ext", 9999)
        back = lab.topo.run("ext", "timeout", "5", "ssh", "-i", str(d / "user"), "-p", "9999", "-o",
                            "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes",
                            "root@127.0.0.1", "echo", "inside-the-sandbox", check=False, timeout=20)
        assert "inside-the-sandbox" not in back.stdout
    finally:
        tunnel.terminate()
    alerts = [e for e in gw.events("alert") if e["dest_port"] == 2200 and e["verdict"]["action"] == "drop"]
    assert alerts and alerts[0]["verdict"]["rule"] == "block-tunnels"
    assert any(det["category"] == "reverse_tunnel" for det in alerts[0]["detections"])
