"""PoolDomains.match remembers its answers per str name: the same answers as computing them."""
from egress.inspect import pools as pools_mod
from egress.inspect.pools import PoolDomains


def test_remembered_answers_equal_fresh_ones():
    p = PoolDomains(["nanopool.org", "pool.example", "x.test"])
    names = ["eu1.nanopool.org", "NANOPOOL.ORG.", "notnanopool.org", "a.pool.example:3333", "", " x.test ",
             "[::1]:80", "b.x.test", "test", "pool.example.", "ex.com"]
    for name in names * 3:
        assert p.match(name) == p._match(name)
    assert p.match(b"eu1.nanopool.org") == "nanopool.org" and p.match(None) is None and p.match(["a"]) is None


def test_memo_is_bounded_and_per_object():
    p = PoolDomains(["pool.example"])
    for i in range(pools_mod._MEMO_MAX + 50):
        p.match("h%d.pool.example" % i)
    assert len(p._memo) <= pools_mod._MEMO_MAX
    other = PoolDomains(["other.example"])
    assert p.match("a.pool.example") == "pool.example" and other.match("a.pool.example") is None
