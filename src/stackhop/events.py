"""Progress events: what library code emits instead of printing.

Library code calls ``emit(Event(...))`` on an :class:`EventSink`; the CLI
subscribes a renderer (progress bars on a terminal, plain lines otherwise,
JSON lines with ``--log-json``). Events never carry secrets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any, Protocol


class EventType(StrEnum):
    RUN_STARTED = "run_started"  # total = number of operations
    KIND_STARTED = "kind_started"  # kind, total = operations of that kind
    OPERATION_STARTED = "operation_started"
    PROGRESS = "progress"  # done/total in units (items or bytes)
    STAGE = "stage"  # a task reached a stage: message names it
    OPERATION_FINISHED = "operation_finished"  # outcome: done / skipped / failed
    RETRY = "retry"  # message names the error, delay in detail
    WARNING = "warning"
    INFO = "info"
    RUN_FINISHED = "run_finished"  # outcome


@dataclass(frozen=True)
class Event:
    type: EventType
    kind: str | None = None
    identity: str | None = None
    operation: str | None = None  # create / update / skip / conflict / copy
    done: int | None = None
    total: int | None = None
    unit: str = "items"  # or "bytes"
    outcome: str | None = None
    message: str | None = None
    run_id: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    timestamp: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["type"] = self.type.value
        return {k: v for k, v in d.items() if v not in (None, {}, "")}


class EventSink(Protocol):
    def emit(self, event: Event) -> None: ...


class EventBus:
    """Fan events out to subscribers; thread-safe, ordered per emitter."""

    def __init__(self) -> None:
        self._subscribers: list[Callable[[Event], None]] = []
        self._lock = threading.Lock()

    def subscribe(self, callback: Callable[[Event], None]) -> None:
        self._subscribers.append(callback)

    def emit(self, event: Event) -> None:
        with self._lock:
            for callback in self._subscribers:
                callback(event)


class NullSink:
    """Discards events; the default for library calls made without a sink."""

    def emit(self, event: Event) -> None:
        return None


class CollectingSink:
    """Keeps every event in a list (for tests and for summaries)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)

    def of_type(self, type_: EventType) -> list[Event]:
        return [e for e in self.events if e.type is type_]
