"""The runtime policy: attribution, DNS learning and decisions, for the engine to call.

`PolicyEngine` implements the policy protocol of the engine (ENGINE_API.md):
`attribute(flow)`, `observe(flow, now)`, `decide(flow, now) -> Verdict`, plus `reload()`.

Guarantees:
- The compiled `PolicySet` is immutable; a PolicyEngine never changes its rules.
  `reload()` builds a NEW PolicyEngine from the same files (rules and sandbox map),
  carrying over learned DNS records, per-flow memos, run-time sandbox registrations
  and the violation log; on invalid input it raises PolicyError and nothing changes.
- Precedence: the rules of the flow's policy in order, first match wins, then the
  policy's explicit default. Conditions of one rule are ANDed.
- Decisions use only what is known now. An unknown that may still arrive (the TLS SNI
  or HTTP Host of a young flow, its app_proto) never blocks by itself: if an allow/alert
  rule is waiting for such a fact and only a blocking rule (or default) matches so far,
  the verdict is a provisional allow (rule "pending", never final) for at most
  `PENDING_PACKETS` client packets / `PENDING_BYTES` client payload bytes (it marks the
  flow `verdict_dirty` so that the engine asks again on the next packet). Detections
  and classifier scores are not waited for: a block rule on them matches when they land
  (the engine then revokes the flow).
- Names of a flow: its TLS SNI, HTTP Host and DNS query facts. Without any, the names
  DNS answers gave for the server address when the flow started (remembered per flow,
  so TTL expiry never revokes a running flow).
- Domain-fronting guard: an SNI/Host naming a domain that some rule of the policy lists
  must go to an address DNS gave for that name (or its CNAME chain) when DNS for it was
  seen. A mismatch makes the name unusable for matching and adds a Detection
  (category "policy", signature "policy.sni_mismatch" / "policy.host_mismatch") to the
  flow. When no DNS was seen for the name it is trusted, unless the policy sets
  `require_dns_for_domains: true` (recommended live, where the gateway sees the DNS).
- `decide()` never raises on odd flow contents (missing facts, wrong types).
- `decide()` gives what `decide_reference()` (every rule in order, the policy looked up
  afresh) gives, with the same side effects; it only remembers pure or invalidated
  things: per policy and flow key (IP version, protocol, addresses, server port) which
  rules' static conditions hold; per (addresses, sandbox id, iface) which policy applies,
  until the attribution map changes (Attribution.generation: file reload, API
  registration); per name which rules' domains match. Each table holds at most
  CACHE_MAX entries; a reload builds a new PolicyEngine with empty tables.
"""
from __future__ import annotations

import fnmatch
from collections import OrderedDict
from datetime import datetime, timezone
from typing import Any, Sequence

from egress.policy.attribution import Attribution, Entry, load_sandbox_map
from egress.policy.dnscache import DnsCache
from egress.policy.match import CidrSet, is_ip_literal, normalize_name
from egress.policy.schema import BLOCKING, Policy, PolicySet, Rule, load_policy, parse_policy
from egress.policy.source import PolicyError
from egress.types import PROTO_TCP, PROTO_UDP, Action, Detection, Verdict, ip_text, proto_name

PENDING_PACKETS = 8          # client packets a flow may send while its SNI/Host/app_proto is awaited
PENDING_BYTES = 4096         # ... and client payload bytes (a ClientHello fits; an upload does not)
MEMO_MAX = 262144            # per-flow memos kept (flow ids, least recent dropped)
_NEEDS_DETECTIONS, _NEEDS_SCORES = 1, 2   # what a rule's conditions read (see _Plans)
CACHE_MAX = 16384            # entries of each memo table (plans, policy choices, names); emptied when full
# app protocols after which no SNI/Host can still appear
_NAMELESS_PROTOS = frozenset(("ssh", "dns", "stratum", "ntp", "git", "smtp", "ftp", "rdp", "irc", "websocket"))
ALLOW_ALL = "version: 1\npolicies:\n  allow-all:\n    mode: enforce\n    rules: []\n    default: allow\n"
_NO_REASONS: list[str] = []
_UNSEEN = object()
_ALLOW = Action.ALLOW          # a global: an enum member is a slower class attribute lookup
# Facts that name a flow: (key, label in reasons, subject to the domain-fronting guard).
_NAME_FACTS = (("tls.sni", "sni", True), ("quic.sni", "sni", True), ("http.host", "host", True),
               ("dns.query", "dns query", False))
_ACTIONS = {"allow": Action.ALLOW, "alert": Action.ALLOW, "drop": Action.DROP, "reject": Action.REJECT}


def _iso(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, timezone.utc).isoformat()
    except (OverflowError, OSError, ValueError):
        return str(ts)


class _FlowView:
    """What the rules of one policy see of one flow at one moment (computed lazily, once)."""
    __slots__ = ("engine", "flow", "policy", "now", "_names", "_learned", "claimed", "notes", "plans")

    def __init__(self, engine: "PolicyEngine", flow: Any, policy: Policy, now: float,
                 plans: "_Plans | None" = None):
        self.engine = engine
        self.flow = flow
        self.policy = policy
        self.now = now
        self.plans = plans          # None: match domains pattern by pattern (the reference)
        self._names: list[tuple[str, str]] | None = None
        self._learned: frozenset | None = None
        self.claimed = False
        self.notes: list[str] = []

    def facts(self) -> dict:
        facts = getattr(self.flow, "facts", None)
        return facts if isinstance(facts, dict) else {}

    def names(self) -> list[tuple[str, str]]:
        """Usable (name, source) pairs claimed by the flow itself, after the fronting guard."""
        if self._names is not None:
            return self._names
        facts = self.facts()
        out: list[tuple[str, str]] = []
        dns = self.engine.dns
        start = getattr(self.flow, "start", self.now)
        for key, source, guarded in _NAME_FACTS:
            raw = facts.get(key)
            if not isinstance(raw, str):          # normalize_name() would give ""
                continue
            name = _usable_name(raw)
            if not name:
                continue
            self.claimed = True
            if guarded and (self.plans.domain_hits(name) if self.plans is not None
                            else self.policy.guarded_domains.match(name) is not None):
                if self.plans is not None:
                    goes = dns.resolves_to(name, self.flow.server_ip, start)
                else:                             # the reference: the whole address set
                    addrs = dns.addresses(name, start)
                    goes = None if addrs is None else self.flow.server_ip in addrs
                if goes is False:
                    self.engine._fronting(self.flow, name, source, self.now)
                    self.notes.append("%s %s goes to %s, not an address DNS gave for it" % (
                        source, name, ip_text(self.flow.server_ip)))
                    continue
                if goes is None and self.policy.require_dns_for_domains:
                    self.notes.append("no DNS seen for %s %s (require_dns_for_domains)" % (source, name))
                    continue
            out.append((name, source))
        self._names = out
        return out

    def learned(self) -> frozenset:
        if self._learned is None:
            self._learned = self.engine._learned_names(self.flow)
        return self._learned

    def pending_names(self) -> bool:
        flow = self.flow
        if flow.proto not in (PROTO_TCP, PROTO_UDP) or flow.app_proto in _NAMELESS_PROTOS:
            return False
        return _young(flow)


def _static_reasons(rule: Rule, flow: Any, dest_net: str | None, src_net: str | None) -> list[str]:
    """Why a matching rule's address/port/protocol conditions hold (as `_evaluate` words it)."""
    reasons = []
    if rule.proto is not None:
        reasons.append("proto %s" % proto_name(flow.proto).lower())
    if dest_net is not None:
        reasons.append("dest %s in %s" % (ip_text(flow.server_ip), dest_net))
    if src_net is not None:
        reasons.append("src %s in %s" % (ip_text(flow.client_ip), src_net))
    if rule.ports is not None:
        reasons.append("port %d" % flow.server_port)
    return reasons


class _Plans:
    """One policy, precomputed: per flow key (IP version, protocol, client and server
    address, server port) the rules whose static conditions (ip_version, proto, dest,
    src, ports) hold, in order, with the networks that matched; and the default verdicts.

    Only these rules can ever match a flow with that key, and the first of them is the
    first rule not statically excluded (what makes a verdict final). A plan is four
    tuples of (rule, dest network, src network, first?), indexed by what the flow lacks
    (_NEEDS_DETECTIONS | _NEEDS_SCORES): the rules that read what it lacks are left out.
    Also, per name, which rules' domain lists match it and with which pattern.
    Bounded: each table is emptied when it reaches CACHE_MAX keys."""
    __slots__ = ("policy", "_rules", "_cache", "_shapes", "default_verdicts", "_domain_rules", "_hits")

    def __init__(self, policy: Policy, multi: bool):
        self.policy = policy
        self._cache: dict = {}
        self._shapes: dict = {}
        # (rule, what its conditions read beyond the flow key)
        self._rules = tuple((r, (_NEEDS_DETECTIONS if r.categories is not None or r.signatures is not None else 0)
                             | (_NEEDS_SCORES if r.classifier is not None else 0)) for r in policy.rules)
        self._domain_rules = tuple((id(r), r.domains) for r in policy.rules if r.domains is not None)
        self._hits: dict = {}
        reasons = ("default %s" % policy.default,) + (("policy %s" % policy.name,) if multi else ())
        # indexed by `final`; as _verdict builds them when the flow view has no notes
        self.default_verdicts = tuple(
            Verdict(action=_ACTIONS[policy.default], mode=policy.mode, rule="default", reasons=reasons,
                    final=final, alert=policy.default != "allow") for final in (False, True))

    def candidates(self, flow: Any) -> tuple:
        key = (flow.version, flow.proto, flow.client_ip, flow.server_ip, flow.server_port)
        plan = self._cache.get(key)
        if plan is None:
            plan = self._build(flow)
            if len(self._cache) >= CACHE_MAX:
                self._cache.clear()
            self._cache[key] = plan
        return plan

    def _build(self, flow: Any) -> tuple:
        version, proto, server_ip, client_ip = flow.version, flow.proto, flow.server_ip, flow.client_ip
        ported = proto in (PROTO_TCP, PROTO_UDP)
        passed = []                     # (index, dest network, src network) of the rules that pass
        for i, (rule, _needs) in enumerate(self._rules):
            if rule.ip_version is not None and version != rule.ip_version:
                continue
            if rule.proto is not None and proto not in rule.proto:
                continue
            dest_net = src_net = None
            if rule.dest is not None:
                dest_net = rule.dest.lookup(server_ip)
                if dest_net is None:
                    continue
            if rule.src is not None:
                src_net = rule.src.lookup(client_ip)
                if src_net is None:
                    continue
            if rule.ports is not None and (not ported or rule.ports.match(flow.server_port) is None):
                continue
            passed.append((i, dest_net, src_net))
        # Many flow keys share a plan (same rules, same networks): keep one copy of each.
        shape = tuple(passed)
        plan = self._shapes.get(shape)
        if plan is None:
            rules = self._rules
            entries = [((rules[i][0], dest_net, src_net, n == 0), rules[i][1])
                       for n, (i, dest_net, src_net) in enumerate(passed)]
            plan = tuple(tuple(entry for entry, needs in entries if not needs & missing) for missing in range(4))
            if len(self._shapes) >= CACHE_MAX:
                self._shapes.clear()
            self._shapes[shape] = plan
        return plan

    def domain_hits(self, name: str) -> dict:
        """{id(rule): the pattern that matched} for the rules whose domains match `name`."""
        hits = self._hits.get(name)
        if hits is None:
            hits = {}
            for rule_id, domains in self._domain_rules:
                pattern = domains.match(name)
                if pattern is not None:
                    hits[rule_id] = pattern
            if len(self._hits) >= CACHE_MAX:
                self._hits.clear()
            self._hits[name] = hits
        return hits


_USABLE: dict[str, str] = {}     # fact text -> its usable name or "" (pure; bounded)


def _usable_name(raw: str) -> str:
    """normalize_name(raw), or "" when that is an address literal."""
    name = _USABLE.get(raw)
    if name is None:
        name = normalize_name(raw)
        # normalize_name leaves no ':' (no IPv6 literal), and an IPv4 literal ends in a
        # digit: only then is the (exception-driven, ~3 us) address parse worth it.
        if name and name[-1].isdigit() and is_ip_literal(name):
            name = ""
        if len(raw) <= 260:              # a usable name has at most 253 characters: keep keys small
            if len(_USABLE) >= CACHE_MAX:
                _USABLE.clear()
            _USABLE[raw] = name
    return name


def _young(flow: Any) -> bool:
    """Can a name/app_proto still arrive? Only while detectors run and the flow is young."""
    return bool(getattr(flow, "inspecting", None)) and flow.pkts_toserver <= PENDING_PACKETS \
        and flow.payload_toserver < PENDING_BYTES


class PolicyEngine:
    """Runtime policy. Build with `PolicyEngine.load(rule_paths, sandbox_map=None)`."""

    def __init__(self, policy: PolicySet, rule_paths: Sequence[str] = (), sandbox_map: str | None = None,
                 attribution: Attribution | None = None, dns: DnsCache | None = None,
                 memo: OrderedDict | None = None, dns_done: OrderedDict | None = None,
                 counters: dict | None = None):
        self.policy = policy
        self.rule_paths = tuple(str(p) for p in rule_paths)
        self.sandbox_map = str(sandbox_map) if sandbox_map else None
        self.attribution = attribution if attribution is not None else Attribution()
        s = policy.dns
        self.dns = (dns.reconfigured(s.min_ttl, s.max_ttl, s.max_entries) if dns is not None
                    else DnsCache(s.min_ttl, s.max_ttl, s.max_entries))
        self._memo = memo if memo is not None else OrderedDict()          # flow_id -> learned names
        self._dns_done = dns_done if dns_done is not None else OrderedDict()  # flow_id -> answers seen
        self.counters = dict(counters) if counters else {
            "decisions": 0, "pending": 0, "fronting": 0, "dns_flows": 0, "dns_untrusted": 0,
            "dns_shared": 0, "unknown_policy": 0}
        self._by_name = {s.name: s for s in policy.sandboxes}
        self._by_iface = {i: s for s in policy.sandboxes for i in sorted(s.interfaces)}
        nets, owner = [], {}
        for sbx in policy.sandboxes:                     # first definition of a network wins
            for net in sbx.cidrs.networks:
                if str(net) not in owner:
                    owner[str(net)] = sbx
                    nets.append(net)
        self._sbx_cidrs = CidrSet(nets)
        self._sbx_owner = owner
        self._multi = len(policy.policies) > 1
        self._plans = {name: _Plans(p, self._multi) for name, p in policy.policies.items()}
        # flow (addresses, sandbox id, iface) -> (policy, named an unknown policy?), valid
        # while the attribution map is unchanged (its generation)
        self._policy_cache: dict = {}
        self._policy_gen = -1
        # (client, server, iface) -> what attribute() found: ("entry", sandbox, episode),
        # ("yaml", name, None) or None; valid while the attribution map is unchanged
        self._attr_cache: dict = {}
        self._attr_gen = -1

    # -- construction --------------------------------------------------------------------

    @classmethod
    def load(cls, rule_paths: Sequence[str], sandbox_map: str | None = None,
             attribution: Attribution | None = None) -> "PolicyEngine":
        """Read rules files (merged in order) and an optional sandbox map; PolicyError if invalid."""
        if isinstance(rule_paths, (str, bytes)):
            rule_paths = [rule_paths]
        policy = load_policy([str(p) for p in rule_paths])
        entries = load_sandbox_map(str(sandbox_map)) if sandbox_map else []
        if attribution is None:
            attribution = Attribution(entries, str(sandbox_map) if sandbox_map else None)
        elif sandbox_map:
            attribution.replace_file_entries(entries, str(sandbox_map))
        return cls(policy, rule_paths, sandbox_map, attribution)

    @classmethod
    def allow_all(cls, sandbox_map: str | None = None) -> "PolicyEngine":
        """No rules files: allow everything, but still attribute flows to sandboxes."""
        entries = load_sandbox_map(str(sandbox_map)) if sandbox_map else []
        return cls(parse_policy([("<built-in>", ALLOW_ALL)]), (), sandbox_map,
                   Attribution(entries, str(sandbox_map) if sandbox_map else None))

    @classmethod
    def from_text(cls, text: str, name: str = "<rules>", sandbox_entries: Sequence[Entry] = ()) -> "PolicyEngine":
        """For tests and tools: one rules document given as text."""
        return cls(parse_policy([(name, text)]), attribution=Attribution(sandbox_entries))

    def reload(self, rule_paths: Sequence[str] | None = None, sandbox_map: str | None = None) -> "PolicyEngine":
        """A new PolicyEngine from the same files (or the ones given), keeping learned DNS,
        per-flow memos, API registrations and the violation log; PolicyError if invalid,
        and then nothing changed."""
        paths = tuple(str(p) for p in rule_paths) if rule_paths is not None else self.rule_paths
        smap = str(sandbox_map) if sandbox_map else (self.sandbox_map if rule_paths is None else None)
        policy = load_policy(list(paths)) if paths else self.policy
        entries = load_sandbox_map(smap) if smap else None
        # Both inputs are valid: only now touch the shared attribution.
        if entries is not None or rule_paths is not None:
            self.attribution.replace_file_entries(entries or [], smap)
        return PolicyEngine(policy, paths, smap, self.attribution, self.dns,
                            self._memo, self._dns_done, self.counters)

    def _carry_attribution(self, fresh: "PolicyEngine") -> Attribution:
        self.attribution.replace_file_entries(fresh.attribution.entries(), fresh.sandbox_map)
        return self.attribution

    @property
    def digest(self) -> str:
        return self.policy.digest

    def summary(self) -> str:
        return self.policy.summary()

    # -- protocol: attribute / observe / decide ---------------------------------------------

    def attribute(self, flow: Any, iface: str | None = None) -> dict | None:
        """{"id": sandbox, "episode": episode-or-None} for the flow's sandbox, or None.

        Equal to `attribute_reference`, a fresh dict every time, but the lookups are
        remembered per (client, server, iface) until the attribution map changes (its
        generation), as `_policy_cached` does; the YAML sandboxes never change here."""
        if iface is None:
            facts = getattr(flow, "facts", None)
            iface = facts.get("iface") if isinstance(facts, dict) else None
        key = (flow.client_ip, flow.server_ip, iface)
        generation = self.attribution.generation      # read before computing (see _policy_cached)
        cache = self._attr_cache
        if generation != self._attr_gen:
            cache.clear()
            self._attr_gen = generation
        try:
            found = cache.get(key, _UNSEEN)
        except TypeError:                             # an odd, unhashable address or iface
            return self.attribute_reference(flow, iface)
        if found is _UNSEEN:
            found = self._attribution_of(flow, iface)
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[key] = found
        return None if found is None else {"id": found[0], "episode": found[1]}

    def _attribution_of(self, flow: Any, iface: str | None) -> tuple | None:
        """(sandbox id, episode) of `flow`, or None (what attribute_reference returns, as a tuple)."""
        found = self.attribute_reference(flow, iface)
        return None if found is None else (found["id"], found["episode"])

    def attribute_reference(self, flow: Any, iface: str | None = None) -> dict | None:
        """The definition of `attribute`: look the addresses up afresh."""
        entry = self._entry(flow)
        if entry is not None:
            return {"id": entry.sandbox, "episode": entry.episode}
        sbx = self._yaml_sandbox(flow, iface)
        if sbx is not None:
            return {"id": sbx.name, "episode": None}
        return None

    def observe(self, flow: Any, now: float) -> bool:
        """Learn from a DNS flow's answers (once per new answer batch); True when it did."""
        facts = getattr(flow, "facts", None)
        answers = facts.get("dns.answers") if isinstance(facts, dict) else None
        if not answers or not isinstance(answers, (list, tuple)):
            return False
        if self._dns_done.get(flow.flow_id) == len(answers):
            return False
        trusted = self.policy.dns.trusted_resolvers
        if trusted is not None and flow.server_ip not in trusted:
            self.counters["dns_untrusted"] += 1
            self._remember(self._dns_done, flow.flow_id, len(answers))
            return False
        self._remember(self._dns_done, flow.flow_id, len(answers))
        self.counters["dns_flows"] += 1
        self.dns.learn(answers, now)
        return True

    def learn_shared(self, answers: Any, now: float) -> None:
        """Answers another worker's engine accepted (it applied the trusted-resolver check)."""
        self.counters["dns_shared"] = self.counters.get("dns_shared", 0) + 1
        self.dns.learn(answers, now)

    def decide(self, flow: Any, now: float) -> Verdict:
        """The verdict for `flow` now; equal to `decide_reference` (a test checks it) but
        it walks only the rules whose address/port/protocol conditions hold for the flow
        (precomputed per policy and flow key, see `_Plans`) and reuses default verdicts."""
        counters = self.counters
        counters["decisions"] += 1
        policy = self._policy_cached(flow)
        plans = self._plans[policy.name]
        view = _FlowView(self, flow, policy, now, plans)
        if policy.guarded_domains.patterns:
            view.names()               # run the fronting guard first: a rule may match its detection
        waiting: Rule | None = None
        # Rules reading detections (scores) cannot match a flow without any: the plan for
        # what the flow lacks leaves them out (they would be False, with no side effect).
        missing = (0 if flow.detections else _NEEDS_DETECTIONS) | (0 if flow.ml is not None else _NEEDS_SCORES)
        plan = plans.candidates(flow)
        for rule, dest_net, src_net, first in plan[missing]:
            state, dynamic = self._dynamic(rule, view)
            if state is True:
                if rule.action in BLOCKING and waiting is not None:
                    return self._pending(policy, waiting, view)
                reasons = _static_reasons(rule, flow, dest_net, src_net) + dynamic
                if not reasons:
                    reasons.append("rule %s matches every flow" % rule.name)
                verdict = self._verdict(policy, rule.name, rule.action, reasons, view,
                                        final=first and rule.static)
                return self._record(flow, verdict, policy, now)
            if state is None and waiting is None and rule.action not in BLOCKING:
                waiting = rule
        if policy.default in BLOCKING and waiting is not None:
            return self._pending(policy, waiting, view)
        final = not plan[0]            # every rule statically excluded
        if view.notes:
            verdict = self._verdict(policy, "default", policy.default, ["default %s" % policy.default], view,
                                    final=final)
        else:
            verdict = plans.default_verdicts[final]
        return self._record(flow, verdict, policy, now)

    def decide_reference(self, flow: Any, now: float) -> Verdict:
        """The straightforward evaluation `decide` must equal: every rule of the flow's
        policy in order through `_evaluate`, the policy looked up afresh. Same side effects."""
        self.counters["decisions"] += 1
        policy = self.policy_for(flow)
        view = _FlowView(self, flow, policy, now)
        if policy.guarded_domains.patterns:
            view.names()
        waiting: Rule | None = None
        all_excluded = True            # every earlier rule can never match this flow
        for rule in policy.rules:
            state, reasons, excluded = self._evaluate(rule, view)
            if state is True:
                if rule.action in BLOCKING and waiting is not None:
                    return self._pending(policy, waiting, view)
                verdict = self._verdict(policy, rule.name, rule.action, reasons, view,
                                        final=all_excluded and rule.static)
                return self._record(flow, verdict, policy, now)
            if state is None and waiting is None and rule.action not in BLOCKING:
                waiting = rule
            all_excluded = all_excluded and excluded
        if policy.default in BLOCKING and waiting is not None:
            return self._pending(policy, waiting, view)
        verdict = self._verdict(policy, "default", policy.default, ["default %s" % policy.default], view,
                                final=all_excluded)
        return self._record(flow, verdict, policy, now)

    # -- policy selection -------------------------------------------------------------------

    def policy_for(self, flow: Any) -> Policy:
        policies = self.policy.policies
        entry = self._entry(flow)
        if entry is not None and entry.policy:
            if entry.policy in policies:
                return policies[entry.policy]
            self.counters["unknown_policy"] += 1
        sid = None
        sandbox = getattr(flow, "sandbox", None)
        if isinstance(sandbox, dict):
            sid = sandbox.get("id")
        if sid is None and entry is not None:
            sid = entry.sandbox
        sbx = self._by_name.get(sid) if sid is not None else None
        if sbx is None or sbx.policy is None:
            sbx = self._yaml_sandbox(flow, None)
        if sbx is not None and sbx.policy is not None:
            return policies[sbx.policy]
        return policies[self.policy.default_policy]

    def _policy_cached(self, flow: Any) -> Policy:
        """policy_for(flow), remembered per (client, server, sandbox id, iface) until the
        attribution map changes (file reload or API registration bumps its generation)."""
        sandbox = flow.sandbox
        sid = sandbox.get("id") if isinstance(sandbox, dict) else None
        facts = flow.facts
        iface = facts.get("iface") if isinstance(facts, dict) else None
        key = (flow.client_ip, flow.server_ip, sid, iface)
        generation = self.attribution.generation      # read before computing: a change after
        cache = self._policy_cache                    # it clears what we store below
        if generation != self._policy_gen:
            cache.clear()
            self._policy_gen = generation
        try:
            hit = cache.get(key)
        except TypeError:                             # an odd, unhashable sandbox id or iface
            return self.policy_for(flow)
        counters = self.counters
        if hit is None:
            unknown = counters["unknown_policy"]
            hit = (self.policy_for(flow), counters["unknown_policy"] != unknown)
            if len(cache) >= CACHE_MAX:
                cache.clear()
            cache[key] = hit
        elif hit[1]:
            counters["unknown_policy"] += 1           # as policy_for counts it on every call
        return hit[0]

    def _entry(self, flow: Any) -> Entry | None:
        return self.attribution.lookup(flow.client_ip) or self.attribution.lookup(flow.server_ip)

    def _yaml_sandbox(self, flow: Any, iface: str | None):
        if iface is None:
            facts = getattr(flow, "facts", None)
            iface = facts.get("iface") if isinstance(facts, dict) else None
        if iface is not None and iface in self._by_iface:
            return self._by_iface[iface]
        hit = self._sbx_cidrs.lookup(flow.client_ip) or self._sbx_cidrs.lookup(flow.server_ip)
        return self._sbx_owner[hit] if hit is not None else None

    # -- rule evaluation -----------------------------------------------------------------------

    def _evaluate(self, rule: Rule, view: _FlowView) -> tuple[bool | None, list[str], bool]:
        """(True | False | None=not yet known, reasons, statically excluded).

        Cheap checks first; reason strings are only formatted for a rule that matches."""
        flow = view.flow
        if rule.ip_version is not None and flow.version != rule.ip_version:
            return False, _NO_REASONS, True
        if rule.proto is not None and flow.proto not in rule.proto:
            return False, _NO_REASONS, True
        dest_net = src_net = None
        if rule.dest is not None:
            dest_net = rule.dest.lookup(flow.server_ip)
            if dest_net is None:
                return False, _NO_REASONS, True
        if rule.src is not None:
            src_net = rule.src.lookup(flow.client_ip)
            if src_net is None:
                return False, _NO_REASONS, True
        if rule.ports is not None and (flow.proto not in (PROTO_TCP, PROTO_UDP)
                                       or rule.ports.match(flow.server_port) is None):
            return False, _NO_REASONS, True

        dynamic: list[str] = []
        unknown = False
        if rule.categories is not None or rule.signatures is not None:
            hit = self._detection(rule, flow)
            if hit is None:
                return False, _NO_REASONS, False
            dynamic.append(hit)
        if rule.classifier is not None:
            hit = self._classifier(rule, flow)
            if hit is None:
                return False, _NO_REASONS, False
            dynamic.append(hit)
        if rule.app_proto is not None:
            app = flow.app_proto
            if app in rule.app_proto:
                dynamic.append("app_proto %s" % app)
            elif app is None and flow.proto in (PROTO_TCP, PROTO_UDP) and _young(flow):
                unknown = True
            else:
                return False, _NO_REASONS, False
        if rule.domains is not None:
            state, why = self._domain(rule, view)
            if state is False:
                return False, _NO_REASONS, False
            if state is None:
                unknown = True
            else:
                dynamic.append(why)
        if unknown:
            return None, _NO_REASONS, False
        reasons = _static_reasons(rule, flow, dest_net, src_net) + dynamic
        if not reasons:
            reasons.append("rule %s matches every flow" % rule.name)
        return True, reasons, False

    def _dynamic(self, rule: Rule, view: _FlowView) -> tuple[bool | None, list[str]]:
        """The conditions of `rule` that change during a flow, in `_evaluate`'s order:
        (True | False | None=not yet known, their reasons)."""
        flow = view.flow
        dynamic: list[str] = []
        unknown = False
        if rule.categories is not None or rule.signatures is not None:
            if not getattr(flow, "detections", None):
                return False, dynamic
            hit = self._detection(rule, flow)
            if hit is None:
                return False, dynamic
            dynamic.append(hit)
        if rule.classifier is not None:
            if getattr(flow, "ml", None) is None:
                return False, dynamic
            hit = self._classifier(rule, flow)
            if hit is None:
                return False, dynamic
            dynamic.append(hit)
        if rule.app_proto is not None:
            app = flow.app_proto
            if app in rule.app_proto:
                dynamic.append("app_proto %s" % app)
            elif app is None and flow.proto in (PROTO_TCP, PROTO_UDP) and _young(flow):
                unknown = True
            else:
                return False, dynamic
        if rule.domains is not None:
            state, why = self._domain(rule, view)
            if state is False:
                return False, dynamic
            if state is None:
                unknown = True
            else:
                dynamic.append(why)
        if unknown:
            return None, dynamic
        return True, dynamic

    @staticmethod
    def _detection(rule: Rule, flow: Any) -> str | None:
        for det in getattr(flow, "detections", None) or ():
            category = getattr(det, "category", None)
            signature = getattr(det, "signature", "") or ""
            if rule.categories is not None and category not in rule.categories:
                continue
            if rule.signatures is not None and not any(
                    fnmatch.fnmatchcase(signature, p) for p in rule.signatures):
                continue
            if rule.categories is not None:
                return "category %s (%s)" % (category, signature)
            return "signature %s" % signature
        return None

    @staticmethod
    def _classifier(rule: Rule, flow: Any) -> str | None:
        ml = getattr(flow, "ml", None)
        scores = ml.get("scores") if isinstance(ml, dict) else None
        if not isinstance(scores, dict) or ml.get("evidence") == "insufficient":
            return None            # the classifier itself stands behind no score of such a flow
        for cond in rule.classifier:
            score = scores.get(cond.cls)
            if isinstance(score, (int, float)) and not isinstance(score, bool) and score >= cond.min_score:
                return "classifier %s %.2f >= %.2f (%s)" % (cond.cls, score, cond.min_score, ml.get("model", "model"))
        return None

    @staticmethod
    def _domain(rule: Rule, view: _FlowView) -> tuple[bool | None, str]:
        names = view.names()
        plans = view.plans
        for name, source in names:
            pattern = plans.domain_hits(name).get(id(rule)) if plans is not None else rule.domains.match(name)
            if pattern is not None:
                return True, "domain %s (%s%s)" % (name, source, "" if pattern == name else ", " + pattern)
        if view.claimed:
            return False, ""
        for name in sorted(view.learned()):
            pattern = plans.domain_hits(name).get(id(rule)) if plans is not None else rule.domains.match(name)
            if pattern is not None:
                return True, "domain %s (address from DNS%s)" % (name, "" if pattern == name else ", " + pattern)
        if view.pending_names():
            return None, ""
        return False, ""

    # -- verdicts ------------------------------------------------------------------------------

    def _verdict(self, policy: Policy, rule: str, action: str, reasons: list[str], view: _FlowView,
                 final: bool) -> Verdict:
        if action == "allow" and rule != "default":
            reasons = reasons + ["%s allowed" % ("rule " + rule)]
        out = list(reasons) + view.notes
        if self._multi:
            out.append("policy %s" % policy.name)
        return Verdict(action=_ACTIONS[action], mode=policy.mode, rule=rule, reasons=tuple(out),
                       final=final, alert=action != "allow")

    def _pending(self, policy: Policy, waiting: Rule, view: _FlowView) -> Verdict:
        self.counters["pending"] += 1
        # A provisional verdict must be asked again on the next packet even if nothing the
        # policy reads changed (the engine re-decides only dirty flows): bounded by _young().
        if hasattr(view.flow, "verdict_dirty"):
            view.flow.verdict_dirty = True
        what = "app_proto" if waiting.domains is None else "SNI/Host"
        reasons = ["waiting for %s: rule %s may still match" % (what, waiting.name)] + view.notes
        return Verdict(action=Action.ALLOW, mode=policy.mode, rule="pending", reasons=tuple(reasons))

    def _record(self, flow: Any, verdict: Verdict, policy: Policy, now: float) -> Verdict:
        if verdict.action is _ALLOW and not verdict.alert:
            return verdict
        key = (flow.flow_id, verdict.rule, verdict.action.value, verdict.mode.value)
        if self.attribution.recorded(key):
            return verdict
        sandbox = getattr(flow, "sandbox", None)
        self.attribution.record({
            "timestamp": _iso(now), "flow_id": flow.flow_id, "sandbox": sandbox,
            "src_ip": ip_text(flow.client_ip), "src_port": flow.client_port,
            "dest_ip": ip_text(flow.server_ip), "dest_port": flow.server_port,
            "proto": proto_name(flow.proto), "app_proto": flow.app_proto,
            "action": "alert" if verdict.action is Action.ALLOW else verdict.action.value,
            "mode": verdict.mode.value, "rule": verdict.rule, "reasons": list(verdict.reasons),
            "policy": policy.name, "digest": self.policy.short_digest,
        }, key)
        return verdict

    # -- learned state ---------------------------------------------------------------------------

    def _learned_names(self, flow: Any) -> frozenset:
        names = self._memo.get(flow.flow_id)
        if names is None or names[0] != flow.server_ip:
            found = frozenset(self.dns.names(flow.server_ip, getattr(flow, "start", 0.0)))
            names = (flow.server_ip, found)
            self._remember(self._memo, flow.flow_id, names)
        return names[1]

    def _fronting(self, flow: Any, name: str, source: str, now: float) -> None:
        signature = "policy.sni_mismatch" if source == "sni" else "policy.host_mismatch"
        detections = getattr(flow, "detections", None)
        if not isinstance(detections, list):
            return
        if any(getattr(d, "signature", None) == signature for d in detections):
            return
        self.counters["fronting"] += 1
        detections.append(Detection("policy", signature, {"name": name, "dest_ip": ip_text(flow.server_ip)}))

    @staticmethod
    def _remember(table: OrderedDict, key: Any, value: Any) -> None:
        table[key] = value
        table.move_to_end(key)
        if len(table) > MEMO_MAX:
            table.popitem(last=False)
