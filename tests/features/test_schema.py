"""The feature schema is stable, ordered, versioned and free of port-only features."""
import re

from egress import features
from egress.features import schema


def test_names_are_unique_and_ordered_as_the_vector():
    assert len(set(schema.FEATURE_NAMES)) == len(schema.FEATURE_NAMES) == schema.N_FEATURES
    acc = features.Accumulator(6)
    acc.add(0.0, 0, 10, 0x18, 100)
    assert len(acc.values()) == schema.N_FEATURES


def test_schema_order_is_pinned():
    # Changing the names or order without bumping SCHEMA_VERSION would silently break
    # every trained model: this pins both together.
    import hashlib
    digest = hashlib.sha256("\n".join(schema.FEATURE_NAMES).encode()).hexdigest()[:16]
    assert (schema.SCHEMA_VERSION, digest) == (4, PINNED_DIGEST), \
        "feature names changed: bump SCHEMA_VERSION and update the pin (digest %s)" % digest


def test_no_port_feature():
    assert not [n for n in schema.FEATURE_NAMES if re.search(r"port", n)]


def test_ports_do_not_change_the_vector():
    """Same packets, different ports: identical features (ports never reach the accumulator)."""
    from egress.flow.flow import Flow
    vecs = []
    for sport, dport in ((40000, 443), (51515, 3333), (22, 80)):
        f = Flow(1, (), 6, 4, b"\x0a\x00\x00\x01", sport, b"\x0a\x00\x00\x02", dport, 0.0, "syn")
        f.features = features.Accumulator(6)
        for i in range(5):
            f.features.add(i * 0.5, i % 2, 100 + i, 0x18, 500)
        vecs.append(features.vector(f))
    assert vecs[0] == vecs[1] == vecs[2]


PINNED_DIGEST = "e8d19040feee7c99"
