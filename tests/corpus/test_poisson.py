"""Miners with real timing: exponential share gaps and jobs on random block arrivals,
same messages as egress.sim (a loopback session, no namespaces needed)."""
import asyncio
import statistics

import pytest

from egress.corpus import poisson


@pytest.mark.parametrize("protocol", sorted(poisson.PROTOCOLS))
def test_share_gaps_are_exponential(protocol):
    _, client_cls, _, _ = poisson.classes(protocol)
    client = client_cls("127.0.0.1", 1, seed=3, jitter=0.05)       # jitter is ignored: hashing is memoryless
    gaps = [client._interval(2.0) for _ in range(4000)]
    mean = statistics.fmean(gaps)
    assert 1.8 < mean < 2.2
    assert 0.9 < statistics.pstdev(gaps) / mean < 1.1             # exponential: cv 1 (the sim's clock: ~0.03)


def test_a_session_pushes_jobs_at_irregular_times_and_takes_shares():
    pool_cls, client_cls, _, _ = poisson.classes("stratum")

    async def run():
        pool = pool_cls("127.0.0.1", 0, job_interval=0.05, duration=3.0, seed=1)
        host, port = await pool.start()
        client = client_cls(host, port, share_interval=0.05, duration=1.5, seed=2)
        summary = await client.run()
        pool.stop()
        return pool, summary

    pool, summary = asyncio.run(run())
    assert not summary.get("error")
    assert "mining.submit" in pool.record.methods("in")
    jobs = [ts for ts, d, _, obj in pool.record.events
            if d == "out" and isinstance(obj, dict) and obj.get("method") == "mining.notify"]
    assert len(jobs) >= 8
    gaps = [b - a for a, b in zip(jobs[1:], jobs[2:])]            # the first job answers the login
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) > 0.3   # not clockwork
