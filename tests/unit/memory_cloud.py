"""An in-memory fake of a cloud, and two test kinds that live on it.

These are fakes on purpose: they let the unit tests drive the planner's and
the engine's logic (ordering, retries, resume, adoption, Ctrl-C) through
exact failure scripts that a real cloud cannot produce on demand. The real
kinds are tested against the testbed's OpenStack clouds in their own issues.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from stackhop.kinds.base import Kind, Record

Fault = Callable[[], BaseException]


class MemoryCloud:
    """Objects by ID per kind; scripted faults per (kind, call)."""

    def __init__(self) -> None:
        self.objects: dict[str, dict[str, Record]] = {}
        self.calls: list[tuple[str, str, str]] = []  # (call, kind, name)
        self._faults: dict[tuple[str, str], list[tuple[Fault, bool]]] = {}
        self._hooks: dict[tuple[str, str, str], Callable[[], None]] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        #: A bulk create naming this object is refused as a whole (``refusal()`` raised).
        self.refused_name: str | None = None
        self.refusal: Fault = lambda: ValueError("refused")

    def fail(self, kind: str, call: str, *faults: Fault, after_commit: bool = False) -> None:
        """Make the next calls fail, one fault each; ``after_commit``: the call took effect."""
        self._faults.setdefault((kind, call), []).extend((f, after_commit) for f in faults)

    def on(self, kind: str, call: str, name: str, hook: Callable[[], None]) -> None:
        """Run ``hook`` when ``call`` is made for the object called ``name``."""
        self._hooks[(kind, call, name)] = hook

    def _fault(self, kind: str, call: str) -> tuple[Fault, bool] | None:
        with self._lock:
            queue = self._faults.get((kind, call))
            return queue.pop(0) if queue else None

    def call(self, kind: str, call: str, name: str, effect: Callable[[], Any]) -> Any:
        with self._lock:
            self.calls.append((call, kind, name))
        hook = self._hooks.get((kind, call, name))
        if hook is not None:
            hook()
        fault = self._fault(kind, call)
        if fault is not None and not fault[1]:
            raise fault[0]()
        with self._lock:
            result = effect()
        if fault is not None:
            raise fault[0]()
        return result

    def new_id(self, kind: str) -> str:
        return f"{kind.rsplit('.', 1)[-1]}-dst-{next(self._ids)}"

    def count(self, call: str, kind: str | None = None) -> int:
        return sum(1 for c, k, _ in self.calls if c == call and (kind is None or k == kind))


class MemoryKind(Kind):
    """Shared behaviour of the test kinds: objects have a project, a name and a description."""

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record['project_id']}/{record['name']}"

    def list(self, conn: MemoryCloud, **filters: Any) -> Iterator[Record]:
        yield from (dict(r) for r in conn.objects.get(self.name, {}).values())

    def find(self, conn: MemoryCloud, record: Mapping[str, Any]) -> Record | None:
        def lookup() -> Record | None:
            objects = list(conn.objects.get(self.name, {}).values())
            for obj in objects:  # our own marker first: names may repeat
                if self.marked_source_id(obj.get("description")) == self.source_id(record):
                    return dict(obj)
            for obj in objects:
                if obj["project_id"] == record["project_id"] and obj["name"] == record["name"]:
                    return dict(obj)
            return None

        result: Record | None = conn.call(self.name, "find", record["name"], lookup)
        return result

    def create(self, conn: MemoryCloud, record: Mapping[str, Any]) -> str:
        def effect() -> str:
            new = {f: record.get(f) for f in self.portable_fields}
            new["id"] = conn.new_id(self.name)
            new["description"] = self.stamp(record.get("description"), record)
            conn.objects.setdefault(self.name, {})[new["id"]] = new
            return str(new["id"])

        result: str = conn.call(self.name, "create", record["name"], effect)
        return result

    def update(
        self, conn: MemoryCloud, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        def effect() -> None:
            target = conn.objects[self.name][str(existing["id"])]
            target.update({f: record.get(f) for f in self.portable_fields})

        conn.call(self.name, "update", record["name"], effect)

    def delete(self, conn: MemoryCloud, destination_id: str) -> None:
        conn.call(
            self.name,
            "delete",
            destination_id,
            lambda: conn.objects.get(self.name, {}).pop(destination_id, None),
        )


    def restore(self, conn: MemoryCloud, before: Mapping[str, Any]) -> None:
        def effect() -> None:
            conn.objects[self.name][str(before["id"])].update(before)

        conn.call(self.name, "restore", str(before["id"]), effect)


class Widget(MemoryKind):
    """A kind owned by a user, in a project (like a keypair)."""

    name = "test.widget"
    references = {"owner_id": "identity.user", "project_id": "identity.project"}
    portable_fields = ("name", "size", "owner_id", "project_id")
    source_only_fields = ("created_at",)


class Gadget(MemoryKind):
    """A kind that refers to a widget (like a rule to its security group)."""

    name = "test.gadget"
    references = {"widget_id": "test.widget", "project_id": "identity.project"}
    portable_fields = ("name", "widget_id", "project_id")


class BulkWidget(Widget):
    """A widget whose creates may go many to one request, all or none (like Neutron's bulk
    ``POST``): ``create_many`` is one call ``create_many`` on the cloud."""

    name = "test.bulk_widget"
    bulk_create = True

    def create_many(self, conn: MemoryCloud, records: Any) -> list[str]:
        def effect() -> list[str]:
            made = []
            for record in records:
                new = {f: record.get(f) for f in self.portable_fields}
                new["id"] = conn.new_id(self.name)
                new["description"] = self.stamp(record.get("description"), record)
                made.append(new)
            if any(r["name"] == conn.refused_name for r in records):
                raise conn.refusal()  # refused as a whole: nothing made
            for new in made:
                conn.objects.setdefault(self.name, {})[new["id"]] = new
            return [str(new["id"]) for new in made]

        names = ",".join(str(r["name"]) for r in records)
        result: list[str] = conn.call(self.name, "create_many", names, effect)
        return result


def widget(n: int, *, owner: str = "u-src-1", project: str = "p-1", size: int = 1) -> Record:
    """A source widget record."""
    return {
        "id": f"widget-src-{n}",
        "name": f"w{n}",
        "size": size,
        "owner_id": owner,
        "project_id": project,
        "created_at": "2024-01-01T00:00:00",
    }


def gadget(n: int, widget_id: str, *, project: str = "p-1") -> Record:
    """A source gadget record referring to ``widget_id`` (a source ID)."""
    return {"id": f"gadget-src-{n}", "name": f"g{n}", "widget_id": widget_id, "project_id": project}
