"""How a destination volume may differ from its source: its type and its size.

``--type-map SRC_TYPE=DST_TYPE`` (repeatable; or a YAML file ``{src type: dst type}``)
names the destination type of the source's volumes of a type; a type it does
not name keeps its name. ``--min-size GIB`` and ``--grow-to NAME_OR_ID=GIB``
make destination volumes larger than their sources: the copy is made and
verified at the source's size, then Cinder extends the destination volume. The
file system inside is the user's: growing it is theirs to do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import ConfigError, UsageError
from stackhop.mapfile import parse_pairs, read_mapping
from stackhop.volumes.model import VolumeRef


def _type_map_file(path: str) -> list[tuple[str, str]]:
    data = read_mapping(path, "type map", "map source type names to destination type names")
    if not all(
        isinstance(k, str) and isinstance(v, str) for k, v in data.items()
    ):
        raise ConfigError(f"type map {path} must map source type names to destination type names")
    return list(data.items())


def parse_type_map(values: Sequence[str]) -> dict[str, str]:
    """``--type-map`` values (``SRC=DST`` pairs or YAML files) as one map; no type mapped twice."""
    result: dict[str, str] = {}
    for value in values:
        pairs = parse_pairs([value], "--type-map") if "=" in value else _type_map_file(value)
        for source, destination in pairs:
            if result.get(source, destination) != destination:
                raise UsageError(
                    f"--type-map maps volume type {source!r} to both {result[source]!r} and "
                    f"{destination!r}; keep one"
                )
            result[source] = destination
    return result


def parse_grow_to(values: Sequence[str]) -> dict[str, int]:
    """``--grow-to NAME_OR_ID=GIB`` values."""
    result: dict[str, int] = {}
    for volume, size in parse_pairs(values, "--grow-to"):
        if not size.isdigit() or int(size) < 1:
            raise UsageError(f"--grow-to {volume}={size}: the size is a whole number of GiB")
        result[volume] = int(size)
    return result


@dataclass(frozen=True)
class Reshape:
    """The destination's type and size of each volume, from the operator's options."""

    type_map: Mapping[str, str] = field(default_factory=dict)
    min_size_gib: int = 0
    grow_to: Mapping[str, int] = field(default_factory=dict)

    def target_gib(self, volume: VolumeRef) -> int:
        """The destination volume's size: never below the source's."""
        asked = self.grow_to.get(volume.id, self.grow_to.get(volume.name or "", 0))
        return max(volume.size_gib, self.min_size_gib, asked)

    def check(self, volumes: Sequence[VolumeRef]) -> None:
        """Refuse what names no selected volume or would shrink one, before anything moves."""
        for key, size in self.grow_to.items():
            named = [v for v in volumes if key in (v.id, v.name)]
            if not named:
                raise UsageError(f"--grow-to {key}={size}: no selected volume has that name or ID")
            for volume in named:
                if size < volume.size_gib:
                    raise UsageError(
                        f"--grow-to {key}={size}: {volume.label} has {volume.size_gib} GiB and "
                        "a volume cannot shrink"
                    )

    def sized(self, volumes: Iterable[VolumeRef]) -> list[VolumeRef]:
        """The volumes as the destination will hold them (for the quota check)."""
        return [dataclasses.replace(v, size_gib=self.target_gib(v)) for v in volumes]

    def as_args(self) -> dict[str, Any]:
        return {
            "type_map": dict(self.type_map),
            "min_size_gib": self.min_size_gib,
            "grow_to": dict(self.grow_to),
        }
