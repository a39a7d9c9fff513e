"""The list of protocol detectors the engine runs, built by a function (no import-time registration).

Each detector module adds itself here by name, in the order detectors should be
consulted (cheap and common first).
"""
from __future__ import annotations

from egress.inspect.base import Detector


def default_detectors() -> list[Detector]:
    """Fresh detector instances for one engine."""
    detectors: list[Detector] = []
    # Detector modules append here, e.g.:
    #   from egress.inspect.tls import TlsDetector; detectors.append(TlsDetector())
    # Protocols first: their facts (tls.sni, http.host, dns.query...) feed the later ones.
    from egress.inspect.dns import DnsDetector
    from egress.inspect.http import HttpDetector
    from egress.inspect.shell import ReverseShellDetector
    from egress.inspect.ssh import SshDetector
    from egress.inspect.tls import TlsDetector
    from egress.inspect.tunnel import TunnelDetector
    detectors += [TlsDetector(), HttpDetector(), DnsDetector(), SshDetector(), ReverseShellDetector(),
                  TunnelDetector()]
    from egress.inspect.ethminer import EthMinerDetector
    from egress.inspect.stratum import StratumDetector
    from egress.inspect.stratum_v2 import StratumV2Detector
    from egress.inspect.ws_mining import WebSocketMiningDetector
    from egress.inspect.xmr import CryptoNoteDetector
    detectors += [StratumDetector(), CryptoNoteDetector(), EthMinerDetector(), WebSocketMiningDetector(),
                  StratumV2Detector()]
    # The backstop: mining JSON-RPC anywhere in the client's stream, whatever it opened with.
    from egress.inspect.mining_anywhere import MiningAnywhereDetector
    detectors.append(MiningAnywhereDetector())
    # Reads the facts of the TLS/DNS/HTTP detectors: keep it the LAST line before return.
    from egress.inspect.pool_domain import PoolDomainDetector; detectors.append(PoolDomainDetector())
    return detectors


def reload_domain_lists(detectors: list[Detector]) -> list[str]:
    """SIGHUP: re-read the domain lists the detectors use (rules/pools.txt, rules/tunnels.txt)
    and swap them in. A bad file keeps its old list; its one-line error is returned."""
    from egress.inspect import pool_domain, tunnel
    from egress.inspect.pools import PoolListError

    errors = []
    problem = pool_domain.reload_pool_lists(detectors)
    if problem:
        errors.append(problem)
    try:
        tunnels = tunnel.load_tunnel_domains()
    except PoolListError as exc:
        errors.append(str(exc))
    else:
        for detector in detectors:
            if isinstance(detector, tunnel.TunnelDetector):
                detector.swap(tunnels)
    return errors
