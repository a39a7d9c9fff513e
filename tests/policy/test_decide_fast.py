"""decide() (precomputed rule plans, cached policy choice, shared default verdicts) equals
decide_reference() (every rule through _evaluate, the policy looked up afresh) on random
policies and random flows, including its side effects; the caches follow the attribution
map (API registrations, reloads)."""
from __future__ import annotations

import copy

from hypothesis import given, settings, strategies as st

from egress.policy import PolicyEngine
from egress.policy.attribution import make_entry
from egress.types import Action, Detection
from tests.policy.helpers import answer, dns_flow, make_flow

CLIENTS = ["10.0.0.5", "10.0.0.6", "10.1.0.9"]
SERVERS = ["93.184.216.34", "93.184.216.35", "151.101.0.223", "10.0.0.2", "169.254.169.254"]
PORTS = [22, 53, 80, 443, 3333]
NAMES = ["pypi.org", "files.pythonhosted.org", "github.com", "raw.githubusercontent.com",
         "a.b.githubusercontent.com", "www.example.com", "evil.test", "93.184.216.34", "PyPI.org.", "github.com:443"]
CATEGORIES = ["mining", "ssh", "reverse_tunnel", "scan", "policy", "metadata"]
SIGNATURES = ["stratum.v1.subscribe", "ssh.banner", "policy.sni_mismatch", "scan.syn"]
APPS = [None, "tls", "http", "ssh", "dns", "stratum"]

CONDITIONS = {
    "dest": st.sampled_from(["[93.184.216.0/24]", "[93.184.216.34/32, 10.0.0.0/8]", "[169.254.169.254/32]",
                             "[0.0.0.0/0]"]),
    "src": st.sampled_from(["[10.0.0.0/24]", "[10.1.0.0/16]"]),
    "ports": st.sampled_from(["[443]", "[80, 443]", "[53]", "[1-1024]", "[3333]"]),
    "proto": st.sampled_from(["[tcp]", "[udp]", "[tcp, udp]", "[icmp]"]),
    "ip_version": st.sampled_from(["4", "6"]),
    "domains": st.sampled_from(["[pypi.org, files.pythonhosted.org]", "[github.com, '*.githubusercontent.com']",
                                "['*.example.com']", "[evil.test, '*.test']"]),
    "categories": st.sampled_from(["[mining]", "[ssh, reverse_tunnel]", "[policy]", "[scan, metadata]"]),
    "signatures": st.sampled_from(["['stratum.*']", "['ssh.*', 'scan.syn']"]),
    "app_proto": st.sampled_from(["[ssh]", "[tls, http]", "[stratum]"]),
    "classifier": st.sampled_from(["{class: mining, min_score: 0.9}", "{class: reverse_tunnel, min_score: 0.5}"]),
}


@st.composite
def rule_text(draw, i):
    keys = draw(st.lists(st.sampled_from(sorted(CONDITIONS)), max_size=3, unique=True))
    lines = ["      - name: r%d" % i, "        action: %s" % draw(st.sampled_from(["allow", "alert", "drop", "reject"]))]
    lines += ["        %s: %s" % (k, draw(CONDITIONS[k])) for k in keys]
    return "\n".join(lines) + "\n"


@st.composite
def policy_doc(draw):
    """One or two policies (the second bound to a sandbox), random rules and defaults."""
    two = draw(st.booleans())
    out = "version: 1\n"
    if two:
        out += "default_policy: p0\nsandboxes:\n  sb:\n    cidrs: [10.1.0.0/16]\n    policy: p1\n"
    out += "policies:\n"
    for p in range(2 if two else 1):
        rules = "".join(draw(rule_text(i)) for i in range(draw(st.integers(0, 6))))
        out += "  p%d:\n    mode: %s\n    require_dns_for_domains: %s\n    rules:\n%s    default: %s\n" % (
            p, draw(st.sampled_from(["enforce", "audit"])), draw(st.sampled_from(["true", "false"])),
            rules or "      []\n", draw(st.sampled_from(["allow", "alert", "drop", "reject"])))
    return out


@st.composite
def flow_args(draw):
    facts = {}
    for key in draw(st.lists(st.sampled_from(["tls.sni", "http.host", "dns.query", "iface"]), max_size=2,
                             unique=True)):
        facts[key] = draw(st.sampled_from(NAMES)) if key != "iface" else "veth0"
    dets = draw(st.lists(st.tuples(st.sampled_from(CATEGORIES), st.sampled_from(SIGNATURES)), max_size=2))
    ml = draw(st.sampled_from([None, {"model": "m", "class": "mining", "scores": {"mining": 0.95, "benign": 0.05}},
                               {"model": "m", "class": "benign", "scores": {"reverse_tunnel": 0.6}}, {"scores": 3}]))
    return dict(src=draw(st.sampled_from(CLIENTS)), dst=draw(st.sampled_from(SERVERS)),
                dport=draw(st.sampled_from(PORTS)), proto=draw(st.sampled_from(["tcp", "udp", "icmp"])),
                facts=facts, detections=[Detection(c, s) for c, s in dets], ml=ml,
                app_proto=draw(st.sampled_from(APPS)), pkts=draw(st.integers(1, 12)),
                payload=draw(st.sampled_from([0, 300, 5000])), inspecting=draw(st.booleans()))


def _dns(e):
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223"), answer("github.com", "93.184.216.35"),
                        answer("files.pythonhosted.org", "fastly.example", "CNAME"),
                        answer("fastly.example", "93.184.216.34")]), 999.0)


def _twins(text):
    fast, ref = PolicyEngine.from_text(text, "t.yaml"), PolicyEngine.from_text(text, "t.yaml")
    for e in (fast, ref):
        _dns(e)
    return fast, ref


def _same(fast, ref, args_list, rounds=2):
    """Each flow decided `rounds` times by both (a plan is reused the second time)."""
    for _ in range(rounds):
        for args in args_list:
            f1, f2 = make_flow(**copy.deepcopy(args)), make_flow(**copy.deepcopy(args))
            f2.flow_id = f1.flow_id
            for f in (f1, f2):
                f.sandbox = fast.attribute(f)
            v1, v2 = fast.decide(f1, 1000.0), ref.decide_reference(f2, 1000.0)
            assert v1 == v2, (args, v1, v2)
            assert f1.detections == f2.detections and f1.verdict_dirty == f2.verdict_dirty
    assert fast.counters == ref.counters
    assert fast.attribution.violations() == ref.attribution.violations()


@settings(max_examples=200, deadline=None)
@given(policy_doc(), st.lists(flow_args(), min_size=1, max_size=8))
def test_decide_equals_the_reference_evaluation(text, args_list):
    _same(*_twins(text), args_list)


def test_default_policy_on_many_flows_equals_the_reference():
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "rules" / "default.yaml").read_text()
    fast, ref = _twins(text)
    args_list = [dict(src=s, dst=d, dport=p, facts=facts, app_proto=app)
                 for s in CLIENTS[:2] for d in SERVERS for p in PORTS
                 for facts, app in (({}, None), ({"tls.sni": "pypi.org"}, "tls"), ({"http.host": "github.com"}, "http"),
                                    ({"tls.sni": "www.example.com"}, "tls"), ({}, "ssh"))]
    _same(fast, ref, args_list)


SANDBOXED = """\
version: 1
default_policy: open
policies:
  open:
    mode: enforce
    rules: []
    default: allow
  closed:
    mode: enforce
    rules: []
    default: drop
"""


def test_policy_choice_follows_api_registrations_and_file_reloads(tmp_path):
    e = PolicyEngine.from_text(SANDBOXED)
    flow = make_flow("10.9.0.1")
    assert e.decide(flow, 1.0).action is Action.ALLOW
    e.attribution.register(make_entry("10.9.0.1", "s1", policy="closed"))      # the API's call
    assert e.decide(flow, 2.0).action is Action.DROP
    e.attribution.unregister("10.9.0.1")
    assert e.decide(flow, 3.0).action is Action.ALLOW
    e.attribution.replace_file_entries([make_entry("10.9.0.0/16", "s2", policy="closed", source="file")])
    assert e.decide(flow, 4.0).action is Action.DROP                          # a sandbox map reload

    rules, smap = tmp_path / "r.yaml", tmp_path / "m.yaml"
    rules.write_text(SANDBOXED)
    smap.write_text("version: 1\nentries:\n  - {cidr: 10.9.0.1, sandbox: s3, policy: closed}\n")
    e = PolicyEngine.load([str(rules)], sandbox_map=str(smap))
    assert e.decide(flow, 5.0).action is Action.DROP
    smap.write_text("version: 1\nentries:\n  - {cidr: 10.9.0.1, sandbox: s3, policy: open}\n")
    e2 = e.reload()
    assert e2.decide(flow, 6.0).action is Action.ALLOW
    assert e.decide(flow, 7.0).action is Action.ALLOW        # the old engine sees the shared map too


def test_unknown_policy_is_counted_on_every_decision_as_before():
    e = PolicyEngine.from_text(SANDBOXED)
    e.attribution.register(make_entry("10.9.0.1", "s1", policy="gone"))
    for _ in range(3):
        e.decide(make_flow("10.9.0.1"), 1.0)
    assert e.counters["unknown_policy"] == 3


LABELS = st.sampled_from(["a", "b", "github", "com", "example", "x-y", ""])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(LABELS, min_size=1, max_size=4).map(".".join), max_size=6),
       st.lists(st.booleans(), max_size=6), st.lists(LABELS, min_size=1, max_size=5).map(".".join))
def test_domain_match_is_the_longest_wildcard_or_the_exact_name(bodies, wild, name):
    from egress.policy.match import DomainSet
    patterns = [("*." + b if w else b) for b, w in zip(bodies, wild + [False] * len(bodies))]
    ds = DomainSet(patterns)
    expect = name if name in ds.exact else next((p for s, p in ds.suffixes if name.endswith(s)), None)
    assert ds.match(name) == expect


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.sampled_from(NAMES + ["[::1]:443", "10.0.0.1", "x.", "", " A.B ", "a:b:c"]), st.text(max_size=20)))
def test_usable_names_are_normalized_non_addresses(raw):
    from egress.policy.engine import _usable_name
    from egress.policy.match import is_ip_literal, normalize_name
    want = normalize_name(raw)
    assert _usable_name(raw) == ("" if want and is_ip_literal(want) else want)
    assert _usable_name(raw) == _usable_name(raw)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a.test", "b.test", "c.test"]),
                          st.sampled_from(["A", "CNAME"]), st.sampled_from(["1.1.1.1", "1.1.1.2", "b.test", "c.test"]),
                          st.integers(0, 400), st.floats(0, 1000)), max_size=8),
       st.sampled_from(["a.test", "b.test", "c.test"]), st.sampled_from(["1.1.1.1", "1.1.1.2"]), st.floats(-10, 2000))
def test_resolves_to_agrees_with_the_address_set(records, name, addr, at):
    import ipaddress
    from egress.policy.dnscache import DnsCache
    cache = DnsCache(min_ttl=30, max_ttl=600)
    for owner, rtype, data, ttl, now in records:
        if (rtype == "A") == data[0].isdigit():
            cache.learn([answer(owner, data, rtype, ttl)], now)
    packed = ipaddress.ip_address(addr).packed
    addrs = cache.addresses(name, at)
    assert cache.resolves_to(name, packed, at) == (None if addrs is None else packed in addrs)


def _packed_reference(text):
    import ipaddress
    try:
        return ipaddress.ip_address(text.strip()).packed
    except (ValueError, AttributeError):
        return None


ADDRESS_TEXT = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(v=6).map(lambda a: a.exploded), st.ip_addresses(v=6).map(lambda a: str(a).upper()),
    st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join(map(str, t))),
    st.tuples(*[st.integers(0, 300)] * 4).map(lambda t: ".".join("%03d" % x for x in t)),
    st.text(alphabet="0123456789abcdefABCDEF:.% x", max_size=24))


@settings(max_examples=300, deadline=None)
@given(ADDRESS_TEXT, st.sampled_from(["", " ", "\n"]))
def test_packed_address_equals_ipaddress(text, pad):
    from egress.policy.match import packed_address
    assert packed_address(pad + text + pad) == _packed_reference(pad + text + pad)
