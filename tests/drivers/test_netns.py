"""Topology: three namespaces with working v4/v6 forwarding through gw, and nothing left
behind after close(), also when the body raises."""
from __future__ import annotations

import os
import shutil

import pytest

from egress.drivers.netns import Addresses, Topology, netns_exists


def test_addresses_derive_from_the_given_subnets():
    import ipaddress
    a = Addresses(ipaddress.IPv4Network("10.205.0.0/16"), ipaddress.IPv6Network("fd05:205::/48"))
    assert (a.sbx4, a.gw_sbx4, a.gw_ext4, a.ext4) == ("10.205.1.2", "10.205.1.1", "10.205.2.1", "10.205.2.2")
    assert a.ext6 == "fd05:205:0:2::2" and a.sbx_net4 == "10.205.1.0/24" and a.ext_extra4(1) == "10.205.2.11"


@pytest.mark.netns
def test_topology_forwards_and_cleans_up_even_on_error(tmp_path):
    if os.geteuid() != 0 or not shutil.which("ip"):
        pytest.skip("needs root and iproute2")
    names = []
    with pytest.raises(ZeroDivisionError):
        with Topology(prefix="egl-t") as topo:
            names = list(topo.ns.values())
            topo.set_resolver("sbx", topo.addr.ext4)
            code = "import socket;s=socket.create_connection((%r,9),timeout=1)"
            for dst in (topo.addr.ext4, topo.addr.ext6):
                # Nobody listens on port 9 in ext: a refusal proves the route both ways.
                r = topo.run("sbx", "python3", "-c", code % dst, check=False)
                assert "ConnectionRefusedError" in r.stderr
            assert "nameserver %s" % topo.addr.ext4 in topo.run("sbx", "cat", "/etc/resolv.conf").stdout
            1 / 0
    assert names and not any(netns_exists(n) for n in names)
    assert not any(os.path.exists("/etc/netns/" + n) for n in names)
