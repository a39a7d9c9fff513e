"""Stratum v1 pool and miner emulators (Bitcoin-style, or EthereumStratum/1.0.0 with variant="ethstratum").

API (asyncio; see egress.sim.base for the common parameters, limits and recording):

    pool = StratumPool("127.0.0.1", 0, job_interval=0.5, duration=5, tls=False, websocket=False,
                       variant="btc"|"ethstratum", difficulty=1024, accept_shares=True, seed=1)
    host, port = await pool.start(); ...; await pool.wait()      # or: await pool.run()
    pool.record.methods("in")  -> ["mining.subscribe", "mining.authorize", "mining.submit", ...]
    pool.shares_accepted       -> int

    client = StratumClient(host, port, user="bc1q...rig1", share_interval=0.2, jitter=0.3,
                           duration=3, max_messages=50, variant="btc", configure=False)
    summary = await client.run()   # {"received", "sent", "methods_received", "shares", ["error"]}

The pool answers mining.subscribe ([[["mining.set_difficulty", id], ["mining.notify", id]],
extranonce1, extranonce2_size]), mining.authorize (true, then set_difficulty and a
clean job), mining.configure, mining.extranonce.subscribe, mining.suggest_difficulty,
and mining.submit (true), and pushes mining.notify every job_interval with realistic
params: job id, prevhash, coinb1, coinb2, merkle branch, version, nbits, ntime,
clean_jobs. The miner subscribes, authorizes (optionally configures first), then
submits shares for the current job at share_interval with jitter.

CLI: python -m egress.sim.stratum pool --listen 127.0.0.1:3333 [--tls] [--ws] [--duration S]
     python -m egress.sim.stratum client --connect 127.0.0.1:3333 [--share-interval S] ...
"""
from __future__ import annotations

import sys
import time
from typing import Any

from egress.sim.base import MinerClient, PoolServer, Session, cli, rand_hex

VARIANTS = ("btc", "ethstratum")


class StratumPool(PoolServer):
    protocol = "stratum"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, variant: str = "btc",
                 difficulty: float = 1024, accept_shares: bool = True, **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.variant = variant
        self.difficulty = difficulty
        self.accept_shares = accept_shares
        self.shares_accepted = 0
        self._job = 0

    async def on_message(self, session: Session, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        method, msg_id, params = obj.get("method"), obj.get("id"), obj.get("params") or []
        if method == "mining.subscribe":
            session.state["extranonce1"] = rand_hex(self.rng, 4 if self.variant == "btc" else 2)
            sub_id = rand_hex(self.rng, 16)
            if self.variant == "ethstratum":
                result: Any = [["mining.notify", sub_id, "EthereumStratum/1.0.0"], session.state["extranonce1"]]
            else:
                result = [[["mining.set_difficulty", sub_id], ["mining.notify", sub_id]],
                          session.state["extranonce1"], 4]
            await session.send({"id": msg_id, "result": result, "error": None})
        elif method == "mining.authorize":
            session.state["worker"] = params[0] if params else ""
            await session.send({"id": msg_id, "result": True, "error": None})
            await session.send({"id": None, "method": "mining.set_difficulty",
                                "params": [self.difficulty if self.variant == "btc" else 0.5]})
            session.ready = True
            await session.send(self.make_job(session, clean=True))
        elif method == "mining.configure":
            await session.send({"id": msg_id, "error": None,
                                "result": {"version-rolling": True, "version-rolling.mask": "1fffe000"}})
        elif method in ("mining.extranonce.subscribe", "mining.suggest_difficulty"):
            await session.send({"id": msg_id, "result": True, "error": None})
        elif method == "mining.submit":
            if self.accept_shares:
                self.shares_accepted += 1
                await session.send({"id": msg_id, "result": True, "error": None})
            else:
                await session.send({"id": msg_id, "result": None, "error": [23, "Low difficulty share", None]})
        elif msg_id is not None:
            await session.send({"id": msg_id, "result": None, "error": [20, "Unknown method", None]})

    def make_job(self, session: Session, clean: bool = False) -> dict:
        self._job += 1
        rng = self.rng
        job_id = "%x" % (0x4f20 + self._job)
        if self.variant == "ethstratum":
            return {"id": None, "method": "mining.notify",
                    "params": [job_id, rand_hex(rng, 32), rand_hex(rng, 32), clean or self._job % 5 == 0]}
        height = 840000 + self._job
        coinb1 = ("02000000010000000000000000000000000000000000000000000000000000000000000000ffffffff"
                  "35" "03" + height.to_bytes(3, "little").hex() + "2f73696d2f" + rand_hex(rng, 8))
        coinb2 = ("ffffffff02" + rand_hex(rng, 8) + "1976a914" + rand_hex(rng, 20) + "88ac"
                  "0000000000000000266a24aa21a9ed" + rand_hex(rng, 32) + "00000000")
        branch = [rand_hex(rng, 32) for _ in range(rng.randint(3, 11))]
        prevhash = rand_hex(rng, 24) + "00000000" * 2
        return {"id": None, "method": "mining.notify",
                "params": [job_id, prevhash, coinb1, coinb2, branch, "20000000", "17034219",
                           "%08x" % int(time.time()), clean]}


class StratumClient(MinerClient):
    default_user = "bc1qsim0000000000000000000000000000000000x.rig1"
    default_agent = "cgminer/4.12.1"

    def __init__(self, host: str = "127.0.0.1", port: int = 3333, *, variant: str = "btc",
                 configure: bool = False, **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.variant = variant
        self.configure = configure
        if variant == "ethstratum" and not kwargs.get("agent"):
            self.agent = "ethminer/0.19.0"
        if variant == "ethstratum" and not kwargs.get("user"):
            self.user = "0x00000000000000000000000000000000000051a7.rig1"

    async def handshake(self) -> None:
        if self.configure:
            await self.send({"id": self.next_id(), "method": "mining.configure",
                             "params": [["version-rolling"], {"version-rolling.mask": "1fffe000",
                                                              "version-rolling.min-bit-count": 2}]})
        params = [self.agent, "EthereumStratum/1.0.0"] if self.variant == "ethstratum" else [self.agent]
        await self.send({"id": 1, "method": "mining.subscribe", "params": params})
        await self.send({"id": 2, "method": "mining.authorize", "params": [self.user, self.password]})
        self._next_id = 3

    def on_message(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if obj.get("id") == 1 and isinstance(obj.get("result"), list):
            result = obj["result"]
            self.state["extranonce1"] = result[1] if len(result) > 1 else ""
            self.state["extranonce2_size"] = result[2] if len(result) > 2 and isinstance(result[2], int) else 4
        elif obj.get("method") == "mining.notify" and isinstance(obj.get("params"), list) and obj["params"]:
            self.state["job"] = obj["params"]

    def make_share(self) -> Any:
        job = self.state.get("job")
        if not job:
            return None
        if self.variant == "ethstratum":
            nonce = rand_hex(self.rng, 8)[len(self.state.get("extranonce1", "")):]
            return {"id": self.next_id(), "method": "mining.submit", "params": [self.user, job[0], nonce]}
        size = int(self.state.get("extranonce2_size", 4))
        ntime = job[7] if len(job) > 7 else "%08x" % int(time.time())
        return {"id": self.next_id(), "method": "mining.submit",
                "params": [self.user, job[0], rand_hex(self.rng, max(1, min(size, 16))), ntime,
                           rand_hex(self.rng, 4)]}


def main(argv: list[str] | None = None) -> int:
    return cli(StratumPool, StratumClient, argv, 3333, VARIANTS, "egress.sim.stratum")


if __name__ == "__main__":
    sys.exit(main())
