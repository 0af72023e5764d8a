"""``rollback``: back to the backup, exactly, and checked.

Before anything changes, every precondition is checked: the backup file is
intact (checksum, trailer), ZooKeeper answers, the database user holds every
privilege the steps need, the task table's engine keeps its ID counter across
restarts, and no switched config file was edited since. Then, each step
journaled:

1. restore the ZooKeeper subtree to the backup (see
   :func:`~stackhop.sdn.zookeeper.restore_tree`);
2. put ``midonet_data_state`` back to its value at backup time (before the
   tasks go: its ``last_processed_task_id`` is a foreign key to a task);
3. remove the tasks stackhop queued, never lowering the ID counter;
4. revert the config files (with ``--config-root``).

Finally every one of those is read back and compared; any difference is a
:class:`~stackhop.sdn.errors.RollbackIncompleteError` naming it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stackhop.errors import ConfigError
from stackhop.events import Event, EventSink, EventType, NullSink
from stackhop.journal import Journal
from stackhop.sdn import backup_file, cluster, counter, endpoints, neutron_db, tasks, zookeeper
from stackhop.sdn.backup_file import Backup
from stackhop.sdn.errors import RollbackIncompleteError
from stackhop.sdn.neutron_db import NeutronDatabase
from stackhop.sdn.steps import StepRunner, close_open_cycle, run_hook
from stackhop.sdn.switch import revert_steps, would_revert

_HIGHEST = re.compile(r"highest issued (\d+)")


@dataclass
class RollbackResult:
    """What the rollback did, step by step, and what the final check found."""

    backup: str
    steps: dict[str, str] = field(default_factory=dict)
    verified: bool = False
    dry_run: bool = False


def _check_database(
    engine: sa.Engine, db: NeutronDatabase, backup: Backup, init_file: Path | None
) -> Path | None:
    """Privileges and the counter's keeping; the init file to keep it in (None: not needed)."""
    keep: Path | None = None
    with engine.connect() as conn:
        present = tasks.tables_present(conn)
        if "midonet_tasks" in present:
            version, persistent = counter.server(conn)
            if not persistent:
                keep = counter.check_init_file(conn, init_file, version)
    needs: list[tuple[str, str]] = []
    if "midonet_tasks" in present:
        needs += [("SELECT", "midonet_tasks"), ("DELETE", "midonet_tasks")]
    if "midonet_data_state" in present:
        needs += [(p, "midonet_data_state") for p in ("SELECT", "INSERT", "UPDATE", "DELETE")]
    elif backup.neutron and backup.neutron.get("data_state") is not None:
        needs += [("CREATE", "midonet_data_state"), ("INSERT", "midonet_data_state")]
    neutron_db.require_privileges(engine, db, needs, "roll back the importer tasks")
    return keep


def _remove_tasks(
    engine: sa.Engine, db: NeutronDatabase, keep: Path | None, all_tasks: bool
) -> str:
    try:
        with engine.begin() as conn:
            if "midonet_tasks" not in tasks.tables_present(conn):
                return "no task table; highest issued 0"
            highest = tasks.highest_issued(conn)
            if keep is not None:
                # The hook first: should the delete fail, a higher counter harms nothing.
                kept = counter.keep_in_init_file(keep, db.name, highest + 1)
            deleted, highest = tasks.remove_tasks(conn, all_tasks=all_tasks)
    except sa.exc.DBAPIError as exc:
        raise neutron_db.translate(exc, db, "removing the queued tasks") from exc
    except OSError as exc:
        raise ConfigError(f"cannot write --counter-init-file {keep}: {exc.strerror}") from exc
    note = f"; {kept}" if keep is not None else ""
    return f"{deleted} removed; highest issued {highest}{note}"


def wanted_state(backup: Backup, all_tasks: bool) -> dict[str, Any] | None:
    """The data state a rollback puts back; with every task gone, no task is processed."""
    state = (backup.neutron or {}).get("data_state")
    if state is not None and all_tasks:
        return {**state, "last_processed_task_id": None}
    return state  # type: ignore[no-any-return]


def _restore_state(engine: sa.Engine, db: NeutronDatabase, backup: Backup,
                   all_tasks: bool = False) -> str:
    if backup.neutron is None:
        return "not in the backup (taken without --neutron-conf/--neutron-db): left as is"
    state = wanted_state(backup, all_tasks)
    try:
        with engine.begin() as conn:
            tasks.write_data_state(conn, state)
    except sa.exc.DBAPIError as exc:
        raise neutron_db.translate(exc, db, "restoring midonet_data_state") from exc
    if state is None:
        return "no row at backup time: row removed"
    return f"last_processed_task_id={state.get('last_processed_task_id')}"


def _verify(
    client: Any, engine: sa.Engine, backup: Backup, highest: int, all_tasks: bool = False
) -> list[str]:
    problems = zookeeper.differences(backup.nodes, zookeeper.read_tree(client, backup.root))
    with engine.connect() as conn:
        if "midonet_tasks" in tasks.tables_present(conn):
            found = tasks.counts(conn)
            if found.stackhop or (all_tasks and found.total):
                problems.append(f"{found.total if all_tasks else found.stackhop} task(s) remain")
            floor = max(highest, int((backup.neutron or {}).get("highest_task_id") or 0))
            if found.next_id <= floor:
                problems.append(
                    f"the next task ID would be {found.next_id}, not above {floor} already issued"
                )
        if backup.neutron is not None:
            state = tasks.read_data_state(conn)
            wanted = wanted_state(backup, all_tasks)
            if state != wanted:
                problems.append(f"midonet_data_state is {state}, not {wanted}")
    return problems


def rollback(
    zk: str,
    backup_path: Path,
    db: NeutronDatabase,
    journal: Journal,
    *,
    config_root: Path | None = None,
    force: bool = False,
    all_tasks: bool = False,
    counter_init_file: Path | None = None,
    data_dir: Path | None = None,
    restart_command: str | None = None,
    dry_run: bool = False,
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> RollbackResult:
    """Roll the controller back to ``backup_path`` (see the module docstring).

    ``all_tasks`` removes every task, not only stackhop's (the seed's
    behaviour); ``counter_init_file`` keeps the ID counter on servers that
    recompute it at restart (see :mod:`stackhop.sdn.counter`). ``data_dir``
    also restores the cluster configuration saved by ``apply-settings``;
    ``restart_command`` restarts neutron-server after the endpoints are back.
    ``dry_run``: every check, then what each step would change; nothing changes.
    """
    sink = events or NullSink()
    backup = backup_file.read(backup_path)
    engine = neutron_db.connect(db)
    try:
        keep = _check_database(engine, db, backup, counter_init_file)
        if config_root is not None:
            if not config_root.is_dir():
                raise ConfigError(f"--config-root {config_root} is not a directory")
            manifest = endpoints.read_manifest(config_root)
            if manifest is not None:
                endpoints.check_revertible(config_root, manifest, force)
        if data_dir is not None and cluster.read_manifest(data_dir) is not None:
            cluster.check_saved(data_dir)
        with zookeeper.connect(zk) as client:
            _warn_about(backup, backup_path, zk, sink)
            if dry_run:
                return _would_roll_back(client, engine, backup, backup_path, config_root, force,
                                        all_tasks, data_dir, restart_command, keep)
            run_hook(pre_hook, which="pre", step="rollback", changed=False, events=sink)
            runner = StepRunner(
                journal, "rollback", f"{backup.sha256}:{db.key()}",
                {"backup": str(backup_path), "zk": zk, "root": backup.root,
                 "config_root": str(config_root) if config_root else None},
                sink,
            )
            try:
                result = _steps(runner, client, engine, db, backup, config_root, force,
                                keep, all_tasks, data_dir, restart_command)
                result.backup = str(backup_path)
            except BaseException:
                runner.finish("failed")
                raise
            runner.finish("succeeded")
        run_hook(post_hook, which="post", step="rollback", changed=True, events=sink)
        return result
    finally:
        engine.dispose()


def _would_roll_back(
    client: Any,
    engine: sa.Engine,
    backup: Backup,
    backup_path: Path,
    config_root: Path | None,
    force: bool,
    all_tasks: bool,
    data_dir: Path | None,
    restart_command: str | None,
    keep: Path | None,
) -> RollbackResult:
    """What each rollback step would change, read from the live state; nothing is written."""
    result = RollbackResult(str(backup_path), dry_run=True)
    current = zookeeper.read_tree(client, backup.root)
    want, have = zookeeper.persistent(backup.nodes), zookeeper.persistent(current)
    extra = len([p for p in current if p not in want])
    missing = len([p for p in want if p not in have])
    changed = len([p for p in want.keys() & have.keys()
                   if (want[p].data, want[p].acl) != (have[p].data, have[p].acl)])
    result.steps["zookeeper"] = (f"would create {missing}, delete {extra} and set back "
                                 f"{changed} node(s) under {backup.root}")
    with engine.connect() as conn:
        present = tasks.tables_present(conn)
        state = tasks.read_data_state(conn) if "midonet_data_state" in present else None
        found = tasks.counts(conn) if "midonet_tasks" in present else None
    if backup.neutron is None:
        result.steps["data state"] = "not in the backup: would be left as is"
    else:
        wanted = wanted_state(backup, all_tasks)
        result.steps["data state"] = ("already as backed up" if state == wanted
                                      else f"would set midonet_data_state to {wanted}")
    removed = 0 if found is None else (found.total if all_tasks else found.stackhop)
    note = f"; would raise the counter in {keep} first" if keep is not None else ""
    result.steps["tasks"] = f"would remove {removed} task(s), keeping the ID counter{note}"
    if data_dir is not None:
        for name, outcome in cluster.would_revert(data_dir).items():
            result.steps[f"cluster {name}"] = outcome
    if config_root is not None:
        for name, outcome in would_revert(config_root, force).items():
            result.steps[f"config {name}"] = outcome
    if restart_command:
        result.steps["restart"] = f"would run {restart_command!r}"
    result.steps["check"] = "would compare all of it with the backup"
    return result


def _warn_about(backup: Backup, path: Path, zk: str, sink: EventSink) -> None:
    if backup.zookeeper != zk:
        sink.emit(Event(EventType.WARNING, message=(
            f"the backup was taken from ZooKeeper at {backup.zookeeper}; restoring it to {zk}")))
    if backup.neutron is None:
        sink.emit(Event(EventType.WARNING, message=(
            f"{path} holds no midonet_data_state (backup taken without "
            "--neutron-conf/--neutron-db): it is left as is")))


def _steps(
    runner: StepRunner,
    client: Any,
    engine: sa.Engine,
    db: NeutronDatabase,
    backup: Backup,
    config_root: Path | None,
    force: bool,
    keep: Path | None = None,
    all_tasks: bool = False,
    data_dir: Path | None = None,
    restart_command: str | None = None,
) -> RollbackResult:
    result = RollbackResult("")

    def restore() -> str:
        report = zookeeper.restore_tree(client, backup.root, backup.nodes)
        return (f"{report.created} created, {report.deleted} deleted, "
                f"{report.data_restored} data and {report.acl_restored} ACL restored")

    result.steps["zookeeper"] = runner.step("restore zookeeper", restore)
    # The data state first: its last_processed_task_id is a foreign key to
    # midonet_tasks.id (migration d8a5c672761), so a processed task of ours
    # cannot be deleted while the state still points at it.
    result.steps["data state"] = runner.step(
        "restore data state", lambda: _restore_state(engine, db, backup, all_tasks)
    )
    removed = runner.step("remove queued tasks",
                          lambda: _remove_tasks(engine, db, keep, all_tasks))
    # The tasks an interrupted prepare had queued are gone: its resume must not skip them.
    close_open_cycle(runner.journal, "prepare", db.key(), runner.run_id, "rolled back")
    result.steps["tasks"] = removed
    if data_dir is not None:
        for name, outcome in cluster.revert_steps(data_dir, runner).items():
            result.steps[f"cluster {name}"] = outcome
    if config_root is not None:
        for name, outcome in revert_steps(config_root, runner, force=force).items():
            result.steps[f"config {name}"] = outcome
    if restart_command:
        def restart() -> str:
            cluster.run_command(restart_command, "restart", changed=True)
            return f"ran {restart_command!r}"

        result.steps["restart"] = runner.step("restart neutron-server", restart)
    match = _HIGHEST.search(removed)
    highest = int(match.group(1)) if match else 0

    def verify() -> str:
        problems = _verify(client, engine, backup, highest, all_tasks)
        if problems:
            # Close the cycle: a re-run redoes every (idempotent) step
            # instead of skipping the ones that did not hold.
            runner.complete("verification failed")
            raise RollbackIncompleteError(detail="; ".join(problems[:5]))
        return "ZooKeeper, tasks, ID sequence, data state and config files as backed up"

    result.steps["check"] = runner.step("verify", verify)
    result.verified = True
    runner.complete()
    return result
