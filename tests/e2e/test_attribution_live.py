"""Who a live flow belongs to, end to end: a sandbox declared by the gateway's interface
in the rules gets its own policy; a sandbox and episode registered through the
attribution API (`egress run --sandbox-api`) reach the EVE events and the violations
the API reports; a SIGHUP reloads the shipped pool/tunnel lists without an error.
"""
from __future__ import annotations

import json
import subprocess

from tests.e2e.lab import PY, Gateway, echo_server_code, records, start_echo

IFACE_RULES = """\
version: 1
default_policy: open
sandboxes:
  sbx1:
    interfaces: [%(iface)s]
    policy: strict
policies:
  open:
    mode: enforce
    rules:
      - name: block-mining
        action: drop
        categories: [mining]
    default: allow
  strict:
    mode: enforce
    rules:
      - name: block-mining
        action: drop
        categories: [mining]
      - name: strict-no-7031
        action: reject
        ports: [7031]
    default: allow
"""

REFUSED = ("error:ConnectionRefusedError", "error:ConnectionResetError")


def exchange_from(lab, role: str, host: str, port: int, data: bytes) -> str:
    """Like Lab.tcp_exchange, from any namespace."""
    code = ("import socket\n"
            "try:\n"
            " s=socket.create_connection((%r,%d),timeout=3); s.sendall(%r); s.shutdown(socket.SHUT_WR); d=b''\n"
            " while True:\n"
            "  c=s.recv(65536)\n"
            "  if not c: break\n"
            "  d+=c\n"
            " print('ok:'+d.decode('latin-1'))\n"
            "except Exception as e: print('error:'+type(e).__name__)\n") % (host, port, data)
    return lab.topo.run(role, PY, "-c", code, timeout=20).stdout.strip()


def test_sandbox_declared_by_interface_gets_its_own_policy_live(lab, tmp_path):
    rules = tmp_path / "iface.yaml"
    rules.write_text(IFACE_RULES % {"iface": lab.topo.sbx_iface})
    start_echo(lab.topo, lab.ext4, 7031)
    echo = lab.topo.popen("sbx", [PY, "-c", echo_server_code(lab.topo.addr.sbx4, 7031)], stdout=subprocess.PIPE,
                          text=True)
    assert echo.stdout.readline().strip() == "ready"
    gw = Gateway(lab.topo, lab.workdir, rules=[str(rules)], name="iface")
    try:
        # Arriving on the sandbox interface: sandbox sbx1, policy strict, port 7031 rejected.
        assert exchange_from(lab, "sbx", lab.ext4, 7031, b"out") in REFUSED
        # The same port, opened from the outside: arrives on ext0, no sandbox, policy open.
        assert exchange_from(lab, "ext", lab.topo.addr.sbx4, 7031, b"in") == "ok:in"
    finally:
        assert gw.stop() == 0
    flows = {e["src_ip"]: e for e in gw.flows_to(7031)}
    out, inbound = flows[lab.topo.addr.sbx4], flows[lab.ext4]
    assert out["in_iface"] == lab.topo.sbx_iface and out["sandbox"]["id"] == "sbx1"
    assert out["verdict"]["action"] == "reject" and out["verdict"]["rule"] == "strict-no-7031"
    assert inbound["in_iface"] == lab.topo.ext_iface and "sandbox" not in inbound
    assert inbound["verdict"]["action"] == "allow"
    alerts = [e for e in gw.events("alert") if e["dest_port"] == 7031]
    assert alerts and all(a["sandbox"]["id"] == "sbx1" and a["in_iface"] == lab.topo.sbx_iface for a in alerts)


def test_sighup_reloads_the_shipped_domain_lists_without_an_error(lab, repo_root):
    gw = Gateway(lab.topo, lab.workdir, rules=[str(repo_root / "rules" / "default.yaml")], name="lists")
    try:
        gw.hup("egress: reloaded")
        gw.hup("egress: reloaded")
        log = gw.stderr()
    finally:
        assert gw.stop() == 0
    assert log.count("egress: reloaded") == 2
    # The daemon's error lines on reload: a bad rules/model file, or a domain list kept.
    for bad in ("reload failed", "kept the previous domain list", "Traceback", "cannot read"):
        assert bad not in log, log


def api_call(lab, port: int, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    """An HTTP request to the attribution API on the gateway's loopback (from inside gw)."""
    code = ("import json,sys,urllib.request,urllib.error\n"
            "body=%r\n"
            "req=urllib.request.Request('http://127.0.0.1:%d'+%r, method=%r,\n"
            "    data=None if body is None else json.dumps(body).encode(), headers={'Content-Type':'application/json'})\n"
            "try:\n"
            " r=urllib.request.urlopen(req, timeout=5); print(r.status); print(r.read().decode())\n"
            "except urllib.error.HTTPError as e: print(e.code); print(e.read().decode())\n") % (body, port, path, method)
    out = lab.topo.run("gw", PY, "-c", code, timeout=20).stdout.splitlines()
    return int(out[0]), json.loads(out[1])


def test_sandbox_api_registration_reaches_eve_and_violations(lab, tmp_path, repo_root):
    port = 8731
    record = lab.sim_pool("stratum", 3341)
    start_echo(lab.topo, lab.ext4, 7032)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(repo_root / "rules" / "default.yaml")],
                 extra=["--sandbox-api", "127.0.0.1:%d" % port], name="api")
    try:
        status, answer = api_call(lab, port, "POST", "/v1/sandboxes",
                                  {"ip": lab.topo.addr.sbx4, "sandbox": "agent-7", "episode": "ep-42"})
        assert status == 201, answer
        assert exchange_from(lab, "sbx", lab.ext4, 7032, b"fine") == "ok:fine"
        lab.sbx(PY, "-m", "egress.sim.stratum", "client", "--connect", "%s:3341" % lab.ext4, "--duration", "2",
                "--share-interval", "0.2", timeout=20)
        assert not [r for r in records(record) if r["dir"] == "in"]      # the pool never heard the miner
        status, violations = api_call(lab, port, "GET", "/v1/violations?sandbox=agent-7&episode=ep-42")
        assert status == 200, violations
        status, other = api_call(lab, port, "GET", "/v1/violations?sandbox=someone-else")
        assert status == 200 and other["count"] == 0
    finally:
        assert gw.stop() == 0
    mining = [v for v in violations["violations"] if v.get("dest_port") == 3341]
    assert violations["count"] >= 1 and mining, violations
    assert mining[0]["sandbox"] == {"id": "agent-7", "episode": "ep-42"} and mining[0]["action"] == "drop"
    flows = [e for e in gw.events() if e["src_ip"] == lab.topo.addr.sbx4 and e["dest_port"] in (3341, 7032)]
    assert {e["dest_port"] for e in flows} == {3341, 7032}
    for e in flows:
        assert e["sandbox"] == {"id": "agent-7", "episode": "ep-42"}, e
        assert e["in_iface"] == lab.topo.sbx_iface
    assert {e["dest_port"]: e["verdict"]["action"] for e in flows} == {3341: "drop", 7032: "allow"}
