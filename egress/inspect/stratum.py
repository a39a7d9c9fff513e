"""Stratum v1 (and EthereumStratum/1.0.0) mining detector: newline-delimited JSON-RPC.

Recognises, in either direction and from the middle of a session:
- client calls mining.subscribe / authorize / configure / extranonce.subscribe /
  submit / suggest_difficulty / suggest_target (and any other "mining.*" call with a
  params list, at lower confidence);
- pool notifications mining.notify / set_difficulty / set_target / set_extranonce;
- the pool's answer to subscribe: [[["mining.set_difficulty", id], ["mining.notify", id]],
  extranonce1, extranonce2_size], or EthereumStratum's [["mining.notify", id,
  "EthereumStratum/1.0.0"], extranonce].

EthereumStratum/2.0.0's opening mining.hello {"agent", "host", "port", "proto"} counts
as a subscribe. Every message is a parsed JSON object whose "method" equals the name
and whose params have the expected shape; a text mentioning "mining.subscribe" is not
enough.
"jsonrpc" is optional, ids may be null/int/str. Evidence: method, direction,
worker (a wallet redacted to its prefix), agent, pool host (from subscribe params).
"""
from __future__ import annotations

from typing import Any

from egress.inspect.base import InspectResult, StreamView
from egress.inspect.mining_json import Hit, inspect_lines, redact_login, short

# method -> (signature suffix, priority); the higher priority names the flow.
CLIENT_METHODS = {
    "mining.subscribe": 9,
    "mining.authorize": 8,
    "mining.configure": 7,
    "mining.extranonce.subscribe": 6,
    "mining.submit": 5,
    "mining.suggest_difficulty": 4,
    "mining.suggest_target": 4,
}
SERVER_METHODS = {
    "mining.notify": 6,
    "mining.set_difficulty": 5,
    "mining.set_target": 5,
    "mining.set_extranonce": 4,
    "mining.set_version_mask": 4,
}
ETHSTRATUM = "EthereumStratum/"
NEEDLES = (b"mining.",)


def _params_ok(method: str, params: Any) -> bool:
    """The params shape each method has in the wild (loose enough for every pool we know)."""
    if not isinstance(params, list):
        return False
    if method == "mining.notify":
        return len(params) >= 4 and isinstance(params[0], (str, int))
    if method in ("mining.set_difficulty", "mining.suggest_difficulty"):
        return len(params) >= 1 and isinstance(params[0], (int, float, str)) and not isinstance(params[0], bool)
    if method in ("mining.set_target", "mining.suggest_target"):
        return len(params) >= 1 and isinstance(params[0], str)
    if method == "mining.submit":
        return len(params) >= 3 and all(isinstance(p, (str, int)) for p in params[:3])
    if method == "mining.authorize":
        return len(params) >= 1 and isinstance(params[0], str)
    return True


def _subscribe_result(result: Any) -> Hit | None:
    """The pool's answer to mining.subscribe (both the Bitcoin and EthereumStratum shapes)."""
    if not isinstance(result, list) or len(result) < 2:
        return None
    subs = result[0]
    if not isinstance(subs, list) or not subs:
        return None
    # EthereumStratum/1.0.0: [["mining.notify", "ae6812eb4cd7735a302a8a9dd95cf71f", "EthereumStratum/1.0.0"], "080c"]
    if subs and isinstance(subs[0], str):
        if subs[0] == "mining.notify" and len(subs) >= 2:
            proto = subs[2] if len(subs) > 2 and isinstance(subs[2], str) else ""
            if proto.startswith(ETHSTRATUM):
                return Hit("ethstratum.subscribe", "mining.subscribe(result)", 1.0, 8, protocol=short(proto, 32))
            return Hit("stratum.v1.subscribe", "mining.subscribe(result)", 0.9, 8)
        return None
    names = [s[0] for s in subs[:8] if isinstance(s, list) and s and isinstance(s[0], str)]
    if names and all(n.startswith("mining.") for n in names) and \
            ("mining.notify" in names or "mining.set_difficulty" in names):
        return Hit("stratum.v1.subscribe", "mining.subscribe(result)", 1.0, 8)
    return None


def classify(obj: dict) -> Hit | None:
    """One JSON object -> a Stratum v1 Hit, or None."""
    method = obj.get("method")
    if isinstance(method, str):
        if not method.startswith("mining."):
            return None
        params = obj.get("params", [])
        if method == "mining.hello" and isinstance(params, dict):
            # EthereumStratum/2.0.0 (ethminer): {"agent", "host", "port", "proto"} instead of subscribe
            proto = params.get("proto")
            if isinstance(proto, str) or isinstance(params.get("agent"), str):
                return Hit("ethstratum.hello", method, 1.0, 9, agent=short(params.get("agent")),
                           protocol=short(proto, 32), pool_host=short(params.get("host")))
            return None
        if not _params_ok(method, params):
            return None
        if method in CLIENT_METHODS:
            prio = CLIENT_METHODS[method]
            name = method[len("mining."):]
            evidence: dict[str, Any] = {}
            if method == "mining.subscribe":
                agent = params[0] if params and isinstance(params[0], str) else ""
                if len(params) > 1 and isinstance(params[1], str) and params[1].startswith(ETHSTRATUM):
                    return Hit("ethstratum.subscribe", method, 1.0, prio, agent=short(agent),
                               protocol=short(params[1], 32))
                if agent.startswith(ETHSTRATUM):
                    return Hit("ethstratum.subscribe", method, 1.0, prio, protocol=short(agent, 32))
                evidence["agent"] = short(agent)
                if len(params) > 2 and isinstance(params[2], str) and "." in params[2]:
                    evidence["pool_host"] = short(params[2])
            elif method in ("mining.authorize", "mining.submit"):
                evidence["worker"] = redact_login(params[0])
            return Hit("stratum.v1." + name, method, 1.0, prio, **evidence)
        if method in SERVER_METHODS:
            return Hit("stratum.v1." + method[len("mining."):], method, 1.0, SERVER_METHODS[method])
        # Another call in the "mining." namespace (mining.ping, mining.get_transactions, ...).
        if len(method) <= 48:
            return Hit("stratum.v1.other", method, 0.7, 1)
        return None
    if "result" in obj and "id" in obj:
        return _subscribe_result(obj.get("result"))
    return None


class StratumDetector:
    """Stratum v1 / EthereumStratum over plain TCP, any port."""
    name = "stratum"
    protocols = frozenset({6})
    max_bytes = 8192

    def inspect(self, view: StreamView) -> InspectResult:
        return inspect_lines(view, classify, NEEDLES, self.max_bytes, "stratum")
