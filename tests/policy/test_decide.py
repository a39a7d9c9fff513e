"""decide(): precedence, default, audit vs enforce, domains (SNI, Host, DNS-learned), TTLs,
domain fronting, IPv4/IPv6, classifier thresholds, categories, pending names, reload."""
from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from egress.policy import PolicyEngine, PolicyError
from egress.types import Action, Detection, Mode
from tests.policy.helpers import answer, dns_flow, engine, make_flow, policy_text

REPO = Path(__file__).resolve().parents[2]
T = 1000.0

TWO_RULES = policy_text("""\
      - name: first
        action: reject
        ports: [443]
      - name: second
        action: allow
        dest: [93.184.216.0/24]
""", default="drop")


# -- precedence and default --------------------------------------------------------------

def test_first_matching_rule_wins():
    e = engine(TWO_RULES)
    v = e.decide(make_flow(dport=443), T)
    assert (v.action, v.rule) == (Action.REJECT, "first")
    v = e.decide(make_flow(dport=80), T)
    assert (v.action, v.rule) == (Action.ALLOW, "second")


def test_explicit_default_applies_when_nothing_matches():
    v = engine(TWO_RULES).decide(make_flow(dst="198.51.100.7", dport=80), T)
    assert (v.action, v.rule, v.reasons) == (Action.DROP, "default", ("default drop",))
    assert v.alert and v.final


def test_conditions_of_one_rule_are_anded():
    e = engine(policy_text("""\
      - name: both
        action: drop
        ports: [22]
        dest: [10.9.0.0/16]
"""))
    assert e.decide(make_flow(dst="10.9.1.1", dport=22), T).action is Action.DROP
    assert e.decide(make_flow(dst="10.9.1.1", dport=23), T).action is Action.ALLOW
    assert e.decide(make_flow(dst="10.8.1.1", dport=22), T).action is Action.ALLOW


def test_reasons_are_human_readable():
    e = engine(policy_text("""\
      - name: miners
        action: drop
        categories: [mining]
"""))
    flow = make_flow(detections=[("mining", "stratum.v1.subscribe")])
    v = e.decide(flow, T)
    assert v.rule == "miners" and "category mining (stratum.v1.subscribe)" in v.reasons


# -- audit, enforce, alert ------------------------------------------------------------------

def test_audit_mode_reports_the_action_but_does_not_enforce_it():
    text = policy_text("      - name: no-ssh\n        action: reject\n        ports: [22]\n", mode="audit")
    v = engine(text).decide(make_flow(dport=22), T)
    assert v.action is Action.REJECT and v.mode is Mode.AUDIT and v.enforced_action is Action.ALLOW
    v2 = engine(text.replace("mode: audit", "mode: enforce")).decide(make_flow(dport=22), T)
    assert v2.mode is Mode.ENFORCE and v2.enforced_action is Action.REJECT


def test_alert_action_allows_and_alerts():
    e = engine(policy_text("      - name: watch\n        action: alert\n        ports: [8080]\n", default="drop"))
    v = e.decide(make_flow(dport=8080), T)
    assert v.action is Action.ALLOW and v.alert and v.rule == "watch"
    assert e.attribution.violations()[0]["action"] == "alert"


# -- addresses, IPv4 and IPv6 ---------------------------------------------------------------

def test_dest_and_src_cidrs_for_ipv4_and_ipv6():
    e = engine(policy_text("""\
      - name: v6-net
        action: drop
        dest: ["2001:db8:1::/48"]
      - name: v4-net
        action: reject
        src: [10.7.0.0/16]
      - name: only-v6
        action: alert
        ip_version: 6
"""))
    assert e.decide(make_flow("fd00::5", "2001:db8:1::80"), T).rule == "v6-net"
    assert e.decide(make_flow("fd00::5", "2001:db8:2::80"), T).rule == "only-v6"
    assert e.decide(make_flow("10.7.3.3", "192.0.2.1"), T).rule == "v4-net"
    assert e.decide(make_flow("10.8.3.3", "192.0.2.1"), T).rule == "default"


def test_longest_prefix_is_reported_and_proto_icmp_matches_both_versions():
    e = engine(policy_text("""\
      - name: ping
        action: drop
        proto: icmp
        dest: [192.0.2.0/24, 192.0.2.128/25, "2001:db8::/32"]
"""))
    v = e.decide(make_flow(dst="192.0.2.200", proto="icmp"), T)
    assert v.rule == "ping" and "dest 192.0.2.200 in 192.0.2.128/25" in v.reasons
    assert e.decide(make_flow("fd00::1", "2001:db8::1", proto="icmp"), T).rule == "ping"
    assert e.decide(make_flow(dst="192.0.2.200", proto="tcp"), T).rule == "default"


def test_ports_never_match_portless_protocols():
    e = engine(policy_text("      - name: p\n        action: drop\n        ports: [\"1-65535\"]\n"))
    assert e.decide(make_flow(proto="icmp"), T).rule == "default"
    assert e.decide(make_flow(proto="udp", dport=9), T).rule == "p"


# -- domains ------------------------------------------------------------------------------------

DOMAINS = policy_text("""\
      - name: hostile
        action: drop
        categories: [mining, policy]
      - name: registries
        action: allow
        ports: [443, 80]
        domains: [pypi.org, "*.githubusercontent.com"]
""", default="reject")


@pytest.mark.parametrize("name,allowed", [
    ("pypi.org", True), ("PyPI.org.", True), ("evil-pypi.org", False), ("x.pypi.org", False),
    ("raw.githubusercontent.com", True), ("a.b.githubusercontent.com", True), ("githubusercontent.com", False),
])
def test_domain_patterns_via_sni(name, allowed):
    v = engine(DOMAINS).decide(make_flow(facts={"tls.sni": name}, pkts=4, payload=517), T)
    assert (v.action is Action.ALLOW) == allowed, v
    if allowed:
        assert v.rule == "registries" and any(r.startswith("domain ") and "(sni" in r for r in v.reasons)


def test_domain_via_http_host_with_port():
    v = engine(DOMAINS).decide(make_flow(dport=80, facts={"http.host": "pypi.org:80"}, pkts=4, payload=80), T)
    assert v.rule == "registries" and "domain pypi.org (host)" in v.reasons


def test_domain_via_dns_learned_address_and_cname_chain():
    e = engine(DOMAINS)
    e.observe(dns_flow([answer("objects.githubusercontent.com", "cdn.fastly.example", "CNAME"),
                        answer("cdn.fastly.example", "185.199.108.133"),
                        answer("cdn.fastly.example", "2606:50c0:8000::154", "AAAA")]), T - 1)
    v = e.decide(make_flow(dst="185.199.108.133"), T)
    assert v.action is Action.ALLOW and "address from DNS" in v.reasons[-2]
    assert e.decide(make_flow("fd00::5", "2606:50c0:8000::154"), T).action is Action.ALLOW
    # An unrelated address is not allowed once it is clear no name will come.
    assert e.decide(make_flow(dst="185.199.108.134", inspecting=False), T).action is Action.REJECT


def test_ttl_expiry_by_packet_time_with_min_ttl():
    e = engine(DOMAINS.replace("version: 1\n", "version: 1\ndns: {min_ttl: 60}\n"))
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223", ttl=5)], ts=T), T)   # clamped to 60 s
    assert e.decide(make_flow(dst="151.101.0.223", ts=T + 59, inspecting=False), T + 59).action is Action.ALLOW
    assert e.decide(make_flow(dst="151.101.0.223", ts=T + 61, inspecting=False), T + 61).action is Action.REJECT


def test_a_running_flow_is_not_revoked_when_the_ttl_expires():
    e = engine(DOMAINS)
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223", ttl=30)], ts=T), T)
    flow = make_flow(dst="151.101.0.223", ts=T + 1, inspecting=False)
    assert e.decide(flow, T + 1).action is Action.ALLOW
    assert e.decide(flow, T + 3600).action is Action.ALLOW     # re-decided an hour later


def test_an_sni_overrides_dns_learned_names_of_a_shared_address():
    e = engine(DOMAINS)
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223")]), T - 1)
    flow = make_flow(dst="151.101.0.223", facts={"tls.sni": "evil.example"}, pkts=4, payload=517)
    assert e.decide(flow, T).action is Action.REJECT


def test_domain_fronting_mismatch_is_a_policy_detection_and_the_allow_does_not_match():
    e = engine(DOMAINS)
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223")]), T - 1)
    good = make_flow(dst="151.101.0.223", facts={"tls.sni": "pypi.org"}, pkts=4, payload=517)
    assert e.decide(good, T).rule == "registries" and not good.detections
    fronted = make_flow(dst="203.0.113.9", facts={"tls.sni": "pypi.org"}, pkts=4, payload=517)
    v = e.decide(fronted, T)
    assert v.action is Action.DROP and v.rule == "hostile"
    assert [(d.category, d.signature) for d in fronted.detections] == [("policy", "policy.sni_mismatch")]
    assert any("not an address DNS gave for it" in r for r in v.reasons)
    e.decide(fronted, T)
    assert len(fronted.detections) == 1                          # idempotent


def test_without_dns_an_sni_is_trusted_unless_the_policy_requires_dns():
    flow = lambda: make_flow(dst="203.0.113.9", facts={"tls.sni": "pypi.org"}, pkts=4, payload=517, inspecting=False)
    assert engine(DOMAINS).decide(flow(), T).action is Action.ALLOW
    strict = engine(DOMAINS.replace("    rules:\n", "    require_dns_for_domains: true\n    rules:\n", 1))
    v = strict.decide(flow(), T)
    assert v.action is Action.REJECT and any("require_dns_for_domains" in r for r in v.reasons)
    strict.observe(dns_flow([answer("pypi.org", "203.0.113.9")]), T - 1)
    assert strict.decide(flow(), T).action is Action.ALLOW


def test_untrusted_resolver_answers_are_not_learned():
    e = engine(DOMAINS.replace("version: 1\n", "version: 1\ndns: {trusted_resolvers: [10.0.0.2]}\n"))
    e.observe(dns_flow([answer("pypi.org", "198.51.100.1")], resolver="203.0.113.53"), T - 1)
    assert e.decide(make_flow(dst="198.51.100.1", inspecting=False), T).action is Action.REJECT
    e.observe(dns_flow([answer("pypi.org", "198.51.100.1")], resolver="10.0.0.2"), T - 1)
    assert e.decide(make_flow(dst="198.51.100.1", inspecting=False), T).action is Action.ALLOW
    assert e.counters["dns_untrusted"] == 1


def test_dns_cache_is_bounded_and_evictions_are_counted():
    e = engine(DOMAINS.replace("version: 1\n", "version: 1\ndns: {max_entries: 3}\n"))
    e.observe(dns_flow([answer("n%d.example" % i, "192.0.2.%d" % i) for i in range(1, 6)]), T)
    assert len(e.dns) == 3 and e.dns.counters["evicted"] == 2
    assert e.dns.addresses("n1.example", T) is None and e.dns.addresses("n5.example", T) == {bytes([192, 0, 2, 5])}


# -- pending: waiting for the SNI under deny-by-default ---------------------------------------

def test_young_flow_waiting_for_its_sni_is_allowed_provisionally_then_decided():
    e = engine(DOMAINS)
    flow = make_flow(dst="198.51.100.7", pkts=1)                  # the SYN
    v = e.decide(flow, T)
    assert v.action is Action.ALLOW and v.rule == "pending" and not v.final
    flow.facts["tls.sni"] = "pypi.org"
    assert e.decide(flow, T).rule == "registries"
    other = make_flow(dst="198.51.100.7", pkts=4, payload=517, facts={"tls.sni": "example.net"})
    assert e.decide(other, T).action is Action.REJECT


def test_pending_ends_with_the_budget_or_when_detectors_are_done():
    e = engine(DOMAINS)
    assert e.decide(make_flow(dst="198.51.100.7", pkts=50, payload=60000), T).action is Action.REJECT
    assert e.decide(make_flow(dst="198.51.100.7", inspecting=False), T).action is Action.REJECT
    assert e.decide(make_flow(dst="198.51.100.7", app_proto="ssh"), T).action is Action.REJECT


def test_no_waiting_where_the_allow_rule_cannot_match_anyway():
    v = engine(DOMAINS).decide(make_flow(dst="198.51.100.7", dport=4444), T)
    assert v.action is Action.REJECT and v.rule == "default"


def test_final_only_when_no_earlier_rule_can_still_match():
    static_only = DOMAINS.replace("      - name: hostile\n        action: drop\n        categories: [mining, policy]\n", "")
    assert engine(static_only).decide(make_flow(dst="198.51.100.7", dport=4444), T).final
    assert not engine(DOMAINS).decide(make_flow(dst="198.51.100.7", dport=4444), T).final
    assert engine(TWO_RULES).decide(make_flow(dport=80), T).final


def test_block_rules_on_detections_match_when_the_detection_lands():
    e = engine(DOMAINS)
    flow = make_flow(dst="198.51.100.7", facts={"tls.sni": "pypi.org"}, pkts=4, payload=517)
    assert e.decide(flow, T).action is Action.ALLOW
    flow.detections.append(Detection("mining", "stratum.v1.subscribe"))
    assert e.decide(flow, T).rule == "hostile"


# -- categories, signatures, app_proto, classifier ----------------------------------------------

CLASSIFY = policy_text("""\
      - name: sig
        action: reject
        signatures: ["ssh.reverse.*"]
      - name: ssh
        action: reject
        app_proto: [ssh]
      - name: ml-mining
        action: drop
        classifier: {class: [mining, reverse_tunnel], min_score: 0.9}
""")


def test_signature_patterns_and_app_proto():
    e = engine(CLASSIFY)
    assert e.decide(make_flow(detections=[("reverse_tunnel", "ssh.reverse.remote_forward")]), T).rule == "sig"
    assert e.decide(make_flow(detections=[("ssh", "ssh.banner")], app_proto="ssh"), T).rule == "ssh"
    assert e.decide(make_flow(app_proto="tls"), T).rule == "default"


@pytest.mark.parametrize("scores,rule", [
    ({"mining": 0.9, "benign": 0.1}, "ml-mining"),
    ({"mining": 0.8999, "benign": 0.1001}, "default"),
    ({"reverse_tunnel": 0.97}, "ml-mining"),
    ({"benign": 1.0}, "default"),
    ({"mining": "high"}, "default"),
])
def test_classifier_thresholds(scores, rule):
    flow = make_flow(ml={"model": "m1", "class": max(scores, key=lambda k: str(scores[k])), "scores": scores})
    v = engine(CLASSIFY).decide(flow, T)
    assert v.rule == rule
    if rule != "default":
        assert any(r.startswith("classifier ") and "(m1)" in r for r in v.reasons)


def test_scores_the_classifier_does_not_stand_behind_are_not_acted_upon():
    # Too few payload packets: the classifier says so, and its scores (reported at flow
    # end for the record) must not trigger a rule -- neither in decide nor in the reference.
    ml = {"model": "m1", "class": "benign", "scores": {"mining": 0.99, "benign": 0.01}, "evidence": "insufficient"}
    e = engine(CLASSIFY)
    assert e.decide(make_flow(ml=ml), T).rule == "default"
    assert e.decide_reference(make_flow(ml=ml), T).rule == "default"
    assert e.decide(make_flow(ml={**ml, "evidence": "enough"}), T).rule == "ml-mining"


def test_before_detectors_and_classifier_a_verdict_comes_from_addresses_ports_domains():
    e = PolicyEngine.load([str(REPO / "rules" / "default.yaml")])
    metadata = make_flow(dst="169.254.169.254", dport=80, pkts=1)
    assert e.decide(metadata, T).action is Action.REJECT
    assert e.decide(make_flow(dst="192.0.2.10", dport=443, pkts=1), T).action is Action.ALLOW


# -- the shipped default policy -------------------------------------------------------------------

@pytest.fixture(scope="module")
def default_engine():
    return PolicyEngine.load([str(REPO / "rules" / "default.yaml")])


@pytest.mark.parametrize("flow_kw,action,rule", [
    (dict(detections=[("mining", "stratum.v1.subscribe")], dport=3333), Action.DROP, "block-mining"),
    (dict(detections=[("reverse_tunnel", "ssh.reverse")], dport=22), Action.DROP, "block-reverse-tunnels-and-shells"),
    (dict(detections=[("reverse_shell", "shell.prompt")]), Action.DROP, "block-reverse-tunnels-and-shells"),
    (dict(detections=[("tunnel", "chisel")]), Action.DROP, "block-reverse-tunnels-and-shells"),
    (dict(detections=[("scan", "tcp.syn_sweep")]), Action.DROP, "block-scans"),
    (dict(detections=[("metadata", "http.metadata")]), Action.REJECT, "block-metadata-access"),
    (dict(dst="fd00:ec2::254", src="fd00::5", dport=80), Action.REJECT, "block-cloud-metadata"),
    (dict(app_proto="ssh", dport=22), Action.REJECT, "deny-outbound-ssh"),
    (dict(detections=[("ssh", "ssh.banner")], dport=2222), Action.REJECT, "deny-outbound-ssh-detected"),
    (dict(dst="10.0.0.2", dport=53, proto="udp", app_proto="dns"), Action.ALLOW, "allow-dns-to-resolver"),
    (dict(facts={"tls.sni": "files.pythonhosted.org"}), Action.ALLOW, "allow-package-registries"),
    (dict(facts={"tls.sni": "codeload.github.com"}), Action.ALLOW, "allow-git-hosts"),
    (dict(ml={"model": "m", "class": "mining", "scores": {"mining": 0.95}}, pkts=20, payload=5000),
     Action.DROP, "block-classified-mining"),
    (dict(ml={"model": "m", "class": "mining", "scores": {"mining": 0.95}}, facts={"tls.sni": "pypi.org"}),
     Action.ALLOW, "allow-package-registries"),
    (dict(facts={"tls.sni": "www.example.com"}), Action.ALLOW, "default"),
])
def test_default_policy(default_engine, flow_kw, action, rule):
    v = default_engine.decide(make_flow(**flow_kw), T)
    assert (v.action, v.rule) == (action, rule), v


# -- sandboxes pick the policy -----------------------------------------------------------------------

def test_per_sandbox_policies_by_cidr_interface_and_default():
    e = PolicyEngine.load([str(REPO / "rules" / "examples" / "per-sandbox.yaml")])
    train = make_flow("10.88.1.2", "198.51.100.1", dport=22, inspecting=False)
    research = make_flow("10.89.1.2", "198.51.100.1", dport=22, inspecting=False)
    by_iface = make_flow("172.31.0.9", "198.51.100.1", dport=22, facts={"iface": "veth-research"}, inspecting=False)
    stranger = make_flow("172.31.0.9", "198.51.100.1", dport=22, inspecting=False)
    assert e.attribute(train) == {"id": "rl-training", "episode": None}
    assert e.decide(train, T).rule == "default" and e.decide(train, T).action is Action.REJECT
    assert e.decide(research, T).action is Action.ALLOW
    assert e.attribute(by_iface)["id"] == "research" and e.decide(by_iface, T).action is Action.ALLOW
    assert e.attribute(stranger) is None
    v = e.decide(stranger, T)
    assert v.action is Action.DROP and "policy quarantine" in v.reasons


# -- reload ------------------------------------------------------------------------------------------

def test_reload_keeps_learned_dns_and_fails_cleanly_on_bad_input(tmp_path):
    rules = tmp_path / "r.yaml"
    rules.write_text(DOMAINS)
    e1 = PolicyEngine.load([str(rules)])
    e1.observe(dns_flow([answer("pypi.org", "151.101.0.223")]), T - 1)
    rules.write_text(DOMAINS.replace("default: reject", "default: drop"))
    e2 = e1.reload()
    assert e2.digest != e1.digest
    v = e2.decide(make_flow(dst="151.101.0.223", inspecting=False), T)
    assert v.action is Action.ALLOW and v.rule == "registries"
    assert e2.decide(make_flow(dst="198.51.100.1", inspecting=False), T).action is Action.DROP
    rules.write_text(DOMAINS.replace("action: allow", "action: permit"))
    with pytest.raises(PolicyError) as info:
        e2.reload()
    assert "r.yaml:10: unknown action 'permit'" in str(info.value)
    assert e2.decide(make_flow(dst="198.51.100.1", inspecting=False), T).action is Action.DROP


# -- robustness ----------------------------------------------------------------------------------------

junk = st.one_of(st.none(), st.integers(), st.text(max_size=30), st.lists(st.integers(), max_size=3),
                 st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))


_FUZZ_ENGINE = engine(DOMAINS)


@settings(max_examples=200, deadline=None)
@given(sni=junk, host=junk, answers=st.one_of(junk, st.lists(st.dictionaries(
    st.sampled_from(["name", "type", "data", "ttl"]), junk, max_size=4), max_size=4)), ml=junk)
def test_decide_and_observe_never_raise_on_odd_facts(sni, host, answers, ml):
    flow = make_flow(facts={"tls.sni": sni, "http.host": host, "dns.answers": answers},
                     ml=ml if isinstance(ml, dict) else None)
    _FUZZ_ENGINE.observe(flow, T)
    assert _FUZZ_ENGINE.decide(flow, T).action in (Action.ALLOW, Action.DROP, Action.REJECT)


def test_dns_records_are_not_valid_before_they_were_learned():
    """A replay whose next file is older must not see answers from the future."""
    e = engine(DOMAINS)
    e.observe(dns_flow([answer("pypi.org", "151.101.0.223", ttl=3600)], ts=T), T)
    assert e.decide(make_flow(dst="151.101.0.223", ts=T + 10, inspecting=False), T + 10).action is Action.ALLOW
    assert e.decide(make_flow(dst="151.101.0.223", ts=T - 86400, inspecting=False), T - 86400).action is Action.REJECT


def test_load_policy_engine_with_previous_carries_state_across_a_daemon_reload(tmp_path):
    from egress.policy import load_policy_engine
    from egress.policy.attribution import make_entry
    rules = tmp_path / "r.yaml"
    rules.write_text(DOMAINS)
    old = load_policy_engine([str(rules)])
    old.observe(dns_flow([answer("pypi.org", "151.101.0.223")]), T - 1)
    old.attribution.register(make_entry("10.1.1.1", "api-sbx"))
    rules.write_text(DOMAINS.replace("default: reject", "default: drop"))
    new = load_policy_engine([str(rules)], None, previous=old)
    assert new.decide(make_flow(dst="151.101.0.223", inspecting=False), T).rule == "registries"
    assert new.attribute(make_flow("10.1.1.1")) == {"id": "api-sbx", "episode": None}
    assert new.decide(make_flow(dst="198.51.100.1", inspecting=False), T).action is Action.DROP
    rules.write_text("version: 1\n")
    with pytest.raises(ValueError):
        load_policy_engine([str(rules)], None, previous=new)
