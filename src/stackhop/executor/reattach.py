"""A coordinator that died leaves its celery run ``running``: the same command reattaches.

The workers go on without the coordinator (they journal every outcome). Re-running
the command looks for a ``running`` celery run of the same command, clouds and
arguments (``--workers``, ``--executor`` and ``--dry-run`` aside) and takes it over
when its coordinator is gone (a process of this host that no longer runs, or not seen
for :data:`COORDINATOR_STALE` seconds by the journal database's clock). The engine then
follows the operations sent already instead of sending them again
(``Engine._start``: rows ``pending`` in the run with a dispatch time), sends the
others, and the run ends as it would have.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from stackhop.errors import ConflictError
from stackhop.executor.names import process_gone, this_process
from stackhop.journal import RUN_RUNNING, Journal, scrub_secrets

#: Seconds without a sign of life after which another coordinator may take a run over.
COORDINATOR_STALE = 15.0
#: Arguments that may differ between the coordinator that died and the one taking over.
_FREE = ("workers", "executor", "dry_run")


def _comparable(args: Mapping[str, Any]) -> dict[str, Any]:
    stored = json.loads(json.dumps(scrub_secrets(dict(args)), default=str))
    return {k: v for k, v in stored.items() if k not in _FREE}


def reattach(
    journal: Journal,
    command: str,
    *,
    source_cloud: str | None,
    destination_cloud: str | None,
    args: Mapping[str, Any],
) -> str | None:
    """The ID of the run in flight this command takes over, or None (start a new one).

    ConflictError when that run's coordinator is alive: two would send work twice.
    """
    wanted = _comparable(args)
    for run in reversed(journal.runs()):
        if (
            run.command != command
            or run.outcome != RUN_RUNNING
            or run.executor != "celery"
            or (run.source_cloud, run.destination_cloud) != (source_cloud, destination_cloud)
            or _comparable(run.args) != wanted
        ):
            continue
        dead = run.coordinator if run.coordinator and process_gone(run.coordinator) else None
        me = this_process()
        if journal.claim_run(run.id, me, stale_after=COORDINATOR_STALE, dead=dead):
            return run.id
        raise ConflictError(
            f"run {run.id} of {command!r} is in flight, followed by {run.coordinator}; wait for "
            f"it to end (`stackhop status --run {run.id[:8]}`) or stop that process first"
        )
    return None
