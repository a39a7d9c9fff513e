"""Miners with the timing of real mining: shares as a Poisson process, jobs on block arrivals.

    python -m egress.corpus.poisson PROTOCOL pool|client [egress.sim options]
    PROTOCOL: stratum | xmr | ethproxy | zcash

egress.sim's emulators submit a share every `share_interval * (1 +/- jitter)` and push
a job every `job_interval` exactly: clockwork. Real hashing is memoryless, so the gaps
between a miner's shares are exponential (coefficient of variation 1, whatever the
hash rate); a pool sends a clean job when a block is found (exponential gaps again) and
re-sends the job now and then between blocks (new transactions). A classifier trained
only on clockwork miners learns "periodic = mining" and then calls every periodic
benign upload (telemetry, heartbeats) mining; these variants keep what mining IS (the
pool pushes work, the miner answers with near-constant-size shares whose count grows
with time) and drop the clock.

Same messages, sockets, TLS, WebSocket and limits as egress.sim (only the two timing
hooks are replaced): `--jitter` is ignored by the client; the pool's `--job-interval`
is the mean block time, and a refresh job follows after 1.5-3 of those without a block.
"""
from __future__ import annotations

import asyncio
import importlib
import ssl
import sys

from egress.sim.base import cli

PROTOCOLS = {
    "stratum": ("egress.sim.stratum", "StratumPool", "StratumClient", 3333),
    "xmr": ("egress.sim.xmr", "CryptoNotePool", "CryptoNoteClient", 3333),
    "ethproxy": ("egress.sim.ethproxy", "EthProxyPool", "EthProxyClient", 8008),
    "zcash": ("egress.corpus.zcash", "EquihashPool", "EquihashClient", 3333),
}


class _PoissonShares:
    def _interval(self, mean: float) -> float:
        # memoryless hashing: exponential gaps between shares (and between periodic reports: no)
        return max(0.001, self.rng.expovariate(1.0 / mean))


class _BlockJobs:
    async def _push_jobs(self, session) -> None:
        try:
            while not self._done.is_set():
                block = self.rng.expovariate(1.0 / self.job_interval)
                refresh = self.job_interval * self.rng.uniform(1.5, 3.0)
                await asyncio.sleep(min(block, refresh))
                if session.ready and not session.channel.closed:
                    job = self.make_job(session)
                    if job is not None:
                        await session.send(job)
        except (ConnectionError, ssl.SSLError, OSError, asyncio.CancelledError):
            return


def classes(protocol: str) -> tuple[type, type, int, tuple]:
    module, pool, client, port = PROTOCOLS[protocol]
    mod = importlib.import_module(module)
    pool_cls = type("Block" + pool, (_BlockJobs, getattr(mod, pool)), {})
    client_cls = type("Poisson" + client, (_PoissonShares, getattr(mod, client)), {})
    return pool_cls, client_cls, port, mod.VARIANTS


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in PROTOCOLS:
        print("usage: python -m egress.corpus.poisson {%s} pool|client ..." % "|".join(PROTOCOLS), file=sys.stderr)
        return 2
    pool_cls, client_cls, port, variants = classes(argv[0])
    return cli(pool_cls, client_cls, argv[1:], port, variants, "egress.corpus.poisson " + argv[0])


if __name__ == "__main__":
    sys.exit(main())
