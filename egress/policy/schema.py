"""Rules files -> one validated, compiled, immutable `PolicySet` (see rules/README.md).

Guarantees:
- `load_policy(paths)` / `parse_policy([(name, text), ...])` either return a `PolicySet`
  or raise `PolicyError` listing EVERY problem found as `file:line: reason` (unknown keys
  with a did-you-mean hint, wrong types, bad CIDRs/ports/ranges, unknown actions,
  categories and classes, thresholds outside [0, 1], duplicate names, missing default).
- Several files merge: each must say `version: 1`; later files may only ADD sandboxes
  and policies (a name defined twice is an error naming both places); `dns:` and
  `default_policy:` may each be set by at most one file.
- The result is frozen dataclasses and tuples; nothing mutates it after load.
- `digest` is the sha256 of the canonical JSON of the merged, normalized policy
  (comments, key order, formatting and file names do not change it; any change of
  meaning does).
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Iterable, Mapping, Sequence

from egress.policy.match import CidrSet, DomainSet, PortSet, parse_network, valid_domain_pattern
from egress.policy.source import LList, LMap, PolicyError, did_you_mean, load_yaml, read_source
from egress.types import CATEGORIES, PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP, Mode

SCHEMA_VERSION = 1
ACTIONS = ("allow", "drop", "reject", "alert")
BLOCKING = frozenset(("drop", "reject"))
PROTOCOLS = {"tcp": frozenset((PROTO_TCP,)), "udp": frozenset((PROTO_UDP,)),
             "icmp": frozenset((PROTO_ICMP, PROTO_ICMPV6)), "any": None}
# Classifier classes a rule may name: the detection categories plus "benign".
CLASSES = ("benign",) + tuple(c for c in CATEGORIES if c != "policy")

TOP_KEYS = ("version", "dns", "default_policy", "sandboxes", "policies")
DNS_KEYS = ("min_ttl", "max_ttl", "max_entries", "trusted_resolvers")
SANDBOX_KEYS = ("cidrs", "interfaces", "policy", "description")
POLICY_KEYS = ("mode", "rules", "default", "require_dns_for_domains", "description")
RULE_KEYS = ("name", "action", "description", "dest", "src", "ports", "proto", "ip_version",
             "domains", "categories", "signatures", "app_proto", "classifier")
CLASSIFIER_KEYS = ("class", "min_score")
# Words other firewalls use, for the did-you-mean hint.
_ALIASES = {"deny": "drop", "block": "drop", "accept": "allow", "pass": "allow", "permit": "allow",
            "log": "alert", "refuse": "reject", "monitor": "audit", "block_mode": "enforce",
            "miner": "mining", "cryptomining": "mining", "all": "any"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")
_TOKEN = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,31}$")
_SIGNATURE = re.compile(r"^[A-Za-z0-9_.*?-]{1,128}$")


@dataclass(frozen=True, slots=True)
class Classifier:
    cls: str
    min_score: float


@dataclass(frozen=True)
class Rule:
    """One rule; a condition left as None is not checked (matches anything)."""
    name: str
    action: str
    file: str
    line: int
    dest: CidrSet | None = None
    src: CidrSet | None = None
    ports: PortSet | None = None
    proto: frozenset | None = None
    ip_version: int | None = None
    domains: DomainSet | None = None
    categories: frozenset | None = None
    signatures: tuple | None = None
    app_proto: frozenset | None = None
    classifier: tuple[Classifier, ...] | None = None
    description: str = ""

    @property
    def static(self) -> bool:
        """Only conditions fixed at flow start (addresses, ports, protocol)."""
        return (self.domains is None and self.categories is None and self.signatures is None
                and self.app_proto is None and self.classifier is None)


@dataclass(frozen=True)
class Policy:
    name: str
    mode: Mode
    rules: tuple[Rule, ...]
    default: str
    require_dns_for_domains: bool
    file: str
    line: int
    guarded_domains: DomainSet = field(default_factory=lambda: DomainSet(()))


@dataclass(frozen=True)
class Sandbox:
    name: str
    cidrs: CidrSet
    interfaces: frozenset
    policy: str | None
    file: str
    line: int


@dataclass(frozen=True)
class DnsSettings:
    min_ttl: int = 30             # seconds an answer is trusted at least (clients cache)
    max_ttl: int = 86400          # ... and at most
    max_entries: int = 65536      # learned records kept; the least recently refreshed go first
    trusted_resolvers: CidrSet | None = None   # None: learn from any DNS server


@dataclass(frozen=True)
class PolicySet:
    files: tuple[str, ...]
    policies: Mapping[str, Policy]
    sandboxes: tuple[Sandbox, ...]
    default_policy: str
    dns: DnsSettings
    digest: str
    canonical: str

    @property
    def short_digest(self) -> str:
        return self.digest[:12]

    def summary(self) -> str:
        rules = sum(len(p.rules) for p in self.policies.values())
        return "%d file%s, %d polic%s, %d sandbox%s, %d rule%s, digest sha256:%s" % (
            len(self.files), "" if len(self.files) == 1 else "s",
            len(self.policies), "y" if len(self.policies) == 1 else "ies",
            len(self.sandboxes), "" if len(self.sandboxes) == 1 else "es",
            rules, "" if rules == 1 else "s", self.short_digest)


# -- validation helpers ---------------------------------------------------------------

class _Checker:
    """Collects located errors for one file."""

    def __init__(self, path: str):
        self.path = path
        self.errors: list[tuple[str, int | None, str]] = []

    def err(self, line: int | None, reason: str) -> None:
        self.errors.append((self.path, line, reason))

    def keys(self, mapping: LMap, allowed: Sequence[str], where: str) -> None:
        for key in mapping:
            if key not in allowed:
                self.err(mapping.key_line(key), "unknown key '%s' in %s%s" % (key, where, did_you_mean(key, allowed)))

    def mapping(self, value: Any, line: int, what: str) -> LMap | None:
        if isinstance(value, LMap):
            return value
        self.err(line, "%s must be a mapping, got %s" % (what, _kind(value)))
        return None

    def sequence(self, value: Any, line: int, what: str, allow_scalar: bool = False) -> list[tuple[Any, int]] | None:
        """Items with their lines; a single scalar is accepted as a one-item list when allowed."""
        if isinstance(value, LList):
            if not value:
                self.err(line, "%s must not be empty" % what)
                return None
            return [(item, value.item_line(i)) for i, item in enumerate(value)]
        if allow_scalar and isinstance(value, (str, int)) and not isinstance(value, bool):
            return [(value, line)]
        self.err(line, "%s must be a list, got %s" % (what, _kind(value)))
        return None

    def string(self, value: Any, line: int, what: str) -> str | None:
        if isinstance(value, str) and value:
            return value
        self.err(line, "%s must be a non-empty string, got %s" % (what, _kind(value)))
        return None

    def integer(self, value: Any, line: int, what: str, lo: int, hi: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(line, "%s must be an integer, got %s" % (what, _kind(value)))
            return None
        if not lo <= value <= hi:
            self.err(line, "%s %d out of range [%d, %d]" % (what, value, lo, hi))
            return None
        return value

    def choice(self, value: Any, line: int, what: str, choices: Sequence[str]) -> str | None:
        if isinstance(value, str) and value in choices:
            return value
        shown = value if isinstance(value, str) else _kind(value)
        hint = ""
        if isinstance(value, str):
            alias = _ALIASES.get(value.lower())
            hint = " (did you mean '%s'?)" % alias if alias in choices else did_you_mean(value, choices)
        self.err(line, "unknown %s '%s' (expected one of: %s)%s" % (what, shown, ", ".join(choices), hint))
        return None


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "a boolean (%s)" % str(value).lower()
    if isinstance(value, LMap) or isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (LList, list)):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number (%s)" % value
    if isinstance(value, str):
        return "a string ('%s')" % value
    return type(value).__name__


# -- one file ---------------------------------------------------------------------------

class _FileResult:
    def __init__(self, path: str):
        self.path = path
        self.dns: tuple[DnsSettings, dict, int] | None = None
        self.default_policy: tuple[str, int] | None = None
        self.sandboxes: list[tuple[Sandbox, dict]] = []
        self.policies: list[tuple[Policy, dict]] = []


def _check_file(path: str, data: Any, c: _Checker) -> _FileResult:
    out = _FileResult(path)
    if not isinstance(data, LMap):
        c.err(1, "a rules file must be a mapping with 'version: %d' (got %s)" % (SCHEMA_VERSION, _kind(data)))
        return out
    c.keys(data, TOP_KEYS, "the top level")
    if "version" not in data:
        c.err(data.line, "missing 'version: %d'" % SCHEMA_VERSION)
    elif data["version"] != SCHEMA_VERSION or isinstance(data["version"], bool):
        c.err(data.value_line("version"), "unsupported version %r (this egress reads version %d)"
              % (data["version"], SCHEMA_VERSION))
    if "dns" in data:
        out.dns = _check_dns(data["dns"], data.value_line("dns"), c)
    if "default_policy" in data:
        name = c.string(data["default_policy"], data.value_line("default_policy"), "default_policy")
        if name:
            out.default_policy = (name, data.value_line("default_policy"))
    if "sandboxes" in data:
        sbx = c.mapping(data["sandboxes"], data.value_line("sandboxes"), "sandboxes")
        for name, body in (sbx or {}).items():
            s = _check_sandbox(name, body, sbx.key_line(name), sbx.value_line(name), c)
            if s:
                out.sandboxes.append(s)
    if "policies" in data:
        pols = c.mapping(data["policies"], data.value_line("policies"), "policies")
        for name, body in (pols or {}).items():
            p = _check_policy(name, body, pols.key_line(name), pols.value_line(name), c)
            if p:
                out.policies.append(p)
    if "sandboxes" not in data and "policies" not in data:
        c.err(data.line, "nothing defined: expected 'policies:' and/or 'sandboxes:'")
    return out


def _check_dns(value: Any, line: int, c: _Checker) -> tuple[DnsSettings, dict, int] | None:
    m = c.mapping(value, line, "dns")
    if m is None:
        return None
    c.keys(m, DNS_KEYS, "dns")
    norm: dict[str, Any] = {}
    kw: dict[str, Any] = {}
    for key, lo, hi in (("min_ttl", 0, 86400), ("max_ttl", 1, 7 * 86400), ("max_entries", 1, 10_000_000)):
        if key in m:
            v = c.integer(m[key], m.value_line(key), "dns." + key, lo, hi)
            if v is not None:
                kw[key] = norm[key] = v
    if kw.get("min_ttl", 0) > kw.get("max_ttl", 86400):
        c.err(m.value_line("min_ttl"), "dns.min_ttl %d is above dns.max_ttl %d" % (kw["min_ttl"], kw.get("max_ttl", 86400)))
    if "trusted_resolvers" in m:
        nets = _networks(m["trusted_resolvers"], m.value_line("trusted_resolvers"), "dns.trusted_resolvers", c)
        if nets is not None:
            kw["trusted_resolvers"] = CidrSet(nets)
            norm["trusted_resolvers"] = [str(n) for n in nets]
    return DnsSettings(**kw), norm, line


def _networks(value: Any, line: int, what: str, c: _Checker) -> list | None:
    items = c.sequence(value, line, what, allow_scalar=True)
    if items is None:
        return None
    nets, ok = [], True
    for item, item_line in items:
        try:
            nets.append(parse_network(item))
        except ValueError as e:
            c.err(item_line, "%s: %s" % (what, e))
            ok = False
    return nets if ok else None


def _check_sandbox(name: str, body: Any, key_line: int, line: int, c: _Checker) -> tuple[Sandbox, dict] | None:
    if not _NAME.match(name):
        c.err(key_line, "sandbox name '%s' must be letters, digits, '_.:-' (max 64)" % name)
    m = c.mapping(body, line, "sandbox '%s'" % name)
    if m is None:
        return None
    c.keys(m, SANDBOX_KEYS, "sandbox '%s'" % name)
    norm: dict[str, Any] = {}
    nets: list = []
    if "cidrs" in m:
        nets = _networks(m["cidrs"], m.value_line("cidrs"), "cidrs", c) or []
        norm["cidrs"] = sorted(str(n) for n in nets)
    ifaces: list[str] = []
    if "interfaces" in m:
        for item, item_line in c.sequence(m["interfaces"], m.value_line("interfaces"), "interfaces", True) or ():
            if isinstance(item, str) and re.match(r"^[A-Za-z0-9_.@:+-]{1,15}$", item):
                ifaces.append(item)
            else:
                c.err(item_line, "interface name %r is not a valid Linux interface name" % (item,))
        norm["interfaces"] = sorted(ifaces)
    if "cidrs" not in m and "interfaces" not in m:
        c.err(m.line, "sandbox '%s' needs 'cidrs:' and/or 'interfaces:'" % name)
    policy = None
    if "policy" in m:
        policy = c.string(m["policy"], m.value_line("policy"), "policy")
        norm["policy"] = policy
    return Sandbox(name, CidrSet(nets), frozenset(ifaces), policy, c.path, key_line), norm


def _check_policy(name: str, body: Any, key_line: int, line: int, c: _Checker) -> tuple[Policy, dict] | None:
    if not _NAME.match(name):
        c.err(key_line, "policy name '%s' must be letters, digits, '_.:-' (max 64)" % name)
    m = c.mapping(body, line, "policy '%s'" % name)
    if m is None:
        return None
    where = "policy '%s'" % name
    c.keys(m, POLICY_KEYS, where)
    mode = Mode.ENFORCE
    if "mode" in m:
        v = c.choice(m["mode"], m.value_line("mode"), "mode", ("enforce", "audit"))
        mode = Mode(v) if v else mode
    else:
        c.err(key_line, "%s: missing 'mode: enforce' or 'mode: audit'" % where)
    default = None
    if "default" in m:
        default = c.choice(m["default"], m.value_line("default"), "default action", ACTIONS)
    else:
        c.err(key_line, "%s: missing 'default:' action (allow, drop, reject or alert): precedence "
                      "is first match, then the explicit default" % where)
    require_dns = False
    if "require_dns_for_domains" in m:
        v = m["require_dns_for_domains"]
        if isinstance(v, bool):
            require_dns = v
        else:
            c.err(m.value_line("require_dns_for_domains"), "require_dns_for_domains must be true or false, got %s" % _kind(v))
    rules: list[Rule] = []
    norm_rules: list[dict] = []
    if "rules" in m:
        raw = m["rules"]
        if raw is None or (isinstance(raw, LList) and not raw):
            pass                                  # an empty list: only the default applies
        elif not isinstance(raw, LList):
            c.err(m.value_line("rules"), "rules must be a list, got %s" % _kind(raw))
        else:
            seen: dict[str, int] = {}
            for i, item in enumerate(raw):
                rule, norm, rule_name = _check_rule(item, raw.item_line(i), i, c)
                if rule_name is not None:
                    if rule_name in seen:
                        c.err(raw.item_line(i), "duplicate rule name '%s' in %s (first at line %d)"
                              % (rule_name, where, seen[rule_name]))
                        continue
                    seen[rule_name] = raw.item_line(i)
                if rule is not None:
                    rules.append(rule)
                    norm_rules.append(norm)
    guarded = DomainSet(p for r in rules if r.domains is not None for p in r.domains.patterns)
    policy = Policy(name, mode, tuple(rules), default or "allow", require_dns, c.path, key_line, guarded)
    norm_policy = {"mode": mode.value, "default": default, "require_dns_for_domains": require_dns, "rules": norm_rules}
    return policy, norm_policy


def _check_rule(item: Any, line: int, index: int, c: _Checker) -> tuple[Rule | None, dict, str | None]:
    """(rule or None when invalid, normalized form, its name when it has one)."""
    m = c.mapping(item, line, "rule #%d" % (index + 1))
    if m is None:
        return None, {}, None
    label = "rule #%d" % (index + 1)
    name = None
    if "name" in m:
        name = c.string(m["name"], m.value_line("name"), "rule name")
        if name and not _NAME.match(name):
            c.err(m.value_line("name"), "rule name '%s' must be letters, digits, '_.:-' (max 64)" % name)
        label = "rule '%s'" % name if name else label
    else:
        c.err(m.line, "%s: missing 'name:'" % label)
    c.keys(m, RULE_KEYS, label)
    action = None
    if "action" in m:
        action = c.choice(m["action"], m.value_line("action"), "action", ACTIONS)
    else:
        c.err(m.line, "%s: missing 'action:' (allow, drop, reject or alert)" % label)
    kw: dict[str, Any] = {}
    norm: dict[str, Any] = {"name": name, "action": action}
    errors_before = len(c.errors)

    for key in ("dest", "src"):
        if key in m:
            nets = _networks(m[key], m.value_line(key), key, c)
            if nets is not None:
                kw[key] = CidrSet(nets)
                norm[key] = [str(n) for n in nets]
    if "ports" in m:
        ranges = _ports(m["ports"], m.value_line("ports"), c)
        if ranges is not None:
            kw["ports"] = PortSet(ranges)
            norm["ports"] = sorted(set(ranges))
    if "proto" in m:
        protos: set[int] = set()
        names = []
        any_proto = False
        for item, item_line in c.sequence(m["proto"], m.value_line("proto"), "proto", True) or ():
            v = c.choice(item, item_line, "proto", tuple(PROTOCOLS))
            if v == "any":
                any_proto = True
            elif v:
                protos |= PROTOCOLS[v]
                names.append(v)
        if not any_proto and protos:
            kw["proto"] = frozenset(protos)
        norm["proto"] = "any" if any_proto else sorted(names)
    if "ip_version" in m:
        v = m["ip_version"]
        if v in (4, 6) and not isinstance(v, bool):
            kw["ip_version"] = norm["ip_version"] = v
        else:
            c.err(m.value_line("ip_version"), "ip_version must be 4 or 6, got %s" % _kind(v))
    if "domains" in m:
        patterns = []
        for item, item_line in c.sequence(m["domains"], m.value_line("domains"), "domains", True) or ():
            why = valid_domain_pattern(item)
            if why:
                c.err(item_line, why)
            else:
                patterns.append(item.lower().rstrip("."))
        if patterns:
            kw["domains"] = DomainSet(patterns)
            norm["domains"] = sorted(set(patterns))
    if "categories" in m:
        cats = []
        for item, item_line in c.sequence(m["categories"], m.value_line("categories"), "categories", True) or ():
            v = c.choice(item, item_line, "category", CATEGORIES)
            if v:
                cats.append(v)
        if cats:
            kw["categories"] = frozenset(cats)
            norm["categories"] = sorted(set(cats))
    if "signatures" in m:
        sigs = []
        for item, item_line in c.sequence(m["signatures"], m.value_line("signatures"), "signatures", True) or ():
            if isinstance(item, str) and _SIGNATURE.match(item):
                sigs.append(item)
            else:
                c.err(item_line, "signature pattern %r must be a dotted name, '*' and '?' allowed" % (item,))
        if sigs:
            kw["signatures"] = tuple(sigs)
            norm["signatures"] = sorted(set(sigs))
    if "app_proto" in m:
        protos_ = []
        for item, item_line in c.sequence(m["app_proto"], m.value_line("app_proto"), "app_proto", True) or ():
            if isinstance(item, str) and _TOKEN.match(item):
                protos_.append(item)
            else:
                c.err(item_line, "app_proto %r must be a lower-case protocol name such as ssh, tls, http" % (item,))
        if protos_:
            kw["app_proto"] = frozenset(protos_)
            norm["app_proto"] = sorted(set(protos_))
    if "classifier" in m:
        cl = _classifier(m["classifier"], m.value_line("classifier"), c)
        if cl is not None:
            kw["classifier"] = cl
            norm["classifier"] = [{"class": x.cls, "min_score": x.min_score} for x in cl]
    if "description" in m:
        d = m["description"]
        if isinstance(d, str):
            kw["description"] = d
        else:
            c.err(m.value_line("description"), "description must be text, got %s" % _kind(d))
    if name is None or action is None or len(c.errors) != errors_before:
        return None, norm, name
    return Rule(name=name, action=action, file=c.path, line=m.line, **kw), norm, name


def _ports(value: Any, line: int, c: _Checker) -> list[tuple[int, int]] | None:
    items = c.sequence(value, line, "ports", allow_scalar=True)
    if items is None:
        return None
    out, ok = [], True
    for item, item_line in items:
        r = _port_range(item)
        if isinstance(r, str):
            c.err(item_line, r)
            ok = False
        else:
            out.append(r)
    return out if ok else None


def _port_range(item: Any) -> tuple[int, int] | str:
    if isinstance(item, bool):
        return "port must be a number or 'lo-hi', got %s" % _kind(item)
    if isinstance(item, int):
        lo = hi = item
    elif isinstance(item, str) and re.fullmatch(r"\s*\d+\s*(-\s*\d+\s*)?", item):
        parts = [int(p) for p in item.split("-")]
        lo, hi = parts[0], parts[-1]
    else:
        return "port %s is not a number or a 'lo-hi' range" % _kind(item)
    for p in (lo, hi):
        if not 1 <= p <= 65535:
            return "port %d out of range [1, 65535]" % p
    if lo > hi:
        return "port range '%s' is reversed (low end above high end)" % item
    return lo, hi


def _classifier(value: Any, line: int, c: _Checker) -> tuple[Classifier, ...] | None:
    entries: list[tuple[Any, int]]
    if isinstance(value, LList):
        entries = [(v, value.item_line(i)) for i, v in enumerate(value)]
        if not entries:
            c.err(line, "classifier must not be empty")
            return None
    else:
        entries = [(value, line)]
    out, ok = [], True
    for entry, entry_line in entries:
        m = c.mapping(entry, entry_line, "classifier")
        if m is None:
            ok = False
            continue
        c.keys(m, CLASSIFIER_KEYS, "classifier")
        if "class" not in m:
            c.err(m.line, "classifier: missing 'class:' (%s)" % ", ".join(CLASSES))
            ok = False
            continue
        classes = [c.choice(x, xl, "classifier class", CLASSES)
                   for x, xl in (c.sequence(m["class"], m.value_line("class"), "class", True) or ())]
        score = m.get("min_score", 0.5)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            c.err(m.value_line("min_score"), "min_score must be a number in [0, 1], got %s" % _kind(score))
            ok = False
        elif not 0.0 <= float(score) <= 1.0:
            c.err(m.value_line("min_score"), "min_score %s outside [0, 1]" % score)
            ok = False
        if not all(classes) or not classes:
            ok = False
        if ok:
            out.extend(Classifier(x, float(score)) for x in classes)
    return tuple(out) if ok else None


# -- merge -----------------------------------------------------------------------------

def parse_policy(sources: Iterable[tuple[str, str | bytes]]) -> PolicySet:
    """Validate and merge in-memory files given as (name, text); PolicyError on any problem."""
    errors: list[tuple[str, int | None, str]] = []
    results: list[_FileResult] = []
    names: list[str] = []
    for path, text in sources:
        names.append(path)
        try:
            data = load_yaml(path, text)
        except PolicyError as e:
            errors.extend(e.errors)
            continue
        c = _Checker(path)
        results.append(_check_file(path, data, c))
        errors.extend(c.errors)
    if not names:
        raise PolicyError([("", None, "no rules files given")])

    policies: dict[str, Policy] = {}
    norm_policies: dict[str, dict] = {}
    sandboxes: dict[str, Sandbox] = {}
    norm_sandboxes: dict[str, dict] = {}
    dns: tuple[DnsSettings, dict, int, str] | None = None
    default_policy: tuple[str, int, str] | None = None
    for r in results:
        for p, norm in r.policies:
            if p.name in policies:
                first = policies[p.name]
                errors.append((r.path, p.line, "policy '%s' already defined at %s:%d" % (p.name, first.file, first.line)))
            else:
                policies[p.name], norm_policies[p.name] = p, norm
        for s, norm in r.sandboxes:
            if s.name in sandboxes:
                first = sandboxes[s.name]
                errors.append((r.path, s.line, "sandbox '%s' already defined at %s:%d" % (s.name, first.file, first.line)))
            else:
                sandboxes[s.name], norm_sandboxes[s.name] = s, norm
        if r.dns:
            if dns:
                errors.append((r.path, r.dns[2], "dns: already set at %s:%d (only one file may set it)" % (dns[3], dns[2])))
            else:
                dns = r.dns + (r.path,)
        if r.default_policy:
            if default_policy:
                errors.append((r.path, r.default_policy[1], "default_policy already set at %s:%d"
                               % (default_policy[2], default_policy[1])))
            else:
                default_policy = r.default_policy + (r.path,)

    for s in sandboxes.values():
        if s.policy is not None and s.policy not in policies:
            errors.append((s.file, s.line, "sandbox '%s' names unknown policy '%s'%s"
                           % (s.name, s.policy, did_you_mean(s.policy, policies))))
    if default_policy and default_policy[0] not in policies:
        errors.append((default_policy[2], default_policy[1], "default_policy names unknown policy '%s'%s"
                       % (default_policy[0], did_you_mean(default_policy[0], policies))))
    if not policies and not errors:
        errors.append((names[0], None, "no policy defined: add a 'policies:' section"))
    if not default_policy and len(policies) > 1:
        first = next(iter(policies.values()))
        errors.append((first.file, first.line, "default_policy: required when more than one policy is defined "
                       "(it applies to traffic of no known sandbox): one of %s" % ", ".join(policies)))
    if errors:
        raise PolicyError(_ordered(errors, names))

    chosen_default = default_policy[0] if default_policy else next(iter(policies))
    canonical_data = {
        "version": SCHEMA_VERSION,
        "dns": dns[1] if dns else {},
        "default_policy": chosen_default,
        "sandboxes": norm_sandboxes,
        "policies": norm_policies,
    }
    canonical = json.dumps(canonical_data, sort_keys=True, separators=(",", ":"))
    return PolicySet(
        files=tuple(names),
        policies=MappingProxyType(policies),
        sandboxes=tuple(sandboxes.values()),
        default_policy=chosen_default,
        dns=dns[0] if dns else DnsSettings(),
        digest=hashlib.sha256(canonical.encode()).hexdigest(),
        canonical=canonical,
    )


def _ordered(errors: list, names: list[str]) -> list:
    """File order first, then line order (stable for errors on the same line)."""
    rank = {n: i for i, n in enumerate(names)}
    return sorted(errors, key=lambda e: (rank.get(e[0], len(rank)), e[1] or 0))


def load_policy(paths: Sequence[str]) -> PolicySet:
    """Read, validate and merge rules files (in order); PolicyError lists every problem."""
    sources, errors = [], []
    for path in paths:
        try:
            sources.append((str(path), read_source(str(path))))
        except PolicyError as e:
            errors.extend(e.errors)
    if errors:
        raise PolicyError(errors)
    return parse_policy(sources)
