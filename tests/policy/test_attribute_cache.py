"""PolicyEngine.attribute (remembered per addresses and iface) equals attribute_reference,
also after the attribution map changes (file reload, API registration)."""
import ipaddress
import itertools
from types import SimpleNamespace

from egress.policy.attribution import Entry
from egress.policy.engine import PolicyEngine

TEXT = """version: 1
sandboxes:
  yaml-net: {cidrs: [10.9.0.0/16], policy: p}
  yaml-if: {interfaces: [veth-a], policy: p}
policies:
  p: {mode: enforce, rules: [], default: allow}
"""


def _flow(client, server, facts=None):
    return SimpleNamespace(client_ip=ipaddress.ip_address(client).packed,
                           server_ip=ipaddress.ip_address(server).packed, facts=facts or {})


def _all_agree(engine):
    addresses = ["10.9.1.1", "10.1.2.3", "10.2.0.1", "192.0.2.7", "203.0.113.5"]
    for client, server in itertools.product(addresses, repeat=2):
        for iface, facts in ((None, None), ("veth-a", None), ("eth9", None), (None, {"iface": "veth-a"})):
            flow = _flow(client, server, facts)
            for _ in range(2):                       # the second call comes from the cache
                got = engine.attribute(flow, iface=iface)
                assert got == engine.attribute_reference(flow, iface=iface), (client, server, iface, facts)
                if got is not None:
                    assert got is not engine.attribute(flow, iface=iface)    # a fresh dict each time


def test_cached_attribution_follows_the_map():
    engine = PolicyEngine.from_text(TEXT, sandbox_entries=[Entry("10.1.0.0/16", "file-sbx", "ep1")])
    _all_agree(engine)
    engine.attribution.register(Entry("10.2.0.0/16", "api-sbx", "ep2", source="api"))
    _all_agree(engine)
    engine.attribution.replace_file_entries([Entry("192.0.2.0/24", "moved", None)])
    _all_agree(engine)
    assert engine.attribution.unregister("10.2.0.0/16")
    _all_agree(engine)


def test_unhashable_iface_behaves_as_before():
    engine = PolicyEngine.from_text(TEXT)
    flow = _flow("10.1.1.1", "10.2.2.2", {"iface": ["not", "hashable"]})
    try:
        want = engine.attribute_reference(flow)
    except TypeError:
        want = TypeError
    try:
        got = engine.attribute(flow)
    except TypeError:
        got = TypeError
    assert got == want
