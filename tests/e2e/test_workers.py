"""Workers live (`egress run --queue 0-1 --workers`): one sandbox's connections to one
server spread over both workers, and a policy that allows a domain by the addresses DNS
answered holds on every worker, whichever worker saw the DNS answer."""
from __future__ import annotations

import json

from tests.e2e.lab import Gateway, start_echo

RULES = """\
version: 1
default_policy: lab
policies:
  lab:
    mode: enforce
    rules:
      - name: dns
        action: allow
        ports: [53]
        proto: [udp, tcp]
      - name: echo-by-name
        action: allow
        proto: tcp
        ports: [7011]
        domains: [echo.egress.test]
    default: reject
"""


def test_a_domain_learned_from_dns_by_one_worker_allows_connections_on_every_worker(lab, tmp_path):
    rules = tmp_path / "by-name.yaml"
    rules.write_text(RULES)
    start_echo(lab.topo, lab.ext4, 7011)
    start_echo(lab.topo, lab.ext4, 7012)
    lab.server("dns", "--host", lab.ext4, "--zone", "echo.egress.test=" + lab.ext4)
    lab.topo.set_resolver("sbx", lab.ext4)
    eve = tmp_path / "w.json"
    gw = Gateway(lab.topo, lab.workdir, rules=[str(rules)], extra=["--queue", "0-1", "--workers", "--eve", str(eve)],
                 name="workers-dns")
    try:
        # Not learned yet: the address alone is no name; the flow never gets its answer.
        assert lab.tcp_exchange(lab.ext4, 7011, b"early", timeout=1.0).startswith("error:")
        assert lab.ext4 in lab.sbx("getent", "ahostsv4", "echo.egress.test").stdout
        # By address, no name in the traffic: allowed by the DNS answer, on both workers.
        replies = [lab.tcp_exchange(lab.ext4, 7011, b"n%d" % i) for i in range(8)]
        # Another port of the same address is not in the rule.
        other = lab.tcp_exchange(lab.ext4, 7012, b"other")
    finally:
        assert gw.stop() == 0
    assert replies == ["ok:n%d" % i for i in range(8)]
    assert other in ("error:ConnectionRefusedError", "error:ConnectionResetError")
    flows = {name: [json.loads(l) for l in (tmp_path / name).read_text().splitlines()]
             for name in ("w.q0.json", "w.q1.json")}
    judged = {name: [e for e in events if e["event_type"] == "flow" and e["dest_port"] == 7011
                     and e["verdict"]["rule"] == "echo-by-name"] for name, events in flows.items()}
    assert all(judged.values()), {n: len(v) for n, v in judged.items()}      # both workers allowed some
    dns = [name for name, events in flows.items() if any(e["dest_port"] == 53 for e in events)]
    assert len(dns) >= 1
    assert "peers.sent" in gw.stderr()
