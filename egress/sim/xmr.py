"""CryptoNote (XMRig-style) pool and miner emulators; variant="coinhive" speaks the browser-miner dialect.

API (asyncio; common parameters, limits and recording in egress.sim.base):

    pool = CryptoNotePool("127.0.0.1", 0, job_interval=0.5, duration=5, variant="xmrig"|"coinhive",
                          tls=False, websocket=False, seed=1)
    client = CryptoNoteClient(host, port, user="4...wallet", agent="XMRig/6.21.0 ...",
                              share_interval=0.3, periodic_interval=2.0 (keepalived), duration=3,
                              variant="xmrig"|"coinhive")
    await pool.start(); summary = await client.run(); pool.stop(); await pool.wait()
    pool.record.methods("in") -> ["login", "submit", "keepalived", ...]   (coinhive: ["auth", "submit"])

xmrig dialect (with "jsonrpc":"2.0", as XMRig sends it):
  client  {"id":1,"jsonrpc":"2.0","method":"login","params":{"login","pass","agent","algo":[...],"rigid"}}
  pool    {"id":1,"jsonrpc":"2.0","error":null,"result":{"id","job":{"blob","job_id","target","algo",
           "height","seed_hash"},"extensions":[...],"status":"OK"}}
  pool    {"jsonrpc":"2.0","method":"job","params":{...}}                 every job_interval
  client  {"id":n,"jsonrpc":"2.0","method":"submit","params":{"id","job_id","nonce","result","algo"}}
  client  {"id":n,"jsonrpc":"2.0","method":"keepalived","params":{"id"}}  every periodic_interval
coinhive dialect: {"type":"auth","params":{"site_key","type":"anonymous","user":null,"goal":0}} ->
  {"type":"authed","params":{"token":"","hashes":0}}, {"type":"job","params":{"job_id","blob","target"}},
  {"type":"submit","params":{"job_id","nonce","result"}} -> {"type":"hash_accepted","params":{"hashes"}}.
Blobs are 76-byte hashing blobs (version, timestamp, prev id, nonce slot, merkle root),
targets 4-byte compact hex, results 32-byte hex.

CLI: python -m egress.sim.xmr pool --listen 127.0.0.1:3333 ... | client --connect HOST:PORT ...
"""
from __future__ import annotations

import sys
import time
from typing import Any

from egress.sim.base import MinerClient, PoolServer, Session, cli, rand_hex

VARIANTS = ("xmrig", "coinhive")


def _blob(rng) -> str:
    # major/minor version, varint timestamp, previous block id, 4-byte nonce slot, merkle root, tx count
    stamp = int(time.time()).to_bytes(5, "little").hex()
    return "1010" + stamp + rand_hex(rng, 32) + "00000000" + rand_hex(rng, 32) + "1f"


class CryptoNotePool(PoolServer):
    protocol = "cryptonote"

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, variant: str = "xmrig",
                 target: str = "b88d0600", **kwargs: Any):
        super().__init__(host, port, **kwargs)
        self.variant = variant
        self.target = target
        self.shares_accepted = 0
        self._job = 0

    def _job_params(self) -> dict:
        self._job += 1
        job = {"blob": _blob(self.rng), "job_id": rand_hex(self.rng, 12)[:22], "target": self.target}
        if self.variant == "xmrig":
            job.update({"algo": "rx/0", "height": 3100000 + self._job, "seed_hash": rand_hex(self.rng, 32)})
        return job

    async def on_message(self, session: Session, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        if self.variant == "coinhive":
            kind = obj.get("type")
            if kind == "auth":
                await session.send({"type": "authed", "params": {"token": "", "hashes": 0}})
                session.ready = True
                await session.send(self.make_job(session))
            elif kind == "submit":
                self.shares_accepted += 1
                await session.send({"type": "hash_accepted", "params": {"hashes": 256 * self.shares_accepted}})
            return
        method, msg_id = obj.get("method"), obj.get("id")
        if method == "login":
            session.state["id"] = rand_hex(self.rng, 16)[:32]
            await session.send({"id": msg_id, "jsonrpc": "2.0", "error": None,
                                "result": {"id": session.state["id"], "job": self._job_params(),
                                           "extensions": ["algo", "nicehash", "connect", "tls", "keepalive"],
                                           "status": "OK"}})
            session.ready = True
        elif method == "submit":
            self.shares_accepted += 1
            await session.send({"id": msg_id, "jsonrpc": "2.0", "error": None, "result": {"status": "OK"}})
        elif method == "keepalived":
            await session.send({"id": msg_id, "jsonrpc": "2.0", "error": None, "result": {"status": "KEEPALIVED"}})
        elif msg_id is not None:
            await session.send({"id": msg_id, "jsonrpc": "2.0", "error": {"code": -1, "message": "Unknown method"}})

    def make_job(self, session: Session) -> dict:
        if self.variant == "coinhive":
            return {"type": "job", "params": self._job_params()}
        return {"jsonrpc": "2.0", "method": "job", "params": self._job_params()}


class CryptoNoteClient(MinerClient):
    default_user = "44sim0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000x"
    default_agent = "XMRig/6.21.0 (Linux x86_64) libuv/1.44.2 gcc/12.2.0"

    def __init__(self, host: str = "127.0.0.1", port: int = 3333, *, variant: str = "xmrig", **kwargs: Any):
        kwargs.setdefault("periodic_interval", 60.0)
        super().__init__(host, port, **kwargs)
        self.variant = variant
        if variant == "coinhive" and not kwargs.get("agent"):
            self.agent = "Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"

    async def handshake(self) -> None:
        if self.variant == "coinhive":
            await self.send({"type": "auth", "params": {"site_key": "SiMuLaTeDsItEkEy0000000000000000",
                                                        "type": "anonymous", "user": None, "goal": 0}})
            return
        await self.send({"id": 1, "jsonrpc": "2.0", "method": "login",
                         "params": {"login": self.user, "pass": self.password, "agent": self.agent,
                                    "algo": ["rx/0", "cn/r", "cn/2", "cn-heavy/xhv"], "rigid": ""}})

    def on_message(self, obj: Any) -> None:
        if not isinstance(obj, dict):
            return
        result = obj.get("result")
        if isinstance(result, dict) and isinstance(result.get("job"), dict):
            self.state["id"] = result.get("id")
            self.state["job"] = result["job"]
        elif obj.get("method") == "job" or obj.get("type") == "job":
            if isinstance(obj.get("params"), dict):
                self.state["job"] = obj["params"]

    def make_share(self) -> Any:
        job = self.state.get("job")
        if not job:
            return None
        nonce, result = rand_hex(self.rng, 4), rand_hex(self.rng, 28) + "00000000"
        if self.variant == "coinhive":
            return {"type": "submit", "params": {"job_id": job.get("job_id"), "nonce": nonce, "result": result}}
        return {"id": self.next_id(), "jsonrpc": "2.0", "method": "submit",
                "params": {"id": self.state.get("id"), "job_id": job.get("job_id"), "nonce": nonce,
                           "result": result, "algo": job.get("algo", "rx/0")}}

    def make_periodic(self) -> Any:
        if self.variant == "coinhive" or not self.state.get("id"):
            return None
        return {"id": self.next_id(), "jsonrpc": "2.0", "method": "keepalived", "params": {"id": self.state["id"]}}


def main(argv: list[str] | None = None) -> int:
    return cli(CryptoNotePool, CryptoNoteClient, argv, 3333, VARIANTS, "egress.sim.xmr")


if __name__ == "__main__":
    sys.exit(main())
