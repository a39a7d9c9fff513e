"""Policy: YAML rules -> validated, compiled, immutable PolicySet; the runtime PolicyEngine.

    from egress.policy import PolicyEngine, PolicyError
    policy = PolicyEngine.load(["rules/default.yaml"], sandbox_map=None)
    policy.attribute(flow); policy.observe(flow, now); policy.decide(flow, now) -> Verdict
    policy = policy.reload()      # PolicyError on invalid input: keep the old one

Schema and precedence: rules/README.md.
"""
from egress.policy.attribution import Attribution, Entry, load_sandbox_map, parse_sandbox_map
from egress.policy.engine import PolicyEngine
from egress.policy.schema import PolicySet, load_policy, parse_policy
from egress.policy.source import PolicyError

__all__ = ["Attribution", "Entry", "PolicyEngine", "PolicyError", "PolicySet", "load_policy", "load_policy_engine",
           "load_sandbox_map", "parse_policy", "parse_sandbox_map"]


def load_policy_engine(rules, sandbox_map=None, previous: PolicyEngine | None = None) -> PolicyEngine:
    """What `egress replay/run --rules FILE... --sandbox-map FILE` use; PolicyError (a ValueError)
    on invalid input. No rules files: allow everything, still attributing flows to sandboxes.

    `previous` (the PolicyEngine in use, on reload): the new one takes over its learned DNS
    records, per-flow memos, API registrations and violation log; `previous` itself is not
    changed unless the new rules and map are valid."""
    rules = [rules] if isinstance(rules, str) else list(rules or ())
    if previous is not None:
        if not rules:
            fresh = PolicyEngine.allow_all(sandbox_map)
            return PolicyEngine(fresh.policy, (), sandbox_map, previous._carry_attribution(fresh), previous.dns,
                                previous._memo, previous._dns_done, previous.counters)
        return previous.reload(rules, sandbox_map)
    if not rules:
        return PolicyEngine.allow_all(sandbox_map)
    return PolicyEngine.load(rules, sandbox_map=sandbox_map)
