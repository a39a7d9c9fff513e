"""The Equihash miner logs in like real ones: each step waits for the pool's answer
(unless its seed makes it one of the pipelining kind), then submits 1344-byte solutions."""
import asyncio
import random

from egress.corpus.zcash import EquihashClient, EquihashPool


def _session(seed: int):
    async def run():
        pool = EquihashPool("127.0.0.1", 0, job_interval=0.1, duration=3.0, seed=1)
        host, port = await pool.start()
        client = EquihashClient(host, port, share_interval=0.2, duration=0.8, seed=seed)
        summary = await client.run()
        pool.stop()
        return pool.record, client.record, summary
    return asyncio.run(run())


def test_login_waits_for_each_answer():
    seed = next(s for s in range(100) if random.Random(s).random() >= 0.25)     # not a pipelining miner
    pool, miner, summary = _session(seed)
    assert not summary.get("error") and summary["shares"] >= 1
    t = {}
    for ts, d, _, obj in miner.events:
        t.setdefault((d, obj.get("method") or obj.get("id")), ts)
    assert t[("in", 1)] <= t[("out", "mining.authorize")]        # the miner had its subscribe answer first
    submit = next(obj for _, d, _, obj in pool.events if d == "in" and obj.get("method") == "mining.submit")
    assert len(submit["params"][4]) == 2 * 1344 + 6
