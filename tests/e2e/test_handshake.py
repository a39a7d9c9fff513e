"""Handshake copies, live: the SYN-ACK and the ACK that completes a TCP handshake pass
without queueing (a copy goes to the daemon) -- only when they carry no payload. A
crafted third packet with data, even one byte, is queued and judged like any other."""
from __future__ import annotations

import json
import subprocess

from egress.drivers.iptables import Iptables, RuleSpec
from tests.e2e.lab import PY, Gateway, start_echo

# In sbx, with scapy: a handshake whose third packet is built by hand (the kernel's own
# RST for the unknown connection is dropped), then the rule counters tell where it went.
CRAFTED = """
import sys
from scapy.all import IP, TCP, Raw, conf, send, sr1
conf.verb = 0
dst, dport, sport, payload = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].encode()
synack = sr1(IP(dst=dst) / TCP(sport=sport, dport=dport, flags="S", seq=1000), timeout=3)
assert synack is not None and synack[TCP].flags == "SA", synack
third = IP(dst=dst) / TCP(sport=sport, dport=dport, flags="A", seq=1001, ack=synack[TCP].seq + 1)
send(third / Raw(payload) if payload else third)
print("sent")
"""


def counters(lab) -> dict[str, int]:
    """Packets into the handshake chain and into the queue (IPv4)."""
    out = lab.topo.run("gw", "iptables", "-w", "-L", "-v", "-x", "-n").stdout
    chains, chain = {}, None
    for line in out.splitlines():
        if line.startswith("Chain "):
            chain = line.split()[1]
        elif chain and line.split() and line.split()[0].isdigit():
            chains.setdefault(chain, []).append((int(line.split()[0]), line))
    hs = chains["EGRESS-HS"][0][0]                     # its first rule sees every packet sent there
    queued = sum(n for n, line in chains["EGRESS-FWD"] if "NFQUEUE" in line)
    return {"copied": hs, "queued": queued}


def test_only_payload_less_handshake_packets_skip_the_queue(lab):
    start_echo(lab.topo, lab.ext4, 7401)
    ipt = Iptables(lab.topo.ns["gw"])
    # No daemon: --queue-bypass lets queued packets through, so only the rules are tested.
    ipt.install(RuleSpec(sandbox_iface=lab.topo.sbx_iface, bypass=True, watch_group=5700))
    lab.topo.run("sbx", "iptables", "-w", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP")
    try:
        seen = [counters(lab)]
        for sport, payload in ((41001, ""), (41002, "x"), (41003, "abc"), (41004, "abcd"), (41005, "x" * 40)):
            out = lab.topo.run("sbx", PY, "-c", CRAFTED, lab.ext4, "7401", str(sport), payload, timeout=20).stdout
            assert out.strip() == "sent"
            seen.append(counters(lab))
    finally:
        ipt.remove()
        lab.topo.run("sbx", "iptables", "-w", "-D", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP")
    steps = [{k: after[k] - before[k] for k in after} for before, after in zip(seen, seen[1:])]
    # Each connection: the SYN is queued, the SYN-ACK copied; the third packet is copied
    # only when it is empty. (With data, the server's answers are queued too.)
    assert steps[0] == {"copied": 2, "queued": 1}
    assert [step["copied"] for step in steps[1:]] == [1] * 4
    assert all(step["queued"] >= 2 for step in steps[1:])


def test_the_engine_sees_handshake_copies_in_their_place(lab, tmp_path):
    start_echo(lab.topo, lab.ext4, 7402)
    gw = Gateway(lab.topo, lab.workdir, rules=[], name="handshake")
    try:
        for i in range(5):
            assert lab.tcp_exchange(lab.ext4, 7402, b"h%d" % i) == "ok:h%d" % i
    finally:
        assert gw.stop() == 0
    stats = json.loads([l for l in gw.stderr().splitlines() if l.startswith("egress: stats ")][-1][14:])
    assert stats["driver.handshake_packets"] == 10                  # a SYN-ACK and an ACK per connection
    assert stats["nflog.handshake.packets"] == 10
    flows = gw.flows_to(7402)
    assert len(flows) == 5
    for flow in flows:          # the engine saw the whole handshake, in order (initiator from the SYN)
        assert flow["flow"]["initiator"] == "syn" and flow["flow"]["pkts_toclient"] >= 2
