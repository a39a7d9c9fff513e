"""Pool domain list (rules/pools.txt) and the detector reading TLS SNI / DNS / HTTP Host facts."""
from __future__ import annotations

import pytest

from egress.inspect.base import Status
from egress.inspect.pool_domain import PoolDomainDetector
from egress.inspect.pools import DEFAULT_PATH, PoolDomains, PoolListError
from tests.inspect.mining_helpers import view


@pytest.fixture(scope="module")
def pools():
    return PoolDomains.load(DEFAULT_PATH)


def test_shipped_list_loads_and_names_the_big_pools(pools):
    assert len(pools) >= 40
    for name in ("nanopool.org", "supportxmr.com", "2miners.com", "f2pool.com", "ethermine.org",
                 "moneroocean.stream", "nicehash.com", "coinhive.com", "unmineable.com", "c3pool.com"):
        assert pools.match(name) == name


@pytest.mark.parametrize("name,entry", [
    ("xmr-eu1.nanopool.org", "nanopool.org"),
    ("POOL.SUPPORTXMR.COM.", "supportxmr.com"),
    ("eu1.ethermine.org:4444", "ethermine.org"),
    ("stratum+ssl.example", None),
    ("notnanopool.org", None),                 # label boundary
    ("nanopool.org.evil.example", None),
    ("org", None),
    ("", None),
])
def test_suffix_match_on_label_boundaries(pools, name, entry):
    assert pools.match(name) == entry


def test_match_never_raises_on_odd_input(pools):
    for odd in (None, 42, b"\xff\xfe", "[::1]:443", "a" * 1000, ".", "..", b"eu1.nanopool.org"):
        pools.match(odd)
    assert pools.match(b"eu1.nanopool.org") == "nanopool.org"


def test_bad_files_give_one_line_errors(tmp_path):
    bad = tmp_path / "pools.txt"
    bad.write_text("# ok\nnanopool.org\nthis is not a domain\n")
    with pytest.raises(PoolListError) as err:
        PoolDomains.load(bad)
    assert str(err.value).endswith(":3: not a domain name: 'this is not a domain'") and "\n" not in str(err.value)
    with pytest.raises(PoolListError):
        PoolDomains.load(tmp_path / "missing.txt")
    bad.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PoolListError):
        PoolDomains.load(bad)


def test_reload_returns_a_new_immutable_object(tmp_path):
    path = tmp_path / "pools.txt"
    path.write_text("example-pool.test  # trailing comment\n")
    first = PoolDomains.load(path)
    path.write_text("other-pool.test\n")
    second = PoolDomains.load(path)
    assert first.match("a.example-pool.test") and not second.match("a.example-pool.test")
    with pytest.raises(AttributeError):
        first.source = "x"
    det = PoolDomainDetector(first)
    facts = {"tls.sni": "a.other-pool.test"}
    assert det.inspect(view(b"\x16\x03\x01", facts=facts, app_proto="tls")).status is Status.NO_MATCH
    det.swap(second)
    assert det.inspect(view(b"\x16\x03\x01", facts=facts, app_proto="tls")).status is Status.MATCH


@pytest.mark.parametrize("key,value", [
    ("tls.sni", "xmr-eu1.nanopool.org"),
    ("dns.query", "gulf.moneroocean.stream."),
    ("http.host", "coinhive.com"),
    ("http.connect_target", "pool.supportxmr.com:443"),
    ("dns.queries", ["example.com", "eth.2miners.com"]),
])
def test_detector_matches_pool_names_in_facts(pools, key, value):
    result = PoolDomainDetector(pools).inspect(view(b"x", facts={key: value}))
    assert result.status is Status.MATCH
    det = result.detections[0]
    assert det.category == "mining" and det.signature == "mining.pool_domain"
    assert det.evidence["source"] == key and det.confidence < 1


def test_detector_no_match_and_waiting(pools):
    det = PoolDomainDetector(pools)
    assert det.inspect(view(b"x", facts={"tls.sni": "pypi.org"})).status is Status.NO_MATCH
    assert det.inspect(view(b"\x16\x03\x01\x02", facts={})).status is Status.NEED_MORE
    assert det.inspect(view(b"SSH-2.0-x", facts={}, app_proto="ssh")).status is Status.NO_MATCH
    assert det.inspect(view(b"x" * 5000, facts={})).status is Status.NO_MATCH
    assert det.inspect(view(b"x", facts={}, closed=True)).status is Status.NO_MATCH


def test_reload_helper_swaps_every_pool_detector_or_keeps_the_old_list(tmp_path):
    from egress.inspect.pool_domain import reload_pool_lists
    from egress.inspect.stratum import StratumDetector
    path = tmp_path / "pools.txt"
    path.write_text("first-pool.test\n")
    dets = [StratumDetector(), PoolDomainDetector(PoolDomains.load(path)), PoolDomainDetector(PoolDomains.load(path))]
    path.write_text("second-pool.test\n")
    assert reload_pool_lists(dets, path) is None
    assert all(d.pools.match("x.second-pool.test") for d in dets[1:])
    path.write_text("not a domain\n")
    error = reload_pool_lists(dets, path)
    assert error is not None and ":1:" in error
    assert all(d.pools.match("x.second-pool.test") for d in dets[1:])      # the old list stays


def test_shipped_lists_are_found_in_the_source_tree_first_then_in_the_installed_place(tmp_path):
    from egress.inspect.pools import SOURCE_RULES, rules_file
    assert rules_file("pools.txt") == SOURCE_RULES / "pools.txt"
    installed = tmp_path / "etc-egress-rules"
    installed.mkdir()
    (installed / "tunnels.txt").write_text("ngrok.io\n")
    missing_source = tmp_path / "no-source-tree"
    assert rules_file("tunnels.txt", (missing_source, installed)) == installed / "tunnels.txt"
    assert rules_file("nothing.txt", (missing_source, installed)) == missing_source / "nothing.txt"
