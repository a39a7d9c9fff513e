"""The curated list of mining pool domains (rules/pools.txt) as an immutable, reloadable matcher.

Format: one domain suffix per line; '#' starts a comment (whole line or trailing);
blank lines ignored. Guarantees:
- `PoolDomains.load(path)` returns a NEW immutable object (reload = load again and
  swap the reference); a missing or malformed file raises `PoolListError` with a
  one-line message naming file:line, never anything else;
- `match(name)` is a suffix match on label boundaries ("eu1.nanopool.org" and
  "nanopool.org" match "nanopool.org"; "notnanopool.org" does not), case-insensitive,
  ignoring a trailing dot and a ":port"; it returns the matched entry or None and
  never raises (non-strings give None). Cost: one set lookup per label.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterable

_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?\Z")
SOURCE_RULES = Path(__file__).resolve().parents[2] / "rules"
INSTALLED_RULES = Path("/etc/egress/rules")


def rules_file(name: str, directories: Iterable[Path] = (SOURCE_RULES, INSTALLED_RULES)) -> Path:
    """Where a shipped data list lives: the source tree's rules/ (a checkout, an editable
    install), else /etc/egress/rules (the appliance image; a non-editable install has no
    rules/ beside the package). The first directory that has the file wins; when none
    has it, the source-tree path, so that the load error names where it was expected."""
    directories = tuple(directories)
    for directory in directories:
        if (directory / name).is_file():
            return directory / name
    return directories[0] / name


DEFAULT_PATH = rules_file("pools.txt")


class PoolListError(ValueError):
    """A pool list that cannot be loaded (one line: 'file:line: reason')."""


def normalize(name: Any) -> str:
    """Lower-case host name without trailing dot, port or surrounding blanks ('' if unusable)."""
    if isinstance(name, bytes):
        try:
            name = name.decode("ascii")
        except UnicodeDecodeError:
            return ""
    if not isinstance(name, str) or len(name) > 300:
        return ""
    name = name.strip().lower()
    if name.startswith("["):                # an IPv6 literal Host header
        return ""
    if ":" in name:
        name = name.split(":", 1)[0]
    return name.rstrip(".")


_UNSEEN = object()
_MEMO_MAX = 4096


class PoolDomains:
    """An immutable set of pool domain suffixes."""
    __slots__ = ("_suffixes", "source", "_memo")

    def __init__(self, suffixes: Iterable[str] = (), source: str = "<memory>"):
        object.__setattr__(self, "_suffixes", frozenset(normalize(s) for s in suffixes if normalize(s)))
        object.__setattr__(self, "source", source)
        # str name -> match(name): the same hosts come again and again (the TLS, HTTP and
        # DNS names of a sandbox's flows), and the answer is a pure function of the name
        # and the immutable suffixes. Emptied when full.
        object.__setattr__(self, "_memo", {})

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("PoolDomains is immutable; load a new one")

    def __len__(self) -> int:
        return len(self._suffixes)

    def __contains__(self, name: object) -> bool:
        return self.match(name) is not None

    @property
    def suffixes(self) -> frozenset[str]:
        return self._suffixes

    @classmethod
    def load(cls, path: str | Path = DEFAULT_PATH) -> "PoolDomains":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PoolListError("%s: cannot read pool list: %s" % (path, exc.__class__.__name__)) from None
        entries = []
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            name = normalize(line)
            if " " in line or not name or "." not in name or \
                    not all(_LABEL.match(label) for label in name.split(".")):
                raise PoolListError("%s:%d: not a domain name: %r" % (path, number, line[:80]))
            entries.append(name)
        return cls(entries, str(path))

    def match(self, name: Any) -> str | None:
        """The pool entry `name` falls under, or None (remembered per str name)."""
        if type(name) is not str:
            return self._match(name)
        memo = self._memo
        found = memo.get(name, _UNSEEN)
        if found is _UNSEEN:
            found = self._match(name)
            if len(memo) >= _MEMO_MAX:
                memo.clear()
            memo[name] = found
        return found

    def _match(self, name: Any) -> str | None:
        name = normalize(name)
        if not name:
            return None
        suffixes = self._suffixes
        while True:
            if name in suffixes:
                return name
            dot = name.find(".")
            if dot < 0:
                return None
            name = name[dot + 1:]
