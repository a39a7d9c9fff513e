"""Rules files: every valid file loads; every kind of invalid input gives the right file:line."""
from __future__ import annotations

import glob
import textwrap
from pathlib import Path

import pytest

from egress.policy import PolicyError, load_policy, parse_policy
from egress.types import Mode

REPO = Path(__file__).resolve().parents[2]
RULE_FILES = sorted([str(REPO / "rules" / "default.yaml")] + [
    p for p in glob.glob(str(REPO / "rules" / "examples" / "*.yaml")) if not p.endswith("sandbox-map.yaml")])

GOOD = textwrap.dedent("""\
    version: 1
    policies:
      p:
        mode: enforce
        rules:
          - name: r1
            action: drop
            dest: [10.0.0.0/8, "2001:db8::/32"]
            ports: [443, "8000-9000"]
            proto: tcp
          - name: r2
            action: alert
            domains: ["*.pypi.org", github.com]
            categories: [mining]
            classifier: {class: mining, min_score: 0.9}
            ip_version: 6
            app_proto: [ssh]
        default: drop
    """)


def errors_of(*docs: str) -> list[tuple[str, int | None, str]]:
    with pytest.raises(PolicyError) as info:
        parse_policy([("f%d.yaml" % i, d) for i, d in enumerate(docs)])
    return info.value.errors


def one_error(doc: str) -> tuple[int | None, str]:
    errs = errors_of(doc)
    assert len(errs) == 1, errs
    return errs[0][1], errs[0][2]


# -- valid files ----------------------------------------------------------------------

@pytest.mark.parametrize("path", RULE_FILES, ids=lambda p: Path(p).name)
def test_shipped_rule_files_are_valid(path):
    policy = load_policy([path])
    assert policy.policies and len(policy.digest) == 64


def test_rules_directory_has_default_and_examples():
    names = {Path(p).name for p in RULE_FILES}
    assert {"default.yaml", "strict-allowlist.yaml", "audit.yaml", "per-sandbox.yaml"} <= names


def test_good_document_compiles_to_the_written_rules():
    ps = parse_policy([("good.yaml", GOOD)])
    p = ps.policies["p"]
    assert p.mode is Mode.ENFORCE and p.default == "drop"
    assert [r.name for r in p.rules] == ["r1", "r2"]
    r1, r2 = p.rules
    assert r1.ports.match(8500) == "8000-9000" and r1.ports.match(443) == "443" and r1.ports.match(444) is None
    assert r1.dest.lookup(bytes([10, 1, 2, 3])) == "10.0.0.0/8"
    assert r1.line == 6 and r2.line == 11
    assert r2.domains.match("files.pypi.org") == "*.pypi.org" and r2.domains.match("pypi.org") is None
    assert r2.classifier[0].min_score == 0.9
    assert r1.static and not r2.static


def test_digest_ignores_comments_and_formatting_but_not_meaning():
    a = parse_policy([("a.yaml", GOOD)])
    reformatted = "# a comment\n" + GOOD.replace("dest: [10.0.0.0/8, \"2001:db8::/32\"]",
                                                 "dest:\n          - 10.0.0.0/8\n          - \"2001:db8::/32\"")
    b = parse_policy([("elsewhere.yaml", reformatted)])
    assert a.digest == b.digest
    c = parse_policy([("a.yaml", GOOD.replace("min_score: 0.9", "min_score: 0.8"))])
    assert c.digest != a.digest


def test_several_files_merge_and_add_policies_and_sandboxes():
    ps = load_policy([str(REPO / "rules" / "default.yaml"), str(REPO / "rules" / "examples" / "per-sandbox.yaml")])
    assert set(ps.policies) == {"agent-sandbox", "training", "research", "quarantine"}
    assert ps.default_policy == "quarantine"
    assert {s.name for s in ps.sandboxes} == {"rl-training", "research"}


def test_single_policy_is_the_default_policy_and_empty_rules_are_allowed():
    ps = parse_policy([("x.yaml", "version: 1\npolicies:\n  only:\n    mode: audit\n    rules: []\n    default: alert\n")])
    assert ps.default_policy == "only" and ps.policies["only"].rules == ()


# -- invalid input: (document, line, fragment of the reason) -----------------------------

def doc(rule_lines: str = "", policy_extra: str = "", top: str = "", default: str = "    default: drop\n") -> str:
    """Line numbers: 1 version, 2 policies, 3 p:, 4 mode, then policy_extra, rules:, rule lines..."""
    return ("version: 1\n" + top + "policies:\n  p:\n    mode: enforce\n" + policy_extra + "    rules:\n"
            + (rule_lines or "      []\n") + default)


RULE = "      - name: r\n        action: drop\n"    # rule starts at line 6 (no extras)

INVALID = [
    ("yaml-syntax", "version: 1\npolicies:\n\tp: {}\ndefault: x\n", 3, "invalid YAML"),
    ("yaml-unclosed", "version: 1\npolicies:\n  p: {mode: enforce\n  q: 1\n", 4, "invalid YAML"),
    ("yaml-duplicate-key", "version: 1\nversion: 1\npolicies: {}\n", 2, "duplicate key 'version'"),
    ("not-a-mapping", "- 1\n- 2\n", 1, "must be a mapping"),
    ("missing-version", "policies:\n  p:\n    mode: enforce\n    default: allow\n", 1, "missing 'version: 1'"),
    ("wrong-version", doc(RULE).replace("version: 1", "version: 2"), 1, "unsupported version 2"),
    ("unknown-top-key", doc(RULE, top="polices: {}\n"), 2, "unknown key 'polices' in the top level (did you mean 'policies'?)"),
    ("unknown-policy-key", doc(RULE, policy_extra="    defualt: drop\n"), 5, "did you mean 'default'?"),
    ("unknown-rule-key", doc(RULE + "        domain: [a.com]\n"), 8, "unknown key 'domain' in rule 'r' (did you mean 'domains'?)"),
    ("missing-default", doc(RULE, default=""), 3, "missing 'default:' action"),
    ("missing-mode", doc(RULE).replace("    mode: enforce\n", ""), 3, "missing 'mode: enforce'"),
    ("unknown-mode", doc(RULE).replace("mode: enforce", "mode: enfroce"), 4, "unknown mode 'enfroce'"),
    ("unknown-default", doc(RULE, default="    default: deny\n"), 8, "unknown default action 'deny' (expected one of: allow, drop, reject, alert) (did you mean 'drop'?)"),
    ("unknown-action", doc("      - name: r\n        action: block\n"), 7, "unknown action 'block'"),
    ("missing-action", doc("      - name: r\n        ports: [1]\n"), 6, "missing 'action:'"),
    ("missing-name", doc("      - action: drop\n"), 6, "missing 'name:'"),
    ("rule-not-mapping", doc("      - drop everything\n"), 6, "rule #1 must be a mapping"),
    ("rules-not-list", doc("", default="    default: drop\n").replace("    rules:\n      []\n", "    rules: {a: 1}\n"), 5, "rules must be a list"),
    ("duplicate-rule-name", doc(RULE + RULE), 8, "duplicate rule name 'r' in policy 'p' (first at line 6)"),
    ("bad-cidr", doc(RULE + "        dest: [10.0.0.300/8]\n"), 8, "not a valid address or CIDR"),
    ("cidr-host-bits", doc(RULE + "        dest: [10.0.0.1/8]\n"), 8, "host bits set (did you mean '10.0.0.0/8'?)"),
    ("cidr-not-string", doc(RULE + "        src: [42]\n"), 8, "expected an address or CIDR string"),
    ("bad-cidr-v6-line", doc(RULE + "        dest:\n          - 10.0.0.0/8\n          - \"2001:db8::g/64\"\n"), 10, "not a valid address"),
    ("port-zero", doc(RULE + "        ports: [0]\n"), 8, "port 0 out of range"),
    ("port-too-big", doc(RULE + "        ports: [70000]\n"), 8, "port 70000 out of range"),
    ("port-range-reversed", doc(RULE + "        ports: [\"9000-8000\"]\n"), 8, "reversed"),
    ("port-range-garbage", doc(RULE + "        ports: [\"https\"]\n"), 8, "not a number or a 'lo-hi' range"),
    ("ports-wrong-type", doc(RULE + "        ports: {a: 1}\n"), 8, "ports must be a list"),
    ("unknown-proto", doc(RULE + "        proto: sctp\n"), 8, "unknown proto 'sctp'"),
    ("bad-ip-version", doc(RULE + "        ip_version: 5\n"), 8, "ip_version must be 4 or 6"),
    ("unknown-category", doc(RULE + "        categories: [mining, cryptojacking]\n"), 8, "unknown category 'cryptojacking'"),
    ("unknown-class", doc(RULE + "        classifier: {class: minning, min_score: 0.5}\n"), 8, "did you mean 'mining'?"),
    ("threshold-above-1", doc(RULE + "        classifier: {class: mining, min_score: 1.5}\n"), 8, "min_score 1.5 outside [0, 1]"),
    ("threshold-negative", doc(RULE + "        classifier:\n          class: mining\n          min_score: -0.1\n"), 10, "outside [0, 1]"),
    ("threshold-not-number", doc(RULE + "        classifier: {class: mining, min_score: high}\n"), 8, "min_score must be a number"),
    ("classifier-unknown-key", doc(RULE + "        classifier: {class: mining, threshold: 0.5}\n"), 8, "unknown key 'threshold' in classifier (did you mean 'min_score'?)"),
    ("bad-domain-wildcard", doc(RULE + "        domains: [\"foo.*.com\"]\n"), 8, "wildcard"),
    ("domain-is-address", doc(RULE + "        domains: [\"10.1.1.1\"]\n"), 8, "use dest:"),
    ("bad-app-proto", doc(RULE + "        app_proto: [\"SSH Protocol\"]\n"), 8, "app_proto"),
    ("require-dns-not-bool", doc(RULE, policy_extra="    require_dns_for_domains: yes please\n"), 5, "must be true or false"),
    ("sandbox-unknown-policy", doc(RULE, top="sandboxes:\n  s:\n    cidrs: [10.0.0.0/8]\n    policy: strict\n"), 3, "unknown policy 'strict'"),
    ("sandbox-without-match", doc(RULE, top="sandboxes:\n  s:\n    policy: p\n"), 4, "needs 'cidrs:' and/or 'interfaces:'"),
    ("sandbox-bad-iface", doc(RULE, top="sandboxes:\n  s:\n    interfaces: [\"this-name-is-far-too-long\"]\n"), 4, "not a valid Linux interface name"),
    ("dns-bad-ttl", doc(RULE, top="dns:\n  min_ttl: -5\n"), 3, "dns.min_ttl -5 out of range"),
    ("dns-unknown-key", doc(RULE, top="dns:\n  ttl_min: 5\n"), 3, "did you mean 'min_ttl'?"),
    ("empty-list", doc(RULE + "        dest: []\n"), 8, "dest must not be empty"),
    ("boolean-port", doc(RULE + "        ports: [true]\n"), 8, "port must be a number"),
]


@pytest.mark.parametrize("text,line,fragment", [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_input_reports_file_and_line(text, line, fragment):
    errs = errors_of(text)
    assert any(e[0] == "f0.yaml" and e[1] == line and fragment in e[2] for e in errs), errs


def test_every_problem_is_reported_at_once_in_line_order():
    text = doc("      - name: a\n        action: deny\n        ports: [0]\n      - name: a\n        action: drop\n"
               "        classifier: {class: mining, min_score: 2}\n", default="")
    errs = errors_of(text)
    lines = [e[1] for e in errs]
    assert lines == sorted(lines)
    assert {3, 7, 8, 9, 11} <= set(lines), errs


def test_multiple_policies_need_a_default_policy():
    text = "version: 1\npolicies:\n  a: {mode: enforce, rules: [], default: allow}\n  b: {mode: enforce, rules: [], default: drop}\n"
    errs = errors_of(text)
    assert errs[0][1] == 3 and "default_policy: required" in errs[0][2]


def test_merge_rejects_a_policy_defined_twice_naming_both_places():
    a = "version: 1\npolicies:\n  p: {mode: enforce, rules: [], default: allow}\n"
    b = "version: 1\n# another file\npolicies:\n  p: {mode: audit, rules: [], default: drop}\n"
    errs = errors_of(a, b)
    assert errs == [("f1.yaml", 4, "policy 'p' already defined at f0.yaml:3")]


def test_merge_rejects_dns_settings_in_two_files():
    a = "version: 1\ndns: {min_ttl: 5}\npolicies:\n  p: {mode: enforce, rules: [], default: allow}\n"
    b = "version: 1\ndns: {min_ttl: 6}\nsandboxes:\n  s: {cidrs: [10.0.0.0/8], policy: p}\n"
    errs = errors_of(a, b)
    assert len(errs) == 1 and errs[0][:2] == ("f1.yaml", 2) and "dns: already set at f0.yaml:2" in errs[0][2]


def test_later_file_may_reference_a_policy_of_an_earlier_one():
    a = "version: 1\npolicies:\n  p: {mode: enforce, rules: [], default: allow}\n"
    b = "version: 1\nsandboxes:\n  s: {cidrs: [10.0.0.0/8], policy: p}\n"
    ps = parse_policy([("a.yaml", a), ("b.yaml", b)])
    assert ps.sandboxes[0].policy == "p"


def test_missing_file_is_a_policy_error(tmp_path):
    with pytest.raises(PolicyError) as info:
        load_policy([str(tmp_path / "nope.yaml")])
    assert "nope.yaml: cannot read" in str(info.value)


def test_python_tags_are_refused():
    errs = errors_of("version: 1\npolicies: !!python/object:os.system {}\n")
    assert errs[0][1] == 2 and "invalid YAML" in errs[0][2]


def test_policy_error_is_a_value_error_with_file_line_lines():
    with pytest.raises(ValueError) as info:
        parse_policy([("x.yaml", doc(RULE + "        ports: [0]\n"))])
    assert str(info.value).splitlines() == ["x.yaml:8: port 0 out of range [1, 65535]"]


# -- fuzz: any input gives a PolicySet or a PolicyError, never another exception -------------

from hypothesis import given, settings, strategies as st  # noqa: E402
import yaml  # noqa: E402

scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 70000), st.floats(allow_nan=False, width=32),
                    st.sampled_from(["tcp", "drop", "allow", "10.0.0.0/8", "::1", "1-2", "*.a.com", "mining", ""]),
                    st.text(max_size=8))
keys = st.sampled_from(["version", "policies", "sandboxes", "dns", "default_policy", "p", "mode", "rules",
                        "default", "name", "action", "dest", "ports", "proto", "domains", "categories",
                        "classifier", "class", "min_score", "cidrs", "policy", "x"])
docs = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                     st.dictionaries(keys, inner, max_size=5)), max_leaves=30)


@settings(max_examples=200, deadline=None)
@given(docs)
def test_fuzz_structured_documents(data):
    try:
        parse_policy([("fuzz.yaml", yaml.safe_dump(data))])
    except PolicyError as exc:
        assert all(e[0] == "fuzz.yaml" for e in exc.errors) and str(exc)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_fuzz_arbitrary_text(text):
    try:
        parse_policy([("fuzz.yaml", text)])
    except PolicyError as exc:
        assert str(exc)


def test_a_scalar_pyyaml_itself_cannot_construct_is_a_located_error():
    """'0x_' matches YAML 1.1's int pattern, then int('', 16) fails inside PyYAML (found by fuzzing)."""
    line, reason = one_error("version: 1\npolicies:\n  p:\n    x: 0x_\n")
    assert line is not None and "invalid YAML value" in reason
