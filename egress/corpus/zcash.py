"""Equihash (Zcash-style, ZIP 301) Stratum: the corpus's miner whose shares are big.

Built on egress.sim's Stratum pool and miner (same sockets, TLS, WebSocket, limits);
only the messages differ, as in real Equihash pools: `mining.subscribe` answers
[session, nonce1], targets come by `mining.set_target`, `mining.notify` carries
version/prevhash/merkleroot/reserved/time/bits, and every `mining.submit` carries a
1344-byte solution (2.7 KB of hex): a miner that uploads more than it downloads.

    python -m egress.corpus.zcash pool|client [egress.sim options]
"""
from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

from egress.sim.base import cli, rand_hex
from egress.sim.stratum import StratumClient, StratumPool

VARIANTS = ("zcash",)


class EquihashPool(StratumPool):
    async def on_message(self, session, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        method, msg_id, params = obj.get("method"), obj.get("id"), obj.get("params") or []
        if method == "mining.subscribe":
            await session.send({"id": msg_id, "result": [None, rand_hex(self.rng, 4)], "error": None})
        elif method == "mining.authorize":
            await session.send({"id": msg_id, "result": True, "error": None})
            await session.send({"id": None, "method": "mining.set_target",
                                "params": ["0" * 8 + rand_hex(self.rng, 28)]})
            session.ready = True
            await session.send(self.make_job(session, clean=True))
        elif method == "mining.extranonce.subscribe":
            await session.send({"id": msg_id, "result": True, "error": None})
        elif method == "mining.submit":
            await session.send({"id": msg_id, "result": True, "error": None})
        elif msg_id is not None:
            await session.send({"id": msg_id, "result": None, "error": [20, "Unknown method", None]})

    def make_job(self, session, clean: bool = False) -> dict:
        self._job += 1
        rng = self.rng
        return {"id": None, "method": "mining.notify",
                "params": ["%x" % (0x1a00 + self._job), "04000000", rand_hex(rng, 32), rand_hex(rng, 32),
                           "0" * 64, (int(time.time())).to_bytes(4, "little").hex(), "1d2b8a4c",
                           clean or self._job % 4 == 0]}


class EquihashClient(StratumClient):
    default_user = "t1Sim000000000000000000000000000000.rig1"
    default_agent = "nheqminer/0.5c"

    async def handshake(self) -> None:
        # Real Equihash miners (nheqminer, EWBF, lolMiner) wait for each answer before the
        # next step, and some also ask for extranonce updates: three short exchanges, not
        # one pipelined burst. Which of them a run speaks is drawn from its seed.
        pipelined = self.rng.random() < 0.25
        extranonce = self.rng.random() < 0.5
        self._next_id = 1
        await self.send({"id": 1, "method": "mining.subscribe", "params": [self.agent, None, "pool.test", "3333"]})
        if not pipelined:
            await self._answer(1)
        await self.send({"id": 2, "method": "mining.authorize", "params": [self.user, self.password]})
        self._next_id = 2
        if extranonce:
            if not pipelined:
                await self._answer(2)
            await self.send({"id": 3, "method": "mining.extranonce.subscribe", "params": []})
            self._next_id = 3

    async def _answer(self, msg_id: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while msg_id not in self.state.setdefault("answered", set()) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    def on_message(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if obj.get("id") is not None:
            self.state.setdefault("answered", set()).add(obj["id"])
        if obj.get("method") == "mining.notify" and obj.get("params"):
            self.state["job"] = obj["params"]

    def make_share(self) -> Any:
        job = self.state.get("job")
        if not job:
            return None
        return {"id": self.next_id(), "method": "mining.submit",
                "params": [self.user, job[0], job[5], rand_hex(self.rng, 28), "fd4005" + rand_hex(self.rng, 1344)]}


def main(argv: list[str] | None = None) -> int:
    return cli(EquihashPool, EquihashClient, argv, 3333, VARIANTS, "egress.corpus.zcash")


if __name__ == "__main__":
    sys.exit(main())
