"""The registry of volume copy methods: name -> class implementing VolumeMethod.

Methods are imported when first asked for (by dotted path), so a method whose
module or tools are missing fails with a one-line CapabilityError naming it,
and the others still work.
"""

from __future__ import annotations

import importlib
from typing import Any

from stackhop.errors import CapabilityError, UsageError
from stackhop.volumes.model import VolumeMethod

METHODS: dict[str, str] = {
    "rbd": "stackhop.volumes.rbd:RbdMethod",
    "stream": "stackhop.volumes.stream:StreamMethod",
    "image": "stackhop.volumes.image:ImageMethod",
}
"""Method name -> ``module:Class``."""


def get_method(name: str, **options: Any) -> VolumeMethod:
    """A new instance of method ``name`` with its ``options`` (e.g. the stream method's codec).

    UsageError if unknown or given an option it lacks, CapabilityError if unloadable.
    """
    try:
        target = METHODS[name]
    except KeyError:
        raise UsageError(
            f"unknown volume copy method {name!r}; choose one of {', '.join(METHODS)}"
        ) from None
    module_name, _, class_name = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise CapabilityError(
            f"volume copy method {name!r} is not available in this installation "
            f"({module_name}.{class_name}: {exc}); choose another --method"
        ) from exc
    try:
        method: VolumeMethod = cls(**options)
    except TypeError as exc:
        raise UsageError(
            f"the {name} method takes no option {', '.join(sorted(options))}: {exc}"
        ) from exc
    return method


def supports_incremental(method: VolumeMethod) -> bool:
    """Whether the method can send only what changed (classes say so; default yes)."""
    return bool(getattr(method, "supports_incremental", True))
