"""What the workers of one gateway tell each other: the DNS answers their policies learned.

With `egress run --queue A-B --workers`, each connection is judged by one worker (its
connmark slot, see egress.drivers.iptables), so a sandbox's DNS lookup and the
connection that follows may land on different workers. A policy that names domains
matches a nameless connection through the addresses DNS answered (egress.policy), so
every worker must know every answer. Each worker binds an abstract unix datagram socket
(`\\0egress-peers-TOKEN-SLOT`, private to the gateway's network namespace) and sends the
answers its policy accepted to all the others.

Why the answer is always there in time: a worker sends the answers *before* it gives
the DNS response its verdict, so they sit in the other workers' sockets before the
sandbox can even have the address; and a worker reads its socket before it judges any
new connection (`Engine.before_new_flow`).

Guarantees: `publish` and `drain` never raise and never block; a message that cannot
be sent (a sibling restarting, its socket full) or read (malformed) is counted, not
fatal. Messages are JSON: {"now": float, "answers": [{"name", "type", "data", "ttl"}]}.
"""
from __future__ import annotations

import json
import socket

MAX_MESSAGE = 60_000


def address(token: str, slot: int) -> str:
    return "\0egress-peers-%s-%d" % (token, slot)


class Peers:
    def __init__(self, token: str, slot: int, count: int):
        self.token, self.slot, self.count = token, slot, count
        self.counters = {"sent": 0, "send_failed": 0, "received": 0, "malformed": 0}
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address(token, slot))
        self.sock.setblocking(False)
        self._others = [address(token, other) for other in range(count) if other != slot]

    def publish(self, answers, now: float) -> None:
        try:
            data = json.dumps({"now": now, "answers": answers}, separators=(",", ":")).encode()
        except (TypeError, ValueError):
            self.counters["send_failed"] += len(self._others)
            return
        if len(data) > MAX_MESSAGE:
            self.counters["send_failed"] += len(self._others)
            return
        for other in self._others:
            try:
                self.sock.sendto(data, other)
                self.counters["sent"] += 1
            except OSError:         # not bound yet / restarting / its buffer is full
                self.counters["send_failed"] += 1

    def drain(self, learn) -> int:
        """Hand every waiting message to learn(answers, now); returns how many."""
        n = 0
        while True:
            try:
                data = self.sock.recv(MAX_MESSAGE + 1)
            except (BlockingIOError, InterruptedError):
                return n
            except OSError:
                return n
            try:
                message = json.loads(data)
                answers, now = message["answers"], float(message["now"])
            except (ValueError, KeyError, TypeError):
                self.counters["malformed"] += 1
                continue
            self.counters["received"] += 1
            n += 1
            try:
                learn(answers, now)
            except Exception:       # a bad message must not fail the flow being judged
                self.counters["malformed"] += 1

    def close(self) -> None:
        self.sock.close()
