"""eth-proxy ("Stratum" of ethminer/Claymore to Ethereum-style pools) pool and miner emulators.

API (asyncio; common parameters, limits and recording in egress.sim.base):

    pool = EthProxyPool("127.0.0.1", 0, job_interval=0.5, duration=5, tls=False, websocket=False, seed=1)
    client = EthProxyClient(host, port, user="0x...wallet.rig1", share_interval=0.5,
                            periodic_interval=1.0 (eth_submitHashrate),
                            duration=3, rig="eth1.0")
    await pool.start(); summary = await client.run(); pool.stop(); await pool.wait()
    pool.record.methods("in") -> ["eth_submitLogin", "eth_getWork", "eth_submitHashrate", "eth_submitWork", ...]

Messages as ethminer/Claymore send them (compact JSON, one per line):
  {"worker":"eth1.0","jsonrpc":"2.0","params":["0x...wallet.rig","x"],"id":2,"method":"eth_submitLogin"}
  {"worker":"","jsonrpc":"2.0","params":[],"id":3,"method":"eth_getWork"}
  {"id":4,"jsonrpc":"2.0","method":"eth_submitWork","params":["0x<8 bytes>","0x<32>","0x<32>"]}
  {"id":6,"jsonrpc":"2.0","method":"eth_submitHashrate","params":["0x<rate>","0x<32-byte id>"]}
The pool answers login/submit with true and getWork with [header, seed, target, height]
(all 0x hex; header/seed/target 32 bytes), and pushes new work unsolicited with id 0
every job_interval, as real eth-proxy pools do.

CLI: python -m egress.sim.ethproxy pool --listen 127.0.0.1:8008 ... | client --connect HOST:PORT ...
"""
from __future__ import annotations

import sys
from typing import Any

from egress.sim.base import MinerClient, PoolServer, Session, cli, rand_hex

VARIANTS = ("ethproxy",)


class EthProxyPool(PoolServer):
    protocol = "eth-proxy"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, variant: str = "ethproxy", **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.variant = variant
        self.shares_accepted = 0
        self._height = 19_000_000
        self._seed = "0x" + rand_hex(self.rng, 32)
        self._work = self._new_work()

    def _new_work(self) -> list[str]:
        self._height += 1
        return ["0x" + rand_hex(self.rng, 32), self._seed, "0x00000000" + rand_hex(self.rng, 28), hex(self._height)]

    async def on_message(self, session: Session, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        method, msg_id = obj.get("method"), obj.get("id")
        if method in ("eth_submitLogin", "eth_login"):
            await session.send({"id": msg_id, "jsonrpc": "2.0", "result": True})
            session.ready = True
        elif method == "eth_getWork":
            await session.send({"id": msg_id, "jsonrpc": "2.0", "result": self._work})
        elif method == "eth_submitWork":
            self.shares_accepted += 1
            await session.send({"id": msg_id, "jsonrpc": "2.0", "result": True})
        elif method == "eth_submitHashrate":
            await session.send({"id": msg_id, "jsonrpc": "2.0", "result": True})
        elif msg_id is not None:
            await session.send({"id": msg_id, "jsonrpc": "2.0", "result": None,
                                "error": {"code": -32601, "message": "Method not found"}})

    def make_job(self, session: Session) -> dict:
        self._work = self._new_work()
        return {"id": 0, "jsonrpc": "2.0", "result": self._work}


class EthProxyClient(MinerClient):
    default_user = "0x00000000000000000000000000000000000051a7.rig1"
    default_agent = "ethminer/0.19.0"

    def __init__(self, host: str = "127.0.0.1", port: int = 8008, *, variant: str = "ethproxy",
                 rig: str = "eth1.0", **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.variant = variant
        self.rig = rig
        self._hashrate_id = "0x" + rand_hex(self.rng, 32)
        self._turn = 0

    async def handshake(self) -> None:
        await self.send({"worker": self.rig, "jsonrpc": "2.0", "params": [self.user, self.password], "id": 2,
                         "method": "eth_submitLogin"})
        await self.send({"worker": "", "jsonrpc": "2.0", "params": [], "id": 3, "method": "eth_getWork"})

    def on_message(self, obj: Any) -> None:
        if isinstance(obj, dict) and isinstance(obj.get("result"), list) and len(obj["result"]) >= 3:
            self.state["work"] = obj["result"]

    def make_share(self) -> Any:
        # Claymore alternates getWork polls and shares; one call per share interval keeps it simple.
        self._turn += 1
        work = self.state.get("work")
        if work is None or self._turn % 2:
            return {"worker": "", "jsonrpc": "2.0", "params": [], "id": 3, "method": "eth_getWork"}
        return {"id": 4, "jsonrpc": "2.0", "method": "eth_submitWork",
                "params": ["0x" + rand_hex(self.rng, 8), work[0], "0x" + rand_hex(self.rng, 32)]}

    def make_periodic(self) -> Any:
        return {"id": 6, "jsonrpc": "2.0", "method": "eth_submitHashrate",
                "params": [hex(self.rng.randint(20_000_000, 40_000_000)), self._hashrate_id]}


def main(argv: list[str] | None = None) -> int:
    return cli(EthProxyPool, EthProxyClient, argv, 8008, VARIANTS, "egress.sim.ethproxy")


if __name__ == "__main__":
    sys.exit(main())
