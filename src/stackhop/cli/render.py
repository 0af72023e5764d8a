"""Renderers: turn progress events into what a person or a program reads.

Library code emits :class:`~stackhop.events.Event` objects and never prints
(DESIGN: "Events, not prints"). The CLI subscribes one renderer, chosen by
:func:`make_renderer`:

- :class:`ProgressRenderer` on a terminal: rich progress bars, one per kind
  with counts, rate and ETA, and one per data transfer in bytes/s; warnings,
  retries and failures print above the bars.
- :class:`PlainRenderer` when the stream is not a terminal (a log file, CI):
  one line per finished operation, warning and retry, byte progress at most
  every ``progress_interval`` seconds per transfer, and a summary.
- :class:`JsonRenderer` for ``--log-json``: one JSON object per event.

Renderers print only event fields, and scrub those too: a detail field named
like a secret and the password of a URL (``mysql://nova:pw@host``) are
replaced by ``***`` so a careless emitter cannot leak one.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import Counter
from types import TracebackType
from typing import IO, Any, Self

from rich.console import Console
from rich.filesize import decimal
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from stackhop.archive import is_secret_key
from stackhop.events import Event, EventType

REDACTED = "***"
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][\w+.-]*://[^/\s:@]*:)[^/\s@]+@")

# --------------------------------------------------------------------------- scrubbing


def scrub_text(text: str) -> str:
    """Hide the password part of every URL in ``text``."""
    return _URL_PASSWORD.sub(lambda m: f"{m.group('head')}{REDACTED}@", text)


def scrub(value: Any) -> Any:
    """A copy of ``value`` with secret-named fields and URL passwords hidden."""
    if isinstance(value, dict):
        return {
            key: REDACTED
            if isinstance(key, str) and is_secret_key(key) and value[key] not in (None, "")
            else scrub(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    if isinstance(value, str):
        return scrub_text(value)
    return value


def _words(event: Event) -> str:
    """``kind identity (operation)``, leaving out what the event lacks."""
    parts = [p for p in (event.kind, event.identity) if p]
    text = " ".join(parts)
    if event.operation:
        text = f"{text} ({event.operation})" if text else event.operation
    return scrub_text(text)


def _join(*parts: str | None) -> str:
    """``label: where: message`` without empty parts."""
    return ": ".join(p for p in parts if p)


def _amount(value: int | None, unit: str) -> str:
    if value is None:
        return "?"
    return decimal(value) if unit == "bytes" else f"{value:,}"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


class _Tally:
    """Counts outcomes and times the run, for the closing summary."""

    def __init__(self) -> None:
        self.outcomes: Counter[str] = Counter()
        self.warnings = 0
        self.retries = 0
        self.started: float | None = None

    def note(self, event: Event) -> None:
        if event.type is EventType.RUN_STARTED:
            self.started = event.timestamp
        elif event.type is EventType.OPERATION_FINISHED:
            self.outcomes[event.outcome or "done"] += 1
        elif event.type is EventType.WARNING:
            self.warnings += 1
        elif event.type is EventType.RETRY:
            self.retries += 1

    def summary(self, event: Event) -> str:
        order = ("done", "skipped", "conflict", "failed")
        known = [f"{self.outcomes[o]} {o}" for o in order if self.outcomes[o]]
        known += [f"{n} {o}" for o, n in sorted(self.outcomes.items()) if o not in order]
        parts = [", ".join(known) or "nothing to do"]
        if self.warnings:
            parts.append(f"{self.warnings} warning(s)")
        if self.retries:
            parts.append(f"{self.retries} retr{'y' if self.retries == 1 else 'ies'}")
        text = "; ".join(parts)
        if self.started is not None:
            text += f" in {_duration(max(event.timestamp - self.started, 0.0))}"
        outcome = f"run {event.outcome}" if event.outcome else "run finished"
        run = f" (run {event.run_id})" if event.run_id else ""
        return f"{outcome}{run}: {text}"


# --------------------------------------------------------------------------- renderers


class Renderer:
    """Base: an :class:`~stackhop.events.EventSink` that must be closed at the end."""

    def __init__(self) -> None:
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self._render(event)

    __call__ = emit  # so a renderer can be handed to EventBus.subscribe

    def _render(self, event: Event) -> None:
        raise TypeError(f"{type(self).__name__} does not render events")

    def close(self) -> None:
        """Finish the output (stop live displays, flush)."""
        return None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class JsonRenderer(Renderer):
    """One JSON object per event, one per line (``--log-json``)."""

    def __init__(self, stream: IO[str]) -> None:
        super().__init__()
        self.stream = stream

    def _render(self, event: Event) -> None:
        line = json.dumps(scrub(event.as_dict()), default=str, ensure_ascii=False)
        self.stream.write(line + "\n")
        self.stream.flush()


class PlainRenderer(Renderer):
    """Plain lines for logs: finished operations, warnings, retries, a summary."""

    def __init__(
        self,
        stream: IO[str],
        *,
        progress_interval: float = 30.0,
        clock: Any = time.monotonic,
    ) -> None:
        super().__init__()
        self.stream = stream
        self.progress_interval = progress_interval
        self._clock = clock
        self._last_progress: dict[tuple[str | None, str | None], float] = {}
        self._tally = _Tally()

    def _line(self, text: str) -> None:
        self.stream.write(text + "\n")
        self.stream.flush()

    def _render(self, event: Event) -> None:
        self._tally.note(event)
        message = scrub_text(event.message) if event.message else None
        kind = event.type
        if kind is EventType.RUN_STARTED:
            run = f"run {event.run_id}" if event.run_id else "run"
            self._line(f"{run}: {_amount(event.total, 'items')} operation(s)")
        elif kind is EventType.OPERATION_FINISHED:
            self._last_progress.pop((event.kind, event.identity), None)
            self._line(_join(event.outcome or "done", _words(event), message))
        elif kind is EventType.RETRY:
            delay = event.detail.get("delay")
            after = f" (retrying in {delay}s)" if isinstance(delay, int | float) else ""
            self._line(_join("retry", _words(event), message or "transient failure") + after)
        elif kind is EventType.WARNING:
            self._line(_join("warning", _words(event), message))
        elif kind is EventType.INFO and message:
            self._line(message)
        elif kind is EventType.PROGRESS and event.unit == "bytes":
            self._progress(event)
        elif kind is EventType.RUN_FINISHED:
            self._line(self._tally.summary(event))

    def _progress(self, event: Event) -> None:
        key = (event.kind, event.identity)
        now = self._clock()
        first = key not in self._last_progress
        if not first and now - self._last_progress[key] < self.progress_interval:
            return
        self._last_progress[key] = now
        done = _amount(event.done, "bytes")
        if event.total:
            share = f" ({100 * (event.done or 0) // event.total}%)"
            self._line(f"progress: {_words(event)}: {done} of {decimal(event.total)}{share}")
        else:
            self._line(f"progress: {_words(event)}: {done}")


class _CountColumn(ProgressColumn):
    """``12/40`` for items, ``1.2 GB/4.0 GB`` for bytes."""

    def render(self, task: Task) -> Text:
        unit = task.fields.get("unit", "items")
        total = None if task.total is None else int(task.total)
        return Text(f"{_amount(int(task.completed), unit)}/{_amount(total, unit)}")


class _RateColumn(ProgressColumn):
    """Items/s for kinds, bytes/s for transfers."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if speed is None:
            return Text("")
        if task.fields.get("unit") == "bytes":
            return Text(f"{decimal(int(speed))}/s")
        return Text(f"{speed:,.1f}/s")


class ProgressRenderer(Renderer):
    """Rich progress bars on a terminal: one per kind, one per running data transfer."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            _CountColumn(),
            _RateColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._kinds: dict[str, Any] = {}
        self._transfers: dict[tuple[str | None, str | None], Any] = {}
        self._tally = _Tally()
        self._started = False

    def _start(self) -> None:
        if not self._started:
            self.progress.start()
            self._started = True

    def _kind_task(self, kind: str, total: int | None = None) -> Any:
        task = self._kinds.get(kind)
        if task is None:
            task = self.progress.add_task(escape(kind), total=total, unit="items")
            self._kinds[kind] = task
        elif total is not None:
            self.progress.update(task, total=total)
        return task

    def _print(self, text: str, style: str) -> None:
        self.progress.console.print(Text(text, style=style))

    def _render(self, event: Event) -> None:
        self._tally.note(event)
        self._start()
        message = scrub_text(event.message) if event.message else None
        kind = event.type
        if kind is EventType.KIND_STARTED and event.kind:
            self._kind_task(event.kind, event.total)
        elif kind is EventType.OPERATION_FINISHED:
            if event.kind:
                self.progress.advance(self._kind_task(event.kind))
            transfer = self._transfers.pop((event.kind, event.identity), None)
            if transfer is not None:
                self.progress.remove_task(transfer)
            if event.outcome in ("failed", "conflict"):
                self._print(_join(event.outcome, _words(event), message), "red")
        elif kind is EventType.PROGRESS:
            self._transfer(event)
        elif kind is EventType.RETRY:
            self._print(_join("retry", _words(event), message or "transient failure"), "yellow")
        elif kind is EventType.WARNING:
            self._print(_join("warning", _words(event), message), "yellow")
        elif kind is EventType.INFO and message:
            self._print(message, "")
        elif kind is EventType.RUN_FINISHED:
            self._stop()
            style = "green" if event.outcome in (None, "done", "succeeded", "ok") else "bold"
            self.console.print(Text(self._tally.summary(event), style=style))

    def _transfer(self, event: Event) -> None:
        if event.unit != "bytes":  # item progress inside one operation: show on its kind
            if event.kind and event.total is not None:
                self._kind_task(event.kind, event.total)
            return
        key = (event.kind, event.identity)
        task = self._transfers.get(key)
        if task is None:
            label = escape(f"  {event.identity or event.kind or 'data'}")
            task = self.progress.add_task(label, total=event.total, unit="bytes")
            self._transfers[key] = task
        self.progress.update(task, completed=event.done or 0, total=event.total)

    def _stop(self) -> None:
        if self._started:
            self.progress.stop()
            self._started = False

    def close(self) -> None:
        with self._lock:
            self._stop()


def make_renderer(json: bool, stream: IO[str] | None = None) -> Renderer:
    """The renderer for this invocation: JSON lines, progress bars, or plain lines.

    Progress goes to ``stream`` (stderr by default), keeping stdout for the
    command's data (``-f json``).
    """
    out = stream if stream is not None else sys.stderr
    if json:
        return JsonRenderer(out)
    if out.isatty():
        return ProgressRenderer(Console(file=out))
    return PlainRenderer(out)
