"""Volume passes as engine tasks: the rows the engine and the pass write, resume, adoption.

A scripted method (no cloud) on a real SQLite journal: what a pass reports
must end up in the row the engine journals (facts of a ``done`` pass, the
destination of an interrupted one), an interrupted pass must resume with its
destination volume, and a pass whose ``done`` write was lost is adopted by
``find`` without copying again.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import pytest

from stackhop.engine import Engine
from stackhop.errors import StackhopError
from stackhop.events import CollectingSink, NullSink
from stackhop.journal import DONE, FAILED, PENDING, Journal
from stackhop.resolve import Resolver
from stackhop.volumes.copy import KIND, plan_volume, scope_of
from stackhop.volumes.model import PassContext, PassResult, Temporary, VolumeRef
from stackhop.volumes.passes import operation_of
from stackhop.volumes.reshape import Reshape
from stackhop.volumes.temporaries import KIND as TEMPORARY_KIND
from stackhop.volumes.temporaries import TemporaryLedger

SCOPE = scope_of("src", "dst")


@dataclass
class Scripted:
    """A method whose pass goes as far as ``fail_at`` (then raises) or to ``verified``."""

    name: ClassVar[str] = "scripted"
    fail_at: str | None = None
    seen_destinations: list[str | None] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def check(self, *args: Any) -> None:
        return None

    def copy_pass(self, ctx: PassContext) -> PassResult:
        self.seen_destinations.append(ctx.destination_id)
        temporary = Temporary("scripted", "snapshot", "src", f"snap-{ctx.source.id}")
        ctx.created(temporary)
        ctx.stage("exported", snapshot=temporary.name)
        if self.fail_at == "exported":
            raise StackhopError("the export broke off")
        ctx.stage("imported", destination_id=f"dst-{ctx.source.id}")
        ctx.on_progress(512, 1024)
        if self.fail_at == "imported":
            raise StackhopError("the import broke off")
        ctx.on_progress(1024, 1024)
        ctx.removed(temporary)
        ctx.stage("adopted")
        ctx.stage("verified", matched=True)
        return PassResult(f"dst-{ctx.source.id}", bytes_read=1024, bytes_sent=1024,
                          bytes_wire=700, content_digest="d" * 64)  # fmt: skip

    def remove_temporary(self, temporary: Temporary, *args: Any) -> None:
        self.removed.append(temporary.name)

    def forget_incremental(self, state: Mapping[str, Any], *args: Any) -> None:
        return None


class Volumes:
    """The destination's Cinder, as ``find`` asks it."""

    def __init__(self, existing: set[str]) -> None:
        self.existing = existing

    def find_volume(self, volume_id: str, ignore_missing: bool = True) -> object | None:
        return SimpleNamespace(id=volume_id) if volume_id in self.existing else None


def _host(journal: Journal, method: Scripted, existing: set[str] | None = None) -> Any:
    return SimpleNamespace(
        scope=SCOPE, method=method, ledger=TemporaryLedger(journal, SCOPE), storage=None,
        events=NullSink(), source_conn=None,
        destination_conn=SimpleNamespace(block_storage=Volumes(existing or set())),
        backup_to=None, reshape=Reshape(), destination_cloud="dst",
        destination_project_conn=None, incremental=False, final=False,
    )  # fmt: skip


VOLUME = VolumeRef(cloud="src", id="v1", name="data", size_gib=1, project_id="p",
                   status="available")  # fmt: skip


def _run(journal: Journal, method: Scripted, existing: set[str] | None = None) -> Any:
    host = _host(journal, method, existing)
    planned = plan_volume(journal, SCOPE, VOLUME, False, "dp", None)
    events = CollectingSink()
    engine = Engine(journal, host.destination_conn, Resolver(SCOPE, journal=journal),
                    scope=SCOPE, workers=1, events=events)  # fmt: skip
    result = engine.run([operation_of(host, planned)], command="volumes copy")
    return planned, result, events


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.sqlite")


def test_a_pass_fails_with_its_destination_then_resumes_with_it_and_is_done(
    journal: Journal,
) -> None:
    failing = Scripted(fail_at="imported")
    _, first, _ = _run(journal, failing)
    assert first.failed == 1
    row = journal.operation(SCOPE, KIND, "v1")
    assert row is not None and row.state == FAILED and "the import broke off" in (row.error or "")
    # What the pass reported before it broke: its stage, facts, destination and progress.
    assert row.stage == "imported" and row.before["stage"] == "imported"
    assert row.destination_id == "dst-v1" and (row.progress or {}).get("done") == 512
    assert failing.removed == ["snap-v1"], "a failed attempt removes its temporaries"
    assert journal.operations(scope=SCOPE, kind=TEMPORARY_KIND, state=PENDING) == []

    method = Scripted()
    planned, second, events = _run(journal, method)
    assert planned.action == "copy" and planned.resume is not None
    assert method.seen_destinations == ["dst-v1"], "the resumed pass reuses its volume"
    row = journal.operation(SCOPE, KIND, "v1")
    assert row is not None and row.state == DONE and row.attempts == 2
    assert row.run_id == second.run_id and row.action == "copy"
    assert row.stage == "verified" and row.progress == {"done": 1024, "total": 1024,
                                                        "unit": "bytes"}  # fmt: skip
    facts = row.before
    assert facts["stage"] == "verified" and facts["content_digest"] == "d" * 64
    assert facts["bytes_sent"] == 1024 and facts["pass"] == 1 and facts["method"] == "scripted"
    assert set(facts["stages"]) == {"exported", "imported", "adopted", "verified"}
    assert journal.mapped_id(SCOPE, KIND, "v1") == "dst-v1"
    assert [e.identity for e in events.events if e.type.name == "OPERATION_FINISHED"] == ["data"]

    again, third, _ = _run(journal, Scripted())
    assert again.action == "skip" and third.count("skipped") == 1


def test_a_pass_whose_done_was_lost_is_adopted_without_copying(journal: Journal) -> None:
    # An attempt that reported ``verified`` and died before the engine wrote ``done``.
    run = journal.start_run("volumes copy").id
    journal.transition(run, SCOPE, KIND, "v1", PENDING, action="copy", expected=None,
                       source_id="v1", destination_id="dst-v1", attempt=True,
                       before={"pass": 1, "stage": "verified",
                               "content_digest": "d" * 64})  # fmt: skip
    method = Scripted()
    _, result, _ = _run(journal, method, existing={"dst-v1"})
    assert method.seen_destinations == [], "adopted: the method is not called"
    row = journal.operation(SCOPE, KIND, "v1")
    assert row is not None and row.state == DONE and row.destination_id == "dst-v1"
    assert row.run_id == result.run_id and row.before["content_digest"] == "d" * 64

    # The same, but the destination volume is gone: the pass runs again.
    journal.transition(run, SCOPE, KIND, "v2", PENDING, action="copy", expected=None,
                       source_id="v2", destination_id="dst-v2", attempt=True,
                       before={"pass": 1, "stage": "verified"})  # fmt: skip
    other = VolumeRef(cloud="src", id="v2", name="", size_gib=1, project_id="p",
                      status="available")  # fmt: skip
    method = Scripted()
    host = _host(journal, method)
    engine = Engine(journal, host.destination_conn, Resolver(SCOPE, journal=journal),
                    scope=SCOPE, workers=1)  # fmt: skip
    planned = plan_volume(journal, SCOPE, other, False, "dp", None)
    engine.run([operation_of(host, planned)], command="volumes copy")
    assert method.seen_destinations == ["dst-v2"]
    done = journal.operation(SCOPE, KIND, "v2")
    assert done is not None and done.state == DONE and done.attempts == 2
