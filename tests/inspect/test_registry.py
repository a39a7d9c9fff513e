"""The detector list and the SIGHUP reload of the domain lists it uses."""
from egress.inspect import pool_domain, tunnel
from egress.inspect.registry import default_detectors, reload_domain_lists


def lists_in(detectors):
    pools = [d.pools for d in detectors if isinstance(d, pool_domain.PoolDomainDetector)]
    tunnels = [d.domains for d in detectors if isinstance(d, tunnel.TunnelDetector)]
    return pools + tunnels


def test_every_detector_has_the_contract_attributes():
    for d in default_detectors():
        assert d.name and d.protocols and d.max_bytes > 0 and callable(d.inspect)


def test_reload_swaps_fresh_pool_and_tunnel_lists_into_the_running_detectors():
    detectors = default_detectors()
    before = lists_in(detectors)
    assert len(before) == 2
    assert reload_domain_lists(detectors) == []
    after = lists_in(detectors)
    assert all(a is not b for a, b in zip(after, before))
    assert after[0].match("xmr.pool.minergate.com") or after[0].match("pool.supportxmr.com")
