"""Monero/CryptoNote pool protocol detector (XMRig, xmr-stak, MinerGate), plus browser miners.

The CryptoNote pool protocol is JSON-RPC per line, with or without "jsonrpc":"2.0":
- client: {"method":"login","params":{"login","pass","agent","algo",...}},
  {"method":"submit","params":{"id","job_id","nonce","result"}},
  {"method":"keepalived","params":{"id"}}, {"method":"getjob","params":{"id"}};
- pool: {"method":"job","params":{"blob","job_id","target",...}} and the login
  answer {"result":{"id", "job":{"blob","job_id","target"}, "status":"OK"}}.
A bare {"method":"login","params":{"login","pass"}} is what many web APIs send too:
it only counts with a miner-only field (agent, algo, rigid) or with the pool's job.

Browser miners (CoinHive and its clones) use the same jobs in a {"type": ..., "params":
...} envelope: auth/authed/job/submit/hash_accepted; `classify` recognises them too
(they mostly travel inside WebSocket, see ws_mining).
"""
from __future__ import annotations

from typing import Any

from egress.inspect.base import InspectResult, StreamView
from egress.inspect.mining_json import Hit, inspect_lines, is_hex, redact_login, short

MINER_LOGIN_FIELDS = ("agent", "algo", "rigid")
NEEDLES = (b'"login"', b'"job"', b'"submit"', b'"keepalived"', b'"getjob"', b'"blob"',
           b'"type"')


def _job_ok(job: Any) -> bool:
    return (isinstance(job, dict) and is_hex(job.get("blob"), 64, 2048)
            and isinstance(job.get("job_id"), (str, int)) and is_hex(job.get("target"), 4, 64))


def _submit_ok(params: Any) -> bool:
    return (isinstance(params, dict) and "job_id" in params and is_hex(params.get("nonce"), 4, 16)
            and is_hex(params.get("result"), 32, 128))


def _algo(value: Any) -> str:
    if isinstance(value, list):
        return short(",".join(a for a in value[:4] if isinstance(a, str)))
    return short(value)


def classify(obj: dict) -> Hit | None:
    """One JSON object -> a CryptoNote (or browser-miner) Hit, or None."""
    method = obj.get("method")
    params = obj.get("params")
    if isinstance(method, str):
        if method == "login" and isinstance(params, dict) and isinstance(params.get("login"), str):
            if any(k in params for k in MINER_LOGIN_FIELDS):
                return Hit("cryptonote.login", method, 1.0, 9, worker=redact_login(params["login"]),
                           agent=short(params.get("agent")),
                           algo=_algo(params.get("algo")))
            return None
        if method == "job" and _job_ok(params):
            return Hit("cryptonote.job", method, 1.0, 6, algo=short(params.get("algo")))
        if method == "submit" and _submit_ok(params):
            return Hit("cryptonote.submit", method, 1.0, 5)
        if method == "keepalived" and isinstance(params, dict) and "id" in params:
            return Hit("cryptonote.keepalived", method, 0.9, 3)
        if method == "getjob" and isinstance(params, dict) and "id" in params:
            return Hit("cryptonote.getjob", method, 0.8, 3)
        return None
    result = obj.get("result")
    if isinstance(result, dict) and "id" in obj:
        if _job_ok(result.get("job")):
            return Hit("cryptonote.login", "login(result)", 1.0, 8)
        return None
    kind = obj.get("type")
    if isinstance(kind, str) and isinstance(params, dict):
        return _browser_miner(kind, params)
    return None


def _browser_miner(kind: str, params: dict) -> Hit | None:
    """CoinHive-style {"type": ..., "params": {...}} messages."""
    if kind == "auth" and "site_key" in params:
        return Hit("browser_miner.auth", "auth", 1.0, 9, worker=redact_login(params.get("site_key")))
    if kind == "job" and _job_ok(params):
        return Hit("browser_miner.job", "job", 1.0, 6)
    if kind == "submit" and _submit_ok(params):
        return Hit("browser_miner.submit", "submit", 1.0, 5)
    if kind == "authed" and "hashes" in params and "token" in params:
        return Hit("browser_miner.authed", "authed", 0.9, 7)
    if kind == "hash_accepted" and "hashes" in params:
        return Hit("browser_miner.hash_accepted", "hash_accepted", 0.9, 4)
    return None


class CryptoNoteDetector:
    """XMRig-style CryptoNote pool protocol over plain TCP, any port."""
    name = "cryptonote"
    protocols = frozenset({6})
    max_bytes = 8192

    def inspect(self, view: StreamView) -> InspectResult:
        return inspect_lines(view, classify, NEEDLES, self.max_bytes, "stratum")
