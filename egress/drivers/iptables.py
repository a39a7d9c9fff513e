"""egress's own iptables/ip6tables rules: queue undecided flows, fast-path decided ones.

Layout (the same for IPv4 and IPv6, so nothing bypasses egress over v6). One chain,
EGRESS-FWD (gateway: jumped to from FORWARD for traffic from and to the sandbox side)
or EGRESS-OUT (sidecar: jumped to from OUTPUT and INPUT, loopback excepted)::

    0 -m conntrack --ctstate INVALID  -j DROP                   (see "INVALID" below)
    1 -m mark --mark SAVE/SAVE        -j CONNMARK --save-mark   (verdict mark -> connmark)
    2 -m connmark --mark ALLOW/MASK   -j ACCEPT                 (fast path: decided flows
    3 -m connmark --mark DROP/MASK    -j DROP                    never reach the queue)
    r -p tcp --tcp-flags RST RST -m length --length 40|60 -m connmark --mark REJECT/MASK
                                      -j ACCEPT                  (sidecar only: REJECT's own
                                                                 reset, see reset_rules)
    4 -p tcp -m connmark --mark REJECT/MASK -j REJECT --reject-with tcp-reset
    5 -m connmark --mark REJECT/MASK  -j REJECT --reject-with icmp(6)-port-unreachable
    o -p tcp -m connmark --mark ONEWAY/MASK
      --tcp-flags FIN,SYN,RST NONE -m conntrack --ctdir REPLY
                                      -j ACCEPT                 (the server's side of a flow
                                                                 inspected on the client's
                                                                 side only; see below)
    a -p tcp --syn                    -j CONNMARK --set-xmark SYN_SEEN
    b -p tcp --tcp-flags ALL ACK -m connmark --mark SYN_SEEN
                                      -j EGRESS-FWD-ACK          (pure ACKs: accepted there,
                                                                 never queued nor copied;
                                                                 see below)
    w -m connmark --mark WATCH|SLOT   -j NFLOG --nflog-group G+SLOT  (allowed, still watched
    w -m connmark --mark WATCH/MASK   -j ACCEPT                  by the classifier: a copy)
    o -p tcp -m connmark --mark ONEWAY_WATCH|SLOT ... -j NFLOG --nflog-group G+SLOT
    o -p tcp -m connmark --mark ONEWAY_WATCH/MASK ... -j ACCEPT  (the same, watched: a copy)
    6 -m mark --mark ALLOW/MASK       -j ACCEPT                 (the verdict mark itself, for
    7 -m mark --mark DROP/MASK        -j DROP                    untracked packets)
    8 -p tcp -m mark --mark REJECT*   -j REJECT --reject-with tcp-reset
    9 -m mark --mark REJECT*          -j REJECT --reject-with icmp(6)-port-unreachable
   10 -j NFQUEUE --queue-num N [--queue-bypass]
      (several queues: s rules give each new connection a slot in its connmark, one
      NFQUEUE rule per slot sends it to its queue, so both directions of a connection
      always reach the same worker; untracked packets go to the first queue)

Why this order: an NF_ACCEPT verdict from the queue resumes at the *next hook*, so a
rule after the NFQUEUE rule would never see the packet. The daemon therefore gives a
decided packet its verdict as a mark plus NF_REPEAT: the packet re-enters the chain
from the top, rule 1 copies the mark into the connmark, and rules 2-5 apply it, to this
packet and, without queueing, to every later packet of the flow in both directions.
Rules 6-9 apply the mark of a repeated packet that has no conntrack entry (IPv6
neighbour discovery and MLD, which conntrack leaves UNTRACKED, e.g. in a sidecar; raw
NOTRACK): measured, without them such a packet loops between the queue and the chain.
REJECT_ONCE (not saved) rejects one packet of a flow that is not decided for good. WATCH
(rules w, present when `watch_group` is set) is an allowed flow that the classifier
still watches: its packets pass at once and a copy of their headers goes to the NFLOG
group of the worker that owns the flow (the SLOT bits of the mark; see
egress.drivers.nflog); the daemon later rewrites the connmark to ALLOW when the
classifier is done, or to DROP/REJECT when a checkpoint blocks the flow. (A WATCH
verdict mark on an untracked packet is accepted like ALLOW, between rules 6 and 7.)

ONEWAY (rules o, egress.inspect.stage): a TCP flow whose server side spent its
inspection budget first (8 KiB, or 96 payload packets) while the client's side is
still inspected: a pool that sends a long banner so that the miner's login comes after
the depth. The client's packets stay queued, so its login is still judged inline; the
server's (a download's data) pass in the kernel, with copies for the classifier under
ONEWAY_WATCH. Before it, a server could end the inspection of both sides by talking.
The ONEWAY rule comes right after the fast path's, connmark first: after the pure-ACK
and watch rules, every data packet of a download walked the pure-ACK chain's u32 tests
first, and bench_live's download ran at 86 % of the baseline (see BENCHMARKS.md).
The client's packet that made its flow ONEWAY passes by its verdict mark (beside rule
6); the client's later packets reach the queue again, in their slot.

INVALID (rule 0, both families, counted by the rule: `iptables -L EGRESS-FWD -v`): a
packet conntrack cannot place in a connection (out of the receiver's window, bad
checksum, a FIN or RST of no known connection, an ICMP error about nothing) carries no
conntrack entry, hence no connmark, and used to fall through to the queue. That was an
evasion, shown end to end in tests/e2e/test_evasion.py: the sandbox client and an
outside server of the same attacker each send a FIN far outside the receiver's window
from a raw socket; the real endpoints ignore them, but the engine took both directions
as closed, its detectors concluded on empty streams, the flow was allowed and
fast-pathed, and the Stratum login that followed reached the pool. Such packets are now
dropped before anything else, as a stateful IPS does: never queued (the engine never
sees what the endpoints will not accept) and never forwarded. Measured on the lab
(gateway and sidecar, IPv4 and IPv6: TCP, UDP, ICMP echo, IPv6 neighbour discovery, the
reject paths, a connection kept across a daemon stop/start) and by the e2e suite: no
legitimate packet hit the rule. What it can cost: stragglers conntrack no longer knows
(retransmissions after a close, a FIN/RST of a connection idle since before the rules
were installed, unsolicited ICMP errors) are dropped instead of inspected.
Not closed by this rule but by the engine (tests/e2e/test_evasion.py): a fake FIN that
is in window for conntrack but that the receiver discards anyway (measured: a TCP
timestamp failing PAWS; likewise, untested, a TTL that expires past the gateway). A FIN
ends a direction for the detectors only once the stream reached it, a flow that closed
while inspected stays queued, and data beyond a FIN drops the flow (egress.engine).

PURE ACKs (rules a, b and the chain EGRESS-FWD-ACK or EGRESS-OUT-ACK, see
pure_ack_rules): a TCP packet with flags exactly ACK, no payload and an open window
carries nothing to inspect, and the engine does not track it on a flow it knows
(egress.engine.is_pure_ack; replay ignores it too, so both give the same verdicts).
Measured on bench_live's short connections: 4 of their 10 queued packets; not queueing
them took the daemon from 304 to 231 us of CPU per connection, most of it kernel work
(the re-injection forwarding the packet). Only on a connection whose SYN went through
this chain (rule a marks it; the SYN itself is queued, so the engine knows the flow): a
"connection" of bare ACKs that conntrack picked up mid-stream, which could carry data in
its sequence numbers, windows and timestamps to any host, is queued and judged like
any flow, as before.

Marks never cross network namespaces (the kernel scrubs them on veth), so a sandbox
cannot pre-mark its packets in gateway mode; in sidecar mode it would need CAP_NET_ADMIN
(SO_MARK), which a sandbox must not have.
Revocation rewrites the connmark of a live connection (see egress.drivers.enforce).

Guarantees:
- `install(spec)` is idempotent: it removes any earlier egress rules first, then
  installs the whole set in one iptables-restore transaction per family.
- `remove()` deletes exactly the rules tagged `-m comment --comment egress` from the
  built-in chains and our EGRESS-* chains, and nothing else; safe to run any number of
  times (e.g. `egress iptables remove` after a crash).
- Commands run in the current network namespace, or in `netns` via `ip netns exec`.
"""
from __future__ import annotations

import ipaddress
import shlex
import subprocess
from dataclasses import dataclass

COMMENT = "egress"
CHAIN_PREFIX = "EGRESS-"

# Packet/conn mark bits egress owns (other bits are left alone).
MARK_MASK = 0x0F000000          # the verdict
SLOT_MASK = 0x00F00000          # the worker that owns the connection: its queue, its NFLOG group
SLOT_SHIFT = 20
OWNED_BITS = MARK_MASK | SLOT_MASK
MARK_SAVE = 0x08000000          # marks with this bit are copied into the connmark
MARK_ALLOW = 0x09000000
MARK_DROP = 0x0A000000
MARK_REJECT = 0x0B000000
MARK_WATCH = 0x0C000000
MARK_ONEWAY = 0x0D000000        # still inspected on the client's side only: the server's packets pass
MARK_ONEWAY_WATCH = 0x0E000000  # the same, and the server's packets are copied to the watch group
MARK_REQUEUE = 0x01000000       # a connmark no rule matches: the connection is queued again
MARK_REJECT_ONCE = 0x03000000
MARK_SYN_SEEN = 0x00080000      # connmark: the connection's SYN went through our chain (see PURE ACKs)
MAX_SLOTS = 15                  # slot values 1..15 in SLOT_MASK; 0 = no slot yet
REJECT_BITS = 0x07000000        # under this mask REJECT and REJECT_ONCE both read 0x03000000

FAMILIES = (4, 6)


class IptablesError(RuntimeError):
    pass


@dataclass(frozen=True)
class RuleSpec:
    """What to divert to the queue and how."""
    mode: str = "gateway"                     # gateway (FORWARD) | sidecar (OUTPUT + INPUT)
    queues: tuple[int, ...] = (0,)
    bypass: bool = False                      # --queue-bypass: accept when no daemon is bound
    sandbox_iface: str | None = None
    sandbox_nets: tuple[str, ...] = ()
    metrics_port: int | None = None           # when set: drop sandbox-side access to it (INPUT)
    watch_group: int | None = None            # first NFLOG group of the watch path (None: no WATCH rules)
    watch_slots: int = 1                      # workers with their own group: watch_group + slot

    def __post_init__(self) -> None:
        if self.mode not in ("gateway", "sidecar"):
            raise ValueError("mode must be gateway or sidecar, not %r" % self.mode)
        if not self.queues:
            raise ValueError("at least one queue number is needed")
        qs = sorted(self.queues)
        if len(self.queues) > 1 and qs != list(range(qs[0], qs[-1] + 1)):
            raise ValueError("several queues must be a contiguous range, got %r" % (self.queues,))
        if len(self.queues) > MAX_SLOTS:
            raise ValueError("at most %d queues, got %d" % (MAX_SLOTS, len(self.queues)))
        if not 1 <= self.watch_slots <= MAX_SLOTS:
            raise ValueError("watch slots must be 1..%d, got %r" % (MAX_SLOTS, self.watch_slots))
        if self.watch_group is not None and not 0 <= self.watch_group <= 65535 - self.watch_slots:
            raise ValueError("bad NFLOG group %r" % self.watch_group)

    @property
    def chain(self) -> str:
        return CHAIN_PREFIX + ("FWD" if self.mode == "gateway" else "OUT")

    @property
    def ack_chain(self) -> str:
        return self.chain + "-ACK"

    def nets(self, family: int) -> list[str]:
        return [n for n in self.sandbox_nets if ipaddress.ip_network(n, strict=False).version == family]


def _tag() -> str:
    return "-m comment --comment %s" % COMMENT


def _queue_target(queue: int, spec: RuleSpec) -> str:
    return "-j NFQUEUE --queue-num %d" % queue + (" --queue-bypass" if spec.bypass else "")


def slot_bits(slot: int) -> int:
    """The connmark bits of slot `slot` (0-based): values 1..15, 0 meaning none yet."""
    return (slot + 1) << SLOT_SHIFT


def queue_rules(spec: RuleSpec) -> list[str]:
    """Where an undecided packet is queued. With several queues, each connection is given
    a slot on its first packet (round robin with `statistic nth`, in the connmark) and
    every later packet of it, in both directions, goes to that slot's queue. Unlike
    --queue-balance (a hash of the two addresses), this spreads the connections of a
    single sandbox talking to a single server over every worker."""
    qs = sorted(spec.queues)
    if len(qs) == 1:
        return ["%s %s" % (_tag(), _queue_target(qs[0], spec))]
    n, mask = len(qs), "0x%x" % SLOT_MASK
    rules = []
    for k in range(n):
        # Rule k takes 1/(n-k) of the connections the earlier ones left: 1/n each.
        pick = "-m statistic --mode nth --every %d --packet 0 " % (n - k) if k < n - 1 else ""
        rules.append("-m connmark --mark 0x0/%s %s%s -j CONNMARK --set-xmark 0x%x/%s"
                     % (mask, pick, _tag(), slot_bits(k), mask))
    for k, queue in enumerate(qs):
        rules.append("-m connmark --mark 0x%x/%s %s %s" % (slot_bits(k), mask, _tag(), _queue_target(queue, spec)))
    # Untracked packets (no connmark to hold a slot) still get inspected.
    return rules + ["%s %s" % (_tag(), _queue_target(qs[0], spec))]


def chain_rules(spec: RuleSpec, family: int) -> list[str]:
    """The body of the EGRESS chain for one family (iptables-restore syntax, no -A)."""
    unreach = "icmp-port-unreachable" if family == 4 else "icmp6-port-unreachable"
    m = "0x%x" % MARK_MASK
    owned = "0x%x" % OWNED_BITS
    return [
        # Packets conntrack calls INVALID (out of window, bad checksum, a FIN or RST of no
        # known connection, ...) carry no conntrack entry and so no connmark: queued, a fake
        # FIN that the receiver ignores would end a direction in the engine (see the module
        # docstring). Dropped first, for both families, and counted by this rule.
        "-m conntrack --ctstate INVALID %s -j DROP" % _tag(),
        "-m mark --mark 0x%x/0x%x %s -j CONNMARK --save-mark --nfmask %s --ctmask %s"
        % (MARK_SAVE, MARK_SAVE, _tag(), owned, owned),
        "-m connmark --mark 0x%x/%s %s -j ACCEPT" % (MARK_ALLOW, m, _tag()),
        "-m connmark --mark 0x%x/%s %s -j DROP" % (MARK_DROP, m, _tag()),
        *reset_rules(spec, family),
        "-p tcp -m connmark --mark 0x%x/%s %s -j REJECT --reject-with tcp-reset" % (MARK_REJECT, m, _tag()),
        "-m connmark --mark 0x%x/%s %s -j REJECT --reject-with %s" % (MARK_REJECT, m, _tag(), unreach),
        *oneway_rules(),
        # Before the watch rules: a watched flow's pure ACKs need no copy either.
        "-p tcp --syn %s -j CONNMARK --set-xmark 0x%x/0x%x" % (_tag(), MARK_SYN_SEEN, MARK_SYN_SEEN),
        "-p tcp --tcp-flags %s ACK -m connmark --mark 0x%x/0x%x %s -j %s"
        % (_TCP_FLAGS, MARK_SYN_SEEN, MARK_SYN_SEEN, _tag(), spec.ack_chain),
        *watch_rules(spec),
        *oneway_watch_rules(spec),
        # The verdict mark itself, for packets conntrack does not track (IPv6 neighbour
        # discovery in a sidecar): without these they would be queued again forever.
        # And for the packet that made its flow ONEWAY when it is the client's: its
        # connection's later packets from the client are queued again.
        "-m mark --mark 0x%x/%s %s -j ACCEPT" % (MARK_ALLOW, m, _tag()),
        "-m mark --mark 0x%x/%s %s -j ACCEPT" % (MARK_WATCH, m, _tag()),
        "-m mark --mark 0x%x/%s %s -j ACCEPT" % (MARK_ONEWAY, m, _tag()),
        "-m mark --mark 0x%x/%s %s -j ACCEPT" % (MARK_ONEWAY_WATCH, m, _tag()),
        "-m mark --mark 0x%x/%s %s -j DROP" % (MARK_DROP, m, _tag()),
        "-p tcp -m mark --mark 0x%x/0x%x %s -j REJECT --reject-with tcp-reset" % (MARK_REJECT_ONCE, REJECT_BITS, _tag()),
        "-m mark --mark 0x%x/0x%x %s -j REJECT --reject-with %s" % (MARK_REJECT_ONCE, REJECT_BITS, _tag(), unreach),
        *queue_rules(spec),
    ]


def reset_rules(spec: RuleSpec, family: int) -> list[str]:
    """Sidecar only: let out the reset that REJECT itself sends for a rejected inbound
    connection. It leaves the sandbox's namespace through OUTPUT, in the reply direction
    of the connection whose connmark says REJECT, and the next rule would reject (drop)
    it: the peer then waited for a timeout instead of being refused. Only a bare reset
    (no options, no payload: 40 bytes over IPv4, 60 over IPv6, what REJECT builds), so
    that resets cannot carry data out. In gateway mode REJECT's reset leaves through the
    gateway's own OUTPUT and never meets this chain."""
    if spec.mode != "sidecar":
        return []
    return ["-p tcp --tcp-flags RST RST -m length --length %d -m connmark --mark 0x%x/0x%x %s -j ACCEPT"
            % (40 if family == 4 else 60, MARK_REJECT, MARK_MASK, _tag())]


_TCP_FLAGS = "FIN,SYN,RST,PSH,ACK,URG"      # iptables' ALL; ECE and CWR are left out, as in egress.engine
# TCP data offsets in the order pure ACKs use them: timestamps (8), none (5), SACK blocks.
_DATA_OFFSETS = (8, 5, 11, 10, 13, 15, 6, 7, 9, 12, 14)


def pure_ack_rules(family: int) -> list[str]:
    """The body of the pure-ACK chain: accept, without queueing, a TCP packet whose flags
    are exactly ACK (checked by the jump), that carries no payload and does not close
    its window; the packets egress.engine.is_pure_ack calls pure, when their IP header
    is the plain one (IPv4 without options, IPv6 with TCP right after it: else they are
    queued, and the engine gives them their flow's verdict). Nothing to inspect is in
    them, and they are four of a short connection's ten packets. A packet of a flow that
    is blocked already never gets here (the connmark rules come first).

    u32 tests, one rule per TCP data offset D: IPv4: version 4 and header length 5, total
    length 20 + 4D, data offset D, window >= 1. IPv6: version 6, payload length 4D, next
    header TCP, data offset D, window >= 1."""
    rules = []
    for d in _DATA_OFFSETS:
        if family == 4:
            test = "0>>24=0x45 && 0&0xFFFF=%d && 32>>28=%d && 32&0xFFFF=1:0xFFFF" % (20 + 4 * d, d)
        else:
            test = "0>>28=6 && 4>>16=%d && 4>>8&0xFF=6 && 52>>28=%d && 52&0xFFFF=1:0xFFFF" % (4 * d, d)
        rules.append('-m u32 --u32 "%s" %s -j ACCEPT' % (test, _tag()))
    return rules


def watch_mark(slot: int) -> int:
    return MARK_WATCH | slot_bits(slot)


def watch_rules(spec: RuleSpec) -> list[str]:
    """WATCH flows: a copy to their worker's NFLOG group, then accept (no queue).

    The packet whose verdict made the flow WATCH comes back from the queue with the
    verdict mark (SAVE bit set) and was seen by the engine already: no copy of it."""
    if spec.watch_group is None:
        return []
    rules = ["-m connmark --mark 0x%x/0x%x -m mark ! --mark 0x%x/0x%x %s -j NFLOG --nflog-group %d"
             % (watch_mark(slot), OWNED_BITS, MARK_SAVE, MARK_SAVE, _tag(), spec.watch_group + slot)
             for slot in range(spec.watch_slots)]
    return rules + ["-m connmark --mark 0x%x/0x%x %s -j ACCEPT" % (MARK_WATCH, MARK_MASK, _tag())]


def oneway_mark(slot: int, watched: bool) -> int:
    return (MARK_ONEWAY_WATCH if watched else MARK_ONEWAY) | slot_bits(slot)


_SERVER_SIDE = "-m tcp --tcp-flags FIN,SYN,RST NONE -m conntrack --ctdir REPLY"


def oneway_rules() -> list[str]:
    """ONEWAY flows (egress.inspect.stage: the server's side is spent, the client's is
    still inspected): the server's packets pass, but FIN, SYN and RST, which the engine
    must see to know the connection's end; the client's go on to the queue (its slot is
    in the mark). The server's side is conntrack's REPLY direction: the driver gives
    these marks only to flows whose client the engine knows from the handshake, and that
    is conntrack's ORIGINAL direction. Placed right after the fast path's rules, connmark
    first: a download's data takes this rule on every packet."""
    return ["-p tcp -m connmark --mark 0x%x/0x%x %s %s -j ACCEPT" % (MARK_ONEWAY, MARK_MASK, _SERVER_SIDE, _tag())]


def oneway_watch_rules(spec: RuleSpec) -> list[str]:
    """ONEWAY_WATCH: the same while the classifier watches, with a copy of each passed
    packet to the worker's NFLOG group, as for WATCH (after the pure-ACK jump, so that a
    pure ACK is never copied)."""
    if spec.watch_group is None:
        return []
    rules = ["-p tcp -m connmark --mark 0x%x/0x%x %s -m mark ! --mark 0x%x/0x%x %s -j NFLOG --nflog-group %d"
             % (oneway_mark(slot, True), OWNED_BITS, _SERVER_SIDE, MARK_SAVE, MARK_SAVE, _tag(),
                spec.watch_group + slot) for slot in range(spec.watch_slots)]
    return rules + ["-p tcp -m connmark --mark 0x%x/0x%x %s %s -j ACCEPT"
                    % (MARK_ONEWAY_WATCH, MARK_MASK, _SERVER_SIDE, _tag())]


def hook_rules(spec: RuleSpec, family: int) -> list[tuple[str, str]]:
    """(built-in chain, match) pairs that jump into our chain, in insertion order."""
    if spec.mode == "sidecar":
        out, inp = "! -o lo", "! -i lo"
        if spec.sandbox_iface:
            out, inp = "-o %s" % spec.sandbox_iface, "-i %s" % spec.sandbox_iface
        return [("OUTPUT", out), ("INPUT", inp)]
    if spec.sandbox_iface:
        return [("FORWARD", "-i %s" % spec.sandbox_iface), ("FORWARD", "-o %s" % spec.sandbox_iface)]
    nets = spec.nets(family)
    if nets:
        return [pair for n in nets for pair in (("FORWARD", "-s %s" % n), ("FORWARD", "-d %s" % n))]
    # No selector for this family: queue all of its forwarded traffic rather than let
    # it bypass egress (e.g. v6 when only a v4 sandbox network was given).
    return [("FORWARD", "")]


def guard_rules(spec: RuleSpec, family: int) -> list[str]:
    """INPUT rules that keep the sandbox away from the metrics port."""
    if spec.metrics_port is None or spec.mode != "gateway":
        return []
    sel = ["-i %s" % spec.sandbox_iface] if spec.sandbox_iface else ["-s %s" % n for n in spec.nets(family)]
    return ["%s -p tcp --dport %d %s -j DROP" % (s, spec.metrics_port, _tag()) for s in sel]


def install_script(spec: RuleSpec, family: int) -> str:
    lines = ["*filter", ":%s - [0:0]" % spec.chain, ":%s - [0:0]" % spec.ack_chain]
    lines += ["-A %s %s" % (spec.ack_chain, r) for r in pure_ack_rules(family)]
    lines += ["-A %s %s" % (spec.chain, r) for r in chain_rules(spec, family)]
    # -I ... 1 in reverse keeps the listed order at the top of the built-in chain.
    for builtin, match in reversed(hook_rules(spec, family)):
        lines.append(("-I %s 1 %s %s -j %s" % (builtin, match, _tag(), spec.chain)).replace("  ", " "))
    for rule in guard_rules(spec, family):
        lines.append("-I INPUT 1 %s" % rule)
    lines.append("COMMIT")
    return "\n".join(lines) + "\n"


def removal_script(saved: str) -> str | None:
    """From iptables-save output: the restore script deleting egress's rules and chains
    (None when there is nothing to remove)."""
    deletes, chains, table = [], [], None
    for line in saved.splitlines():
        if line.startswith("*"):
            table = line[1:].strip()
        if table != "filter":
            continue
        if line.startswith(":" + CHAIN_PREFIX):
            chains.append(line[1:].split()[0])
        elif line.startswith("-A "):
            chain = line.split()[1]
            if not chain.startswith(CHAIN_PREFIX) and _is_ours(line):
                deletes.append("-D" + line[2:])
    if not deletes and not chains:
        return None
    body = deletes + ["-F %s" % c for c in chains] + ["-X %s" % c for c in chains]
    return "*filter\n" + "\n".join(body) + "\nCOMMIT\n"


def _is_ours(rule_line: str) -> bool:
    words = shlex.split(rule_line)
    return any(words[i] == "--comment" and words[i + 1] == COMMENT for i in range(len(words) - 1))


class Iptables:
    """Runs iptables-save/-restore for both families, here or inside `netns`."""

    def __init__(self, netns: str | None = None):
        self.netns = netns

    def _argv(self, tool: str, family: int) -> list[str]:
        name = tool if family == 4 else tool.replace("iptables", "ip6tables")
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        return prefix + [name]

    def save(self, family: int) -> str:
        proc = subprocess.run(self._argv("iptables-save", family) + ["-t", "filter"], capture_output=True, text=True)
        if proc.returncode != 0:
            raise IptablesError("iptables-save (IPv%d): %s" % (family, proc.stderr.strip()))
        return proc.stdout

    def restore(self, family: int, script: str) -> None:
        proc = subprocess.run(self._argv("iptables-restore", family) + ["-w", "5", "--noflush"],
                              input=script, capture_output=True, text=True)
        if proc.returncode != 0:
            raise IptablesError("iptables-restore (IPv%d): %s" % (family, proc.stderr.strip().splitlines()[-1:]
                                                                   or "failed"))

    # -- what the daemon and the CLI use -------------------------------------------

    def install(self, spec: RuleSpec) -> None:
        self.remove()
        try:
            for family in FAMILIES:
                self.restore(family, install_script(spec, family))
        except BaseException:
            self.remove()
            raise

    def remove(self) -> int:
        """Remove every egress rule and chain in both families; returns how many rules."""
        removed = 0
        for family in FAMILIES:
            script = removal_script(self.save(family))
            if script:
                self.restore(family, script)
                removed += sum(1 for line in script.splitlines() if line.startswith("-D "))
        return removed

    def ours(self) -> list[str]:
        """Every egress rule currently installed (both families), iptables-save syntax."""
        out = []
        for family in FAMILIES:
            for line in self.save(family).splitlines():
                if line.startswith("-A ") and (line.split()[1].startswith(CHAIN_PREFIX) or _is_ours(line)):
                    out.append("v%d %s" % (family, line))
                elif line.startswith(":" + CHAIN_PREFIX):
                    out.append("v%d %s" % (family, line))
        return out
