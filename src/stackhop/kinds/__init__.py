"""The registry of resource kinds.

Every kind lives in its own module under ``stackhop.kinds`` and registers
itself by decorating its class with ``@register``; the modules are
*discovered*: the first lookup imports every module of this package, so a new
kind is one new file and nothing else lists it. ``get("nova.keypair")`` works
without the caller importing anything.

Everything that enumerates kinds reads this registry: the resource transfer's
kinds (:func:`transfer_kinds`), the CLI selector flags (:func:`selectors`), the
import option flags (:func:`import_options`: ``--keep-segmentation-ids``, and the
flag that lets a mapped kind create, ``--create-volume-types``),
the ``--via db`` dispatch (each kind's ``read_db``) and the list in
``docs/cli.md`` (a unit test compares them).
"""

from __future__ import annotations

import graphlib
import importlib
import pkgutil
import threading
from collections.abc import Iterable
from typing import TypeVar

from stackhop.errors import ConfigError
from stackhop.kinds.base import Difference, ExportScope, Kind, Record

__all__ = [
    "Difference",
    "ExportScope",
    "Kind",
    "Record",
    "all_kinds",
    "dependency_levels",
    "get",
    "import_options",
    "kind_modules",
    "register",
    "selector_dest",
    "selectors",
    "transfer_kinds",
]

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


def kind_modules() -> list[str]:
    """The modules of this package, by name (each may register kinds)."""
    return sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))


def _load() -> None:
    global _loaded
    if _loaded:
        return
    for module in kind_modules():
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


def transfer_kinds() -> list[Kind]:
    """The kinds ``stackhop export|import|migrate`` move, in dependency order."""
    return [kind for kind in all_kinds() if kind.transfer]


def selectors() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every selector flag (without ``--``) -> (help, the kinds it selects), in kind order.

    A flag several kinds declare selects them all; they must agree on its help.
    """
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for kind in transfer_kinds():
        for flag, help_text in kind.selectors.items():
            known = found.get(flag)
            if known is not None and known[0] != help_text:
                raise ValueError(
                    f"selector --{flag}: {kind.name} says {help_text!r}, another kind {known[0]!r}"
                )
            names = (known[1] if known else ()) + (kind.name,)
            found[flag] = (help_text, names)
    return dict(sorted(found.items()))


def import_options() -> dict[str, tuple[str, tuple[str, ...]]]:
    """Every import option flag (without ``--``) -> (help, the kinds that read it).

    A flag several kinds declare must have the same help in each.
    """
    found: dict[str, tuple[str, tuple[str, ...]]] = {}
    for kind in transfer_kinds():
        for flag, help_text in kind.import_options.items():
            known = found.get(flag)
            if known is not None and known[0] != help_text:
                raise ValueError(
                    f"import option --{flag}: {kind.name} says {help_text!r}, another kind "
                    f"{known[0]!r}"
                )
            found[flag] = (help_text, (known[1] if known else ()) + (kind.name,))
    return dict(sorted(found.items()))


def selector_dest(flag: str) -> str:
    """The argparse attribute of a selector flag (``nova-quotas`` -> ``nova_quotas``)."""
    return flag.replace("-", "_")


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
