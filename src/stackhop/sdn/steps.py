"""Journaled steps and site hooks: what makes an SDN command resumable.

A command is a sequence of named steps inside a *cycle*, a journal scope
``sdn.midonet.<command>:<key>#<n>``. A step is ``pending`` in the journal
before it acts and ``done`` (with a short result) after; a re-run of the same
command finds the unfinished cycle and skips its ``done`` steps. The last
step of every cycle is ``complete``; once it is done, the next invocation
starts cycle ``n + 1`` (each step is idempotent, so a fresh cycle over a
finished job changes nothing).

Hooks (``--pre-hook`` / ``--post-hook``) are the site's commands, e.g.
installing packages or restarting the cluster: run with ``sh -c`` before and
after the command's steps, with ``STACKHOP_SDN_STEP`` and ``STACKHOP_SDN_PHASE``
in the environment.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stackhop.errors import StackhopError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import DONE, FAILED, PENDING, Journal
from stackhop.sdn.errors import HookFailedError

STEP_KIND = "sdn.midonet.step"
COMPLETE = "complete"


def _cycle_scope(journal: Journal, command: str, key: str) -> str:
    n = 0
    while True:
        scope = f"sdn.midonet.{command}:{key}#{n}"
        op = journal.operation(scope, STEP_KIND, COMPLETE)
        if op is None or op.state != DONE:
            return scope
        n += 1


def close_open_cycle(journal: Journal, command: str, key: str, run_id: str, outcome: str) -> bool:
    """Close an unfinished cycle of ``command`` (its done steps no longer hold); True if one was.

    A rollback removes what an interrupted ``prepare`` queued: that prepare's
    resume must not skip the groups it had queued, so its cycle is closed.
    """
    scope = _cycle_scope(journal, command, key)
    if not journal.operations(scope=scope, kind=STEP_KIND):
        return False
    op = journal.operation(scope, STEP_KIND, COMPLETE)
    for state in (PENDING, DONE):
        op = journal.transition(run_id, scope, STEP_KIND, COMPLETE, state, action=command,
                                expected=op, destination_id=outcome if state == DONE else None)
    return True


@dataclass
class StepRunner:
    """Runs the steps of one command invocation against the journal."""

    journal: Journal
    command: str
    key: str
    args: Mapping[str, Any] = field(default_factory=dict)
    events: EventSink = field(default_factory=NullSink)

    def __post_init__(self) -> None:
        self.scope = _cycle_scope(self.journal, self.command, self.key)
        self.run_id = self.journal.start_run(
            f"sdn midonet {self.command}", args={"key": self.key, **self.args}
        ).id
        self.results: dict[str, str] = {}
        self._emit(EventType.INFO, message=f"{self.command}: journal scope {self.scope}")

    def _emit(self, type_: EventType, **fields: Any) -> None:
        self.events.emit(Event(type_, kind=STEP_KIND, run_id=self.run_id, **fields))

    def previous(self, name: str) -> str | None:
        """The recorded result of a step done in this cycle (None: not done)."""
        op = self.journal.operation(self.scope, STEP_KIND, name)
        return op.destination_id if op is not None and op.state == DONE else None

    def step(self, name: str, action: Callable[[], str]) -> str:
        """Run ``action`` unless this cycle already did; journal it; return its result."""
        op = self.journal.operation(self.scope, STEP_KIND, name)
        if op is not None and op.state == DONE:
            result = op.destination_id or ""
            self._emit(EventType.OPERATION_FINISHED, identity=name, outcome="skipped",
                       message=f"already done: {result}")
            self.results[name] = result
            return result
        self._emit(EventType.OPERATION_STARTED, identity=name)
        op = self.journal.transition(
            self.run_id, self.scope, STEP_KIND, name, PENDING,
            action=self.command, expected=op, attempt=True,
        )
        try:
            result = action()
        except BaseException as exc:
            message = (
                exc.message if isinstance(exc, StackhopError) else f"{type(exc).__name__}: {exc}"
            )
            self.journal.transition(
                self.run_id, self.scope, STEP_KIND, name, FAILED,
                action=self.command, expected=op, error=message,
            )
            self._emit(EventType.OPERATION_FINISHED, identity=name, outcome="failed",
                       message=message)
            raise
        self.journal.transition(
            self.run_id, self.scope, STEP_KIND, name, DONE,
            action=self.command, expected=op, destination_id=result,
        )
        self._emit(EventType.OPERATION_FINISHED, identity=name, outcome="done", message=result)
        self.results[name] = result
        return result

    def complete(self, outcome: str = "ok") -> None:
        """Close the cycle: the next invocation starts afresh."""
        self.step(COMPLETE, lambda: outcome)

    def finish(self, outcome: str) -> None:
        self.journal.finish_run(self.run_id, outcome)
        self._emit(EventType.RUN_FINISHED, outcome=outcome)


def run_hook(
    command: str | None, *, which: str, step: str, changed: bool, events: EventSink | None = None
) -> None:
    """Run one site hook with ``sh -c``; :class:`HookFailedError` on a non-zero exit.

    Its output becomes an info event (stdout stays the command's data).
    """
    if not command:
        return
    env = {**os.environ, "STACKHOP_SDN_STEP": step, "STACKHOP_SDN_PHASE": which}
    proc = subprocess.run(
        ["sh", "-c", command], env=env, check=False, capture_output=True, text=True
    )
    code = proc.returncode
    output = (proc.stdout + proc.stderr).strip()
    if output and events is not None:
        events.emit(Event(EventType.INFO, kind=STEP_KIND, identity=f"{which}-hook",
                          message=output[-2000:]))
    if code != 0:
        state = (
            " (the step's changes are in place; re-run to repeat the hook)"
            if changed
            else "; nothing was changed"
        )
        raise HookFailedError(which=f"--{which}-hook", command=command, code=code,
                              step=step, state=state)
