"""YAML (and JSON) loading that remembers where every value came from.

Guarantees:
- `load_yaml(path, text)` returns plain Python data in which every mapping is an
  `LMap` and every sequence an `LList`: ordinary dict/list subclasses that also carry
  the 1-based line of the container, of each key and of each value/item. Validation
  can therefore report any problem as `file:line: reason`.
- It never raises anything but `PolicyError`: YAML syntax errors, duplicate keys (which
  PyYAML would silently overwrite), non-string keys, tags that are not plain data
  (`!!python/...`) and unreadable files all become one located error.
- `PolicyError` carries a list of `(file, line, reason)`; `str()` renders one
  `file:line: reason` per line (line omitted when unknown, e.g. a missing file).
"""
from __future__ import annotations

import difflib
from typing import Any, Iterable

import yaml


class PolicyError(ValueError):
    """Invalid rules, sandbox map or policy input; `errors` lists (file, line, reason).

    A ValueError, so callers that treat bad input as ValueError/OSError catch it too.
    """

    def __init__(self, errors: Iterable[tuple[str, int | None, str]] | str):
        if isinstance(errors, str):
            errors = [("", None, errors)]
        self.errors: list[tuple[str, int | None, str]] = list(errors)
        super().__init__(str(self))

    def lines(self) -> list[str]:
        out = []
        for path, line, reason in self.errors:
            if path and line:
                out.append("%s:%d: %s" % (path, line, reason))
            elif path:
                out.append("%s: %s" % (path, reason))
            else:
                out.append(reason)
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class LMap(dict):
    """A dict that knows its line and the lines of its keys and values."""
    line = 0

    def __init__(self) -> None:
        super().__init__()
        self.key_lines: dict[Any, int] = {}
        self.value_lines: dict[Any, int] = {}

    def key_line(self, key: Any) -> int:
        return self.key_lines.get(key, self.line)

    def value_line(self, key: Any) -> int:
        return self.value_lines.get(key, self.key_line(key))


class LList(list):
    """A list that knows its line and the line of each item."""
    line = 0

    def __init__(self) -> None:
        super().__init__()
        self.item_lines: list[int] = []

    def item_line(self, index: int) -> int:
        return self.item_lines[index] if index < len(self.item_lines) else self.line


class _Loader(yaml.SafeLoader):
    """SafeLoader building LMap/LList; collects duplicate keys instead of overwriting."""

    def __init__(self, stream: str, path: str):
        super().__init__(stream)
        self.path = path
        self.problems: list[tuple[str, int | None, str]] = []


def _construct_map(loader: _Loader, node: yaml.MappingNode) -> LMap:
    loader.flatten_mapping(node)
    out = LMap()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            loader.problems.append((loader.path, line, "key %r must be a string" % (key,)))
            key = str(key)
        if key in out:
            loader.problems.append((loader.path, line, "duplicate key '%s' (first at line %d)"
                                    % (key, out.key_lines[key])))
            continue
        out[key] = loader.construct_object(value_node, deep=True)
        out.key_lines[key] = line
        out.value_lines[key] = value_node.start_mark.line + 1
    return out


def _construct_seq(loader: _Loader, node: yaml.SequenceNode) -> LList:
    out = LList()
    out.line = node.start_mark.line + 1
    for item in node.value:
        out.append(loader.construct_object(item, deep=True))
        out.item_lines.append(item.start_mark.line + 1)
    return out


_Loader.add_constructor("tag:yaml.org,2002:map", _construct_map)
_Loader.add_constructor("tag:yaml.org,2002:seq", _construct_seq)


def load_yaml(path: str, text: str | bytes) -> Any:
    """Parse one YAML/JSON document with line information; PolicyError on any problem."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PolicyError([(path, None, "not UTF-8 text (byte %d)" % e.start)]) from None
    loader = None
    try:
        loader = _Loader(text, path)       # the reader already rejects control characters here
        data = loader.get_single_data()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark is not None else None
        reason = " ".join(x for x in (e.context, e.problem) if x) or "invalid YAML"
        raise PolicyError([(path, line, "invalid YAML: %s" % reason)]) from None
    except yaml.YAMLError as e:
        line = None
        if isinstance(e, yaml.reader.ReaderError):
            line = text.count("\n", 0, e.position) + 1
            reason = "invalid YAML: character %#x is not allowed" % e.character if isinstance(e.character, int) \
                else "invalid YAML: %s" % e.reason
        else:
            reason = "invalid YAML: %s" % (str(e).splitlines() or ["error"])[0]
        raise PolicyError([(path, line, reason)]) from None
    except RecursionError:
        raise PolicyError([(path, None, "invalid YAML: nested too deeply")]) from None
    except (ValueError, TypeError) as e:
        # PyYAML's own constructors can fail on odd scalars (int("0x_") for "0x_").
        line = loader.get_mark().line + 1 if loader is not None else None
        raise PolicyError([(path, line, "invalid YAML value: %s" % e)]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if loader.problems:
        raise PolicyError(loader.problems)
    return data


def read_source(path: str) -> bytes:
    """File bytes, or PolicyError with the OS reason."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise PolicyError([(str(path), None, "cannot read: %s" % (e.strerror or e))]) from None


# Words people reach for, by what they usually mean here.
_SYNONYMS = {"threshold": "min_score", "score": "min_score", "min_confidence": "min_score",
             "cidr": "cidrs", "networks": "cidrs", "iface": "interfaces", "interface": "interfaces",
             "port": "ports", "destination": "dest", "dst": "dest", "source": "src", "protocol": "proto",
             "domain": "domains", "hosts": "domains", "sni": "domains", "category": "categories",
             "signature": "signatures", "app": "app_proto", "ipversion": "ip_version", "class": "classifier",
             "default_action": "default", "rule": "rules"}


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for a close match, a known synonym or reordered words, else ''."""
    choices = list(choices)
    word = str(word)
    hint = _SYNONYMS.get(word.lower())
    if hint not in choices:
        tokens = sorted(word.lower().replace("-", "_").split("_"))
        hint = next((c for c in choices if sorted(c.split("_")) == tokens), None)
    if hint is None:
        close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
        hint = close[0] if close else None
    return " (did you mean '%s'?)" % hint if hint else ""
