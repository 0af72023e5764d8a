"""The registry of resource kinds.

Every kind lives in its own module under ``stackhop.kinds`` and is listed in
:data:`KIND_MODULES`; importing the module registers the kind (the module ends
with ``register(MyKind)`` or decorates the class with ``@register``). Lookups
import the listed modules on first use, so ``get("nova.keypair")`` works
without the caller importing anything.
"""

from __future__ import annotations

import graphlib
import importlib
import threading
from collections.abc import Iterable
from typing import TypeVar

from stackhop.errors import ConfigError
from stackhop.kinds.base import DataKind, Difference, Kind, Record

__all__ = [
    "KIND_MODULES",
    "DataKind",
    "Difference",
    "Kind",
    "Record",
    "all_kinds",
    "dependency_levels",
    "get",
    "register",
]

#: The table of kind modules, in the order `stackhop --help` lists them. A new
#: kind is one module here plus its file.
KIND_MODULES: tuple[str, ...] = ("keypair", "quota", "security_group", "image")

_registry: dict[str, Kind] = {}
_lock = threading.Lock()
_loaded = False

K = TypeVar("K", bound=type[Kind])


def register(kind_class: K) -> K:
    """Register a kind class (usable as a class decorator); its name must be unique."""
    with _lock:
        name = kind_class.name
        known = _registry.get(name)
        if known is not None and type(known) is not kind_class:
            raise ValueError(f"kind {name!r} is registered twice: {type(known)} and {kind_class}")
        _registry[name] = kind_class()
    return kind_class


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in KIND_MODULES:
        importlib.import_module(f"{__name__}.{module}")
    _loaded = True


def get(name: str) -> Kind:
    """The kind called ``name``; ConfigError listing the known kinds if there is none."""
    _load()
    try:
        return _registry[name]
    except KeyError:
        known = ", ".join(sorted(_registry)) or "none"
        raise ConfigError(f"unknown resource kind {name!r}; known kinds: {known}") from None


def all_kinds() -> list[Kind]:
    """Every registered kind, in dependency order (referenced kinds first)."""
    _load()
    return [kind for level in dependency_levels(_registry.values()) for kind in level]


def dependency_levels(kinds: Iterable[Kind]) -> list[list[Kind]]:
    """Group ``kinds`` into levels: each level depends only on earlier ones.

    Only references among the given kinds count: a reference to a kind that
    is not being moved (``identity.user``) is resolved through a map, not by
    ordering. Kinds within a level are sorted by name. A cycle is a ConfigError.
    """
    by_name = {kind.name: kind for kind in kinds}
    sorter: graphlib.TopologicalSorter[str] = graphlib.TopologicalSorter()
    for kind in by_name.values():
        sorter.add(kind.name, *(dep for dep in kind.dependencies() if dep in by_name))
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        raise ConfigError(f"resource kinds refer to each other in a cycle: {exc.args[1]}") from exc
    levels = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        levels.append([by_name[name] for name in ready])
        sorter.done(*ready)
    return levels
