"""DNS over UDP (one message per datagram) and TCP (2-byte length prefix): queries, answers, tunnelling.

Guarantees (egress.inspect.base contract): pure, never raises, port independent,
bounded: at most 16 messages per direction, 32 answers, name decoding with at most
32 compression jumps, each strictly backwards (no loops), names at most 255 bytes.

Facts: dns.query (first question name, lower case, no trailing dot), dns.qtype
("A", "AAAA", "TXT", ... or the number), dns.queries (every question seen, bounded),
dns.rcode, dns.answers: [{"name", "type", "data", "ttl"}] for A, AAAA and CNAME
records, which the policy uses to learn name -> address bindings.

Tunnelling ("tunnel" / "dns.tunnel_suspected", confidence < 1), conservative:
- one question whose leftmost labels carry data: a label of 52+ characters with
  Shannon entropy >= 3.5 bits/char (random hex over 60 characters measures about
  3.8, base32 about 4.6; English-like text about 3), or
- two or more distinct questions in the same flow under one parent domain whose data
  label is 32+ characters with entropy >= 3.5, or
- five or more TXT / NULL / ANY questions under one parent domain in the flow (the
  answers are the downstream channel of iodine, dnscat2, DNSExfiltrator).
Ordinary long names (CDN hashes, DKIM selectors) are usually shorter than that or
not repeated; the detection is evidence, not a verdict.
"""
from __future__ import annotations

import ipaddress
import math
from collections import Counter

from egress.inspect.base import NEED_MORE, NO_MATCH, InspectResult, Status, StreamView
from egress.types import Detection

MAX_BYTES = 8192
_MAX_MSGS = 16
_MAX_ANSWERS = 32
_MAX_JUMPS = 32

QTYPES = {1: "A", 2: "NS", 5: "CNAME", 6: "SOA", 10: "NULL", 12: "PTR", 15: "MX", 16: "TXT",
          28: "AAAA", 33: "SRV", 35: "NAPTR", 43: "DS", 46: "RRSIG", 47: "NSEC", 48: "DNSKEY",
          64: "SVCB", 65: "HTTPS", 99: "SPF", 255: "ANY", 257: "CAA"}
_TUNNEL_QTYPES = {10, 16, 255}
_VALID_CLASSES = {1, 3, 4, 254, 255}


class DnsError(ValueError):
    pass


def read_name(msg: bytes, pos: int) -> tuple[str, int]:
    """Decode a (possibly compressed) name at `pos` -> (name, position after it in the original record)."""
    labels: list[str] = []
    total = 0
    jumps = 0
    end = -1
    limit = pos                      # compression pointers must point strictly before this
    while True:
        if pos >= len(msg):
            raise DnsError("name past end")
        n = msg[pos]
        if n == 0:
            pos += 1
            break
        if n & 0xC0 == 0xC0:
            if pos + 1 >= len(msg):
                raise DnsError("pointer past end")
            target = ((n & 0x3F) << 8) | msg[pos + 1]
            if end < 0:
                end = pos + 2
            jumps += 1
            if jumps > _MAX_JUMPS or target >= limit:
                raise DnsError("compression loop")
            pos = limit = target
            continue
        if n & 0xC0:
            raise DnsError("bad label type")
        label = msg[pos + 1:pos + 1 + n]
        if len(label) < n:
            raise DnsError("label past end")
        total += n + 1
        if total > 255:
            raise DnsError("name too long")
        labels.append(label.decode("ascii", "replace").lower())
        pos += 1 + n
    return ".".join(labels), (end if end >= 0 else pos)


def parse_message(msg: bytes) -> dict:
    """One DNS message -> {"qr", "rcode", "questions": [(name, qtype)], "answers": [...]}. Raises DnsError."""
    if len(msg) < 12:
        raise DnsError("short header")
    flags = int.from_bytes(msg[2:4], "big")
    qd, an = int.from_bytes(msg[4:6], "big"), int.from_bytes(msg[6:8], "big")
    opcode = (flags >> 11) & 0xF
    if opcode > 6 or qd == 0 or qd > 8:
        raise DnsError("not a DNS query shape")
    pos = 12
    questions = []
    for _ in range(qd):
        name, pos = read_name(msg, pos)
        if pos + 4 > len(msg):
            raise DnsError("question past end")
        qtype = int.from_bytes(msg[pos:pos + 2], "big")
        qclass = int.from_bytes(msg[pos + 2:pos + 4], "big") & 0x7FFF   # mDNS unicast bit
        if qclass not in _VALID_CLASSES:
            raise DnsError("bad class")
        questions.append((name, qtype))
        pos += 4
    answers = []
    for _ in range(min(an, _MAX_ANSWERS)):
        try:
            name, pos = read_name(msg, pos)
        except DnsError:
            break                    # keep the questions and the answers read so far
        if pos + 10 > len(msg):
            break
        rtype = int.from_bytes(msg[pos:pos + 2], "big")
        ttl = int.from_bytes(msg[pos + 4:pos + 8], "big")
        rdlen = int.from_bytes(msg[pos + 8:pos + 10], "big")
        rdata_at = pos + 10
        pos = rdata_at + rdlen
        if pos > len(msg):
            break
        data = None
        if rtype == 1 and rdlen == 4:
            data = str(ipaddress.IPv4Address(msg[rdata_at:pos]))
        elif rtype == 28 and rdlen == 16:
            data = str(ipaddress.IPv6Address(msg[rdata_at:pos]))
        elif rtype == 5:
            try:
                data = read_name(msg, rdata_at)[0]
            except DnsError:
                data = None
        if data is not None:
            answers.append({"name": name, "type": QTYPES[rtype], "data": data, "ttl": ttl})
    return {"qr": bool(flags & 0x8000), "rcode": flags & 0xF, "questions": questions, "answers": answers}


def _tcp_messages(stream: bytes) -> tuple[list[bytes], bool]:
    """Length-prefixed messages at the start of a TCP stream -> (complete messages, more expected)."""
    out = []
    pos = 0
    while pos + 2 <= len(stream) and len(out) < _MAX_MSGS:
        n = int.from_bytes(stream[pos:pos + 2], "big")
        if n < 12:
            return out, False
        if pos + 2 + n > len(stream):
            return out, True
        out.append(stream[pos + 2:pos + 2 + n])
        pos += 2 + n
    return out, pos >= len(stream)


def entropy(text: str) -> float:
    if not text:
        return 0.0
    counts = Counter(text)
    n = len(text)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def _parent(name: str) -> str:
    """The registered-looking parent: the last two labels (three for short ccTLD seconds)."""
    labels = name.split(".")
    keep = 3 if len(labels) >= 3 and len(labels[-2]) <= 3 and len(labels[-1]) == 2 else 2
    return ".".join(labels[-keep:])


def _data_label(name: str) -> str:
    """The longest label left of the parent domain (where tunnels put their payload)."""
    labels = name.split(".")
    head = labels[:-2] if len(labels) > 2 else []
    return max(head, key=len) if head else ""


def tunnel_evidence(questions: list[tuple[str, int]]) -> dict | None:
    """Apply the conservative tunnelling rules of the module docstring to a flow's questions."""
    medium: dict[str, set] = {}
    txt: dict[str, set] = {}
    for name, qtype in questions:
        label = _data_label(name)
        ent = entropy(label)
        if len(label) >= 52 and ent >= 3.5:
            return {"rule": "long_label", "name": name[:255], "label_len": len(label),
                    "entropy": round(ent, 2)}
        parent = _parent(name)
        if len(label) >= 32 and ent >= 3.5:
            medium.setdefault(parent, set()).add(name)
        if qtype in _TUNNEL_QTYPES:
            txt.setdefault(parent, set()).add(name)
    for parent, names in medium.items():
        if len(names) >= 2:
            return {"rule": "repeated_data_labels", "domain": parent, "queries": len(names)}
    for parent, names in txt.items():
        if len(names) >= 5:
            return {"rule": "txt_volume", "domain": parent, "queries": len(names)}
    return None


class DnsDetector:
    name = "dns"
    protocols = frozenset({6, 17})
    max_bytes = MAX_BYTES

    def inspect(self, view: StreamView) -> InspectResult:
        if view.proto == 17:
            msgs = [(d, m) for d, m in list(view.datagrams)[:2 * _MAX_MSGS]]
            more = len(view.datagrams) < _MAX_MSGS
        else:
            qs, more_q = _tcp_messages(view.to_server)
            rs, more_r = _tcp_messages(view.to_client)
            msgs = [(0, m) for m in qs] + [(1, m) for m in rs]
            more = (more_q or more_r) and not (view.closed_to_server and view.closed_to_client)
            if not msgs:
                head = view.to_server
                # a query over TCP is short and starts with a DNS header: 1..8 questions
                if len(head) >= 2 and not 12 <= int.from_bytes(head[:2], "big") <= 4096:
                    return NO_MATCH
                if len(head) >= 8 and not 1 <= int.from_bytes(head[6:8], "big") <= 8:
                    return NO_MATCH
                return NEED_MORE if more and len(view.to_server) < 514 else NO_MATCH
        if not msgs:
            return NEED_MORE
        questions: list[tuple[str, int]] = []
        answers: list[dict] = []
        rcode = None
        parsed_any = False
        for direction, m in msgs:
            try:
                p = parse_message(m)
            except DnsError:
                if not parsed_any:
                    return NO_MATCH   # the first message decides whether this is DNS at all
                continue
            # direction is not checked: a capture may start with the answer, and the
            # engine may orient a UDP flow by ports; QR says what the message is
            parsed_any = True
            if not p["qr"]:
                for q in p["questions"]:
                    if q not in questions and len(questions) < _MAX_MSGS:
                        questions.append(q)
            elif p["qr"]:
                rcode = p["rcode"]
                for a in p["answers"]:
                    if len(answers) < _MAX_ANSWERS:
                        answers.append(a)
                if not questions:
                    questions.extend(p["questions"][:1])
        if not parsed_any:
            return NO_MATCH
        facts: dict = {}
        if questions:
            name, qtype = questions[0]
            facts["dns.query"] = name
            facts["dns.qtype"] = QTYPES.get(qtype, str(qtype))
            facts["dns.queries"] = [{"name": n, "type": QTYPES.get(t, str(t))} for n, t in questions]
        if answers:
            facts["dns.answers"] = answers
        if rcode is not None:
            facts["dns.rcode"] = rcode
        detections = ()
        evidence = tunnel_evidence(questions)
        if evidence is not None:
            conf = 0.6 if evidence["rule"] != "long_label" else 0.5
            detections = (Detection("tunnel", "dns.tunnel_suspected", evidence, conf),)
        status = Status.NEED_MORE if more else Status.MATCH
        return InspectResult(status, detections, "dns", facts)
