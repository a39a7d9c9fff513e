"""Evasions of the live gateway, end to end: a sandbox client and an outside server that
both belong to the attacker try to make egress stop inspecting a flow before the real
traffic starts.

Fake FINs. Each side sends a FIN with a sequence number half the sequence space away
from the real one (from a raw socket, so the real TCP stacks know nothing of it); the
receivers ignore it (out of their window), conntrack on the gateway classifies it
INVALID. Before the fix such packets had no connmark and fell through to the NFQUEUE
rule, the engine took both directions as closed, let its detectors conclude on empty
streams, allowed the flow and handed it to the kernel fast path: the Stratum login that
followed reached the pool. Now the gateway drops ctstate INVALID before anything else
(egress.drivers.iptables), so the engine never sees the fake FINs and the login is
inspected and dropped as usual.

The same fake FINs at the exact next sequence number but with a TCP timestamp older than
the receiver's last one: conntrack finds them in window (it does not check timestamps) and
the receivers discard them (PAWS). The engine closes this one: a flow that closed while
it was inspected stays in the queue, and data beyond a FIN drops the flow (exception
policy, alert; see egress.engine and FlowTable.data_after_fin).

Own topology (10.209.0.0/16, fd09:209::/48, namespaces "egev-..."), removed at the end of
the module, also on failure.
"""
from __future__ import annotations

import json
import random
import subprocess
import time

import pytest

from tests.e2e.conftest import live_lab
from tests.e2e.lab import PY, Gateway, records

RULES = """\
version: 1
default_policy: lab
policies:
  lab:
    mode: enforce
    rules:
      - name: block-mining
        action: drop
        categories: [mining]
    default: allow
"""

# Runs in sbx: connect from a fixed port while sniffing the handshake (to learn both
# initial sequence numbers and TCP timestamps), print them, then on each stdin line either
# send a crafted FIN from a raw socket ("fin SEQ ACK [TSVAL TSECR]") or send the Stratum
# subscribe and print what came back.
CLIENT = r"""
import json, socket, struct, sys
from egress.testing.craft import tcp
host, port, sport, fam = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
af = socket.AF_INET if fam == 4 else socket.AF_INET6
sniff = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0003))
sniff.bind(("eth0", 0)); sniff.settimeout(5)
s = socket.socket(af); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("", sport)); s.settimeout(5); s.connect((host, port))
me = s.getsockname()[0]

def tsval(seg):
    opts, i = seg[20:(seg[12] >> 4) * 4], 0
    while i < len(opts) and opts[i] != 0:
        if opts[i] == 1:
            i += 1
            continue
        if opts[i] == 8:
            return struct.unpack("!I", opts[i + 2:i + 6])[0]
        i += opts[i + 1]
    return 0

hello = {"me": me}
while len(hello) < 3:
    pkt = sniff.recv(65536)
    if fam == 4 and pkt[0] >> 4 == 4 and pkt[9] == 6:
        seg = pkt[(pkt[0] & 15) * 4:]
    elif fam == 6 and pkt[0] >> 4 == 6 and pkt[6] == 6:
        seg = pkt[40:]
    else:
        continue
    a, b, seq = struct.unpack("!HHI", seg[:8])
    if seg[13] & 0x02 and sport in (a, b) and port in (a, b):
        hello["server" if seg[13] & 0x10 else "client"] = [seq, tsval(seg)]
sniff.close()
print(json.dumps(hello), flush=True)
raw = socket.socket(af, socket.SOCK_RAW, socket.IPPROTO_RAW)
for line in sys.stdin:
    words = line.split()
    if words[0] == "fin":
        n = [int(w) for w in words[1:]]
        opts = b"\x01\x01\x08\x0a" + struct.pack("!II", n[2], n[3]) if len(n) > 2 else b""
        raw.sendto(tcp(me, host, sport, port, flags="FA", seq=n[0], ack=n[1], options=opts), (host, 0))
        print("sent", flush=True)
    else:
        s.sendall(b'{"id": 1, "method": "mining.subscribe", "params": ["cpuminer/2.5.1"]}\n')
        try:
            got = s.recv(4096).decode("latin-1").strip() or "eof"
        except OSError as e:
            got = "error:" + type(e).__name__
        print(json.dumps({"reply": got}), flush=True)
        break
"""

# Runs in ext: the pool's crafted FIN toward the client ("SRC DST SPORT DPORT SEQ ACK [TSVAL TSECR]").
SERVER_FIN = r"""
import socket, struct, sys
from egress.testing.craft import tcp
src, dst = sys.argv[1:3]
sport, dport, seq, ack, *ts = [int(w) for w in sys.argv[3:]]
opts = b"\x01\x01\x08\x0a" + struct.pack("!II", *ts) if ts else b""
raw = socket.socket(socket.AF_INET if ":" not in dst else socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)
raw.sendto(tcp(src, dst, sport, dport, flags="FA", seq=seq, ack=ack, options=opts), (dst, 0))
"""

MOD = 1 << 32


def fake_fins(kind: str, hello: dict) -> tuple[list[int], list[int]]:
    """The (client's, server's) fake FIN: SEQ ACK [TSVAL TSECR].

    far:  half the sequence space away from the real next byte, outside any window
          (conntrack: INVALID; receiver: out of window, ignored).
    paws: the exact next sequence number, but a TCP timestamp older than the last one the
          receiver saw (conntrack: in window, valid; receiver: discarded by PAWS)."""
    (cisn, cts), (sisn, sts) = hello["client"], hello["server"]
    if kind == "far":
        return ([(cisn + 1 + (1 << 31)) % MOD, (sisn + 1) % MOD],
                [(sisn + 1 + (1 << 31)) % MOD, (cisn + 1) % MOD])
    return ([(cisn + 1) % MOD, (sisn + 1) % MOD, (cts - 10 ** 6) % MOD, sts],
            [(sisn + 1) % MOD, (cisn + 1) % MOD, (sts - 10 ** 6) % MOD, cts])


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with live_lab(tmp_path_factory, "evasion", "10.209.0.0/16", "fd09:209::/48", "egev-") as lab:
        yield lab


@pytest.fixture(scope="module")
def gateway(lab):
    path = lab.workdir / "evasion.yaml"
    path.write_text(RULES)
    gw = Gateway(lab.topo, lab.workdir, rules=[str(path)], name="evasion")
    yield gw
    gw.stop()


def invalid_drops(lab, family: int) -> int:
    """Packets counted by the INVALID drop rule of EGRESS-FWD (0 when there is none)."""
    tool = "iptables" if family == 4 else "ip6tables"
    out = lab.topo.run("gw", tool, "-w", "-L", "EGRESS-FWD", "-v", "-x", "-n").stdout
    return sum(int(line.split()[0]) for line in out.splitlines() if "INVALID" in line and " DROP " in line)


def stratum_login(lab, host: str, port: int, family: int, fins: str | None) -> tuple[str, list[str]]:
    """One Stratum subscribe from sbx, optionally preceded by a fake FIN from each side
    (`fins`: see fake_fins); returns (what the client got back, what the pool received)."""
    record = lab.sim_pool("stratum", port, host=host, duration=30)
    sport = random.randint(42000, 48000)
    client = lab.topo.popen("sbx", [PY, "-c", CLIENT, host, str(port), str(sport), str(family)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = client.stdout.readline()
        assert first, client.stderr.read()
        hello = json.loads(first)
        if fins:
            mine, theirs = fake_fins(fins, hello)
            client.stdin.write("fin %s\n" % " ".join(map(str, mine)))
            client.stdin.flush()
            assert client.stdout.readline().strip() == "sent"
            lab.topo.run("ext", PY, "-c", SERVER_FIN, host, hello["me"], str(port), str(sport), *map(str, theirs))
            time.sleep(0.5)        # both fake FINs went through the gateway (or were dropped there)
        client.stdin.write("subscribe\n")
        client.stdin.flush()
        reply = json.loads(client.stdout.readline() or '{"reply": "none"}')["reply"]
        client.wait(timeout=10)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    time.sleep(0.3)
    received = [r["msg"].get("method") for r in records(record) if r["dir"] == "in"]
    return reply, received


@pytest.mark.parametrize("family", [4, 6])
def test_without_fake_fins_the_stratum_subscribe_is_dropped(lab, gateway, family):
    host = lab.ext4 if family == 4 else lab.ext6
    reply, received = stratum_login(lab, host, 3340 + family, family, None)
    assert "mining.subscribe" not in received, (reply, received)
    assert reply.startswith("error:"), reply


@pytest.mark.parametrize("family", [4, 6])
def test_fake_fins_from_both_sides_do_not_end_inspection(lab, gateway, family):
    host = lab.ext4 if family == 4 else lab.ext6
    before = invalid_drops(lab, family)
    reply, received = stratum_login(lab, host, 3350 + family, family, "far")
    assert "mining.subscribe" not in received, (reply, received)
    assert reply.startswith("error:"), reply
    # Both fake FINs were dropped by the gateway's INVALID rule, visibly.
    assert invalid_drops(lab, family) - before >= 2


def test_in_window_fake_fins_dropped_by_paws_do_not_end_inspection(lab, gateway):
    before = invalid_drops(lab, 4)
    reply, received = stratum_login(lab, lab.ext4, 3360, 4, "paws")
    assert invalid_drops(lab, 4) == before           # conntrack found nothing wrong with them
    assert "mining.subscribe" not in received, (reply, received)
