"""Reading the operator's map files (ID maps, user/project/network maps, storage map, type map).

Every such file is read by :func:`read_mapping`: YAML (or JSON by its
``.json`` suffix) whose top level must be a mapping, and which is refused with
a one-line :class:`~stackhop.errors.ConfigError` naming the file when it

- cannot be read, or is larger than :data:`MAX_BYTES`;
- is not valid YAML/JSON;
- uses YAML aliases (``*name``): a map needs none, and aliases are how a
  small file expands into gigabytes (a "billion laughs" bomb);
- gives one key twice (PyYAML would silently keep the last: a source mapped
  to two destinations must be an error, not a coin toss);
- is not a mapping at the top.

An empty file is an empty mapping.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from stackhop.errors import ConfigError, UsageError

#: A map file larger than this is refused unread (the largest real ones are a few MB).
MAX_BYTES = 64 * 1024 * 1024


class _MapLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases and with duplicate keys refused."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.MarkedYAMLError(
                problem=f"uses an alias (*{event.anchor}); write the values out instead",
                problem_mark=event.start_mark,
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            seen: set[Any] = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                if key in seen:
                    raise yaml.MarkedYAMLError(
                        problem=f"gives {key!r} twice; keep one entry",
                        problem_mark=key_node.start_mark,
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"gives {key!r} twice; keep one entry")
        result[key] = value
    return result


def _line(exc: Exception) -> str:
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"line {mark.line + 1}: {problem}"
    return " ".join(str(exc).split())


def read_mapping(
    path: str | os.PathLike[str], what: str, shape: str = "be a mapping at the top"
) -> Mapping[str, Any]:
    """The top-level mapping of the map file ``path``; ``what`` names it in errors, ``shape``
    says what it must hold (``"map source IDs to destination IDs"``)."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_BYTES:
            raise ConfigError(
                f"{what} {file} is {size} bytes, more than a map file can be "
                f"({MAX_BYTES} bytes); check the path"
            )
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{what} {file} is not UTF-8 text: {exc.reason}") from exc
    syntax = "JSON" if file.suffix == ".json" else "YAML"
    try:
        if syntax == "JSON":
            data = json.loads(text, object_pairs_hook=_reject_duplicates)
        else:
            data = yaml.load(text, Loader=_MapLoader)  # noqa: S506 - a SafeLoader subclass
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} {file} is not valid {syntax}: {_line(exc)}") from exc
    if data is None:
        return {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{what} {file} must {shape}, not be a {type(data).__name__}")
    return data


def parse_pairs(values: Iterable[str], option: str) -> list[tuple[str, str]]:
    """``SOURCE=DESTINATION`` values of a repeatable option, stripped; UsageError otherwise."""
    pairs = []
    for value in values:
        left, sep, right = value.partition("=")
        if not sep or not left.strip() or not right.strip():
            raise UsageError(f"{option} {value!r}: write SOURCE=DESTINATION")
        pairs.append((left.strip(), right.strip()))
    return pairs
