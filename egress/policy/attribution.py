"""Which sandbox (and which episode or run) an address belongs to, and what it did wrong.

Guarantees:
- Two sources of attribution: a mapping file (YAML or JSON, validated with
  `file:line: reason`, replaced as a whole on reload) and registrations made at run
  time through `register()` (the local HTTP API in `egress.policy.api`). A run-time
  registration wins over the file for the same address; both are longest-prefix
  matches, so a /32 beats the /24 around it.
- `Attribution` is thread-safe (the API runs in its own thread) and survives policy
  reloads: the PolicyEngine hands the same object to its successor.
- The violation log is bounded (`max_violations`, oldest dropped and counted) and keeps
  one record per flow and (rule, action), so re-deciding a flow does not duplicate it.

Mapping file format (JSON is the same structure):

    version: 1
    entries:
      - cidr: 10.88.0.12          # an address or a CIDR
        sandbox: sbx-12
        episode: ep-000451         # episode or run id; optional
        policy: strict             # optional: a policy name from the rules files
"""
from __future__ import annotations

import threading
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any, Iterable

from egress.policy.match import CidrSet, parse_network
from egress.policy.source import LList, LMap, PolicyError, did_you_mean, load_yaml, read_source

MAP_KEYS = ("version", "entries")
ENTRY_KEYS = ("cidr", "ip", "sandbox", "episode", "policy")


@dataclass(frozen=True, slots=True)
class Entry:
    network: str          # normalized CIDR text
    sandbox: str
    episode: str | None = None
    policy: str | None = None
    source: str = "file"  # "file" or "api"

    def to_json(self) -> dict:
        out = {"cidr": self.network, "sandbox": self.sandbox, "episode": self.episode, "source": self.source}
        if self.policy:
            out["policy"] = self.policy
        return out


def _id_text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (str, int)):
        text = str(value).strip()
        return text if text and len(text) <= 128 and text.isprintable() else None
    return None


def make_entry(address: Any, sandbox: Any, episode: Any = None, policy: Any = None, source: str = "api") -> Entry:
    """Validated entry; ValueError with a one-line reason otherwise."""
    net = parse_network(address)
    sid = _id_text(sandbox)
    if sid is None:
        raise ValueError("sandbox must be a non-empty id (text or number, up to 128 printable characters)")
    ep = None
    if episode is not None:
        ep = _id_text(episode)
        if ep is None:
            raise ValueError("episode must be a non-empty id (text or number, up to 128 printable characters)")
    pol = None
    if policy is not None:
        pol = _id_text(policy)
        if pol is None:
            raise ValueError("policy must be a policy name")
    return Entry(str(net), sid, ep, pol, source)


def parse_sandbox_map(path: str, text: str | bytes) -> list[Entry]:
    """Entries of a mapping file; PolicyError listing every problem as file:line: reason."""
    data = load_yaml(path, text)
    errors: list[tuple[str, int | None, str]] = []
    if isinstance(data, LList):
        items, line = data, data.line          # a bare list of entries is accepted too
    elif isinstance(data, LMap):
        for key in data:
            if key not in MAP_KEYS:
                errors.append((path, data.key_line(key), "unknown key '%s' in the sandbox map%s"
                               % (key, did_you_mean(key, MAP_KEYS))))
        if "version" in data and data["version"] != 1:
            errors.append((path, data.value_line("version"), "unsupported version %r (expected 1)" % (data["version"],)))
        items, line = data.get("entries"), data.value_line("entries")
        if items is None:
            errors.append((path, data.line, "missing 'entries:' list"))
            raise PolicyError(errors)
        if not isinstance(items, LList):
            errors.append((path, line, "entries must be a list"))
            raise PolicyError(errors)
    elif data is None:
        return []
    else:
        raise PolicyError([(path, 1, "a sandbox map must be a mapping with 'entries:' or a list")])
    out: list[Entry] = []
    seen: dict[str, int] = {}
    for i, item in enumerate(items):
        item_line = items.item_line(i)
        if not isinstance(item, LMap):
            errors.append((path, item_line, "an entry must be a mapping with cidr and sandbox"))
            continue
        bad = False
        for key in item:
            if key not in ENTRY_KEYS:
                errors.append((path, item.key_line(key), "unknown key '%s' in entry%s" % (key, did_you_mean(key, ENTRY_KEYS))))
                bad = True
        addr_key = "cidr" if "cidr" in item else "ip" if "ip" in item else None
        if addr_key is None or "sandbox" not in item:
            errors.append((path, item.line, "an entry needs 'cidr:' (or 'ip:') and 'sandbox:'"))
            continue
        try:
            net = parse_network(item[addr_key])
        except ValueError as e:
            errors.append((path, item.value_line(addr_key), str(e)))
            continue
        try:
            entry = make_entry(str(net), item["sandbox"], item.get("episode"), item.get("policy"), "file")
        except ValueError as e:
            key = "sandbox" if "sandbox" in str(e) else "episode" if "episode" in str(e) else "policy"
            errors.append((path, item.value_line(key), str(e)))
            continue
        if entry.network in seen:
            errors.append((path, item.line, "%s already mapped at line %d" % (entry.network, seen[entry.network])))
            continue
        seen[entry.network] = item.line
        if not bad:
            out.append(entry)
    if errors:
        raise PolicyError(errors)
    return out


def load_sandbox_map(path: str) -> list[Entry]:
    return parse_sandbox_map(str(path), read_source(str(path)))


class _Table:
    """Immutable longest-prefix table of entries."""

    def __init__(self, entries: Iterable[Entry]):
        self.entries = {e.network: e for e in entries}
        self.cidrs = CidrSet(parse_network(n) for n in self.entries)

    def lookup(self, packed: bytes) -> Entry | None:
        hit = self.cidrs.lookup(packed)
        return self.entries[hit] if hit is not None else None


class Attribution:
    """Address -> sandbox entries (file + API) and the violation log; shared across reloads."""

    def __init__(self, file_entries: Iterable[Entry] = (), map_path: str | None = None,
                 max_violations: int = 10000):
        self._lock = threading.Lock()
        self.map_path = map_path
        self._file = _Table(file_entries)
        self._api = _Table(())
        self._violations: deque = deque(maxlen=max_violations)
        self._recorded: OrderedDict = OrderedDict()   # (flow_id, rule, action) -> None, bounded
        self._max_recorded = max_violations * 4
        self.counters = {"violations": 0, "violations_dropped": 0, "registered": 0, "unregistered": 0}
        # Bumped (after the swap) on every change of the mapping: what readers cache from
        # lookups is valid while it is unchanged.
        self.generation = 0

    # -- mapping -------------------------------------------------------------------------

    def lookup(self, packed: bytes) -> Entry | None:
        # Tables are replaced, never mutated, so reading the two references needs no lock.
        return self._api.lookup(packed) or self._file.lookup(packed)

    def replace_file_entries(self, entries: Iterable[Entry], map_path: str | None = None) -> None:
        table = _Table(entries)
        with self._lock:
            self._file = table
            if map_path is not None:
                self.map_path = map_path
            self.generation += 1

    def register(self, entry: Entry) -> None:
        with self._lock:
            entries = dict(self._api.entries)
            entries[entry.network] = entry
            self._api = _Table(entries.values())
            self.counters["registered"] += 1
            self.generation += 1

    def unregister(self, address: str) -> bool:
        net = str(parse_network(address))
        with self._lock:
            if net not in self._api.entries:
                return False
            entries = dict(self._api.entries)
            del entries[net]
            self._api = _Table(entries.values())
            self.counters["unregistered"] += 1
            self.generation += 1
            return True

    def entries(self) -> list[Entry]:
        api, file = self._api, self._file
        return list(api.entries.values()) + [e for n, e in file.entries.items() if n not in api.entries]

    # -- violations ------------------------------------------------------------------------

    def recorded(self, key: tuple) -> bool:
        """Was a violation with this (flow_id, rule, action, mode) key recorded? (no lock: a hint)"""
        return key in self._recorded

    def record(self, violation: dict, key: tuple | None = None) -> bool:
        """Append one violation unless this (flow, rule, action, mode) was already recorded."""
        if key is None:
            key = (violation.get("flow_id"), violation.get("rule"), violation.get("action"), violation.get("mode"))
        with self._lock:
            if key in self._recorded:
                return False
            self._recorded[key] = None
            if len(self._recorded) > self._max_recorded:
                self._recorded.popitem(last=False)
            if len(self._violations) == self._violations.maxlen:
                self.counters["violations_dropped"] += 1
            self._violations.append(violation)
            self.counters["violations"] += 1
            return True

    def violations(self, sandbox: str | None = None, episode: str | None = None) -> list[dict]:
        with self._lock:
            items = list(self._violations)
        out = []
        for v in items:
            sbx = v.get("sandbox") or {}
            if sandbox is not None and sbx.get("id") != sandbox:
                continue
            if episode is not None and sbx.get("episode") != episode:
                continue
            out.append(v)
        return out
