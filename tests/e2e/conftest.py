"""Fixtures for the end-to-end tests: root, a module-wide sbx/gw/ext topology, a workdir.

Every test here is marked `netns` and skipped, with the reason, when not root or when a
needed tool is missing. The topology (10.207.0.0/16, fd07:207::/48, namespaces "egl2-...")
and everything started in it are removed at the end of the module, also on failure.
"""
from __future__ import annotations

import contextlib
import os
import shutil

import pytest

from egress.drivers.netns import Topology
from tests.e2e.lab import Lab


def pytest_collection_modifyitems(items):
    for item in items:
        if "/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.netns)


def require_live() -> None:
    if os.geteuid() != 0:
        pytest.skip("end-to-end tests need root (network namespaces, iptables, NFQUEUE)")
    for tool in ("ip", "iptables", "ip6tables", "iptables-save", "iptables-restore"):
        if shutil.which(tool) is None:
            pytest.skip("end-to-end tests need %s on PATH" % tool)
    try:
        import netfilterqueue  # noqa: F401
    except ImportError:
        pytest.skip("end-to-end tests need the NetfilterQueue Python package")


@contextlib.contextmanager
def live_lab(tmp_path_factory, name: str, subnet4: str, subnet6: str, prefix: str):
    """A Lab on its own topology (skipped when not live), removed on leaving, also on failure."""
    require_live()
    workdir = tmp_path_factory.mktemp(name)
    os.chmod(workdir, 0o755)
    with Topology(subnet4=subnet4, subnet6=subnet6, prefix=prefix) as topo:
        yield Lab(topo, workdir)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with live_lab(tmp_path_factory, "e2e", "10.207.0.0/16", "fd07:207::/48", "egl2-") as lab:
        yield lab
