"""``backup``: the ZooKeeper subtree (and the importer's state) to a verified file.

The tree is read twice: once to write the file and once after the file is on
disk. The file is decoded and compared with the second reading; a difference
means the tree changed during the backup, and the file is not kept (a backup
of a moving tree is not a state the cluster was ever in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stackhop.errors import ConflictError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.sdn import backup_file, neutron_db, tasks, zookeeper
from stackhop.sdn.errors import BackupExistsError
from stackhop.sdn.neutron_db import NeutronDatabase
from stackhop.sdn.steps import StepRunner, run_hook


@dataclass(frozen=True)
class BackupResult:
    """What a backup holds."""

    file: str
    root: str
    nodes: int
    ephemeral_nodes: int
    sha256: str
    neutron_state: str
    dry_run: bool = False


def neutron_snapshot(db: NeutronDatabase) -> dict[str, Any]:
    """``midonet_data_state`` and the highest issued task ID, as the backup header keeps them."""
    engine = neutron_db.connect(db)
    try:
        needs = [("SELECT", t) for t in tasks.TABLES]
        with engine.connect() as conn:
            present = tasks.tables_present(conn)
        neutron_db.require_privileges(
            engine, db, [n for n in needs if n[1] in present], "read midonet_data_state"
        )
        with engine.connect() as conn:
            highest = tasks.highest_issued(conn) if "midonet_tasks" in present else 0
            return {
                "database": db.describe(),
                "data_state": tasks.read_data_state(conn),
                "highest_task_id": highest,
            }
    finally:
        engine.dispose()


def take_backup(
    zk: str,
    root: str,
    output: Path,
    journal: Journal,
    *,
    db: NeutronDatabase | None = None,
    force: bool = False,
    dry_run: bool = False,
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> BackupResult:
    """Dump ``root`` of ZooKeeper ``zk`` to ``output``; refuses to overwrite without ``force``."""
    sink = events or NullSink()
    root = zookeeper.normalise_root(root)
    if output.exists() and not force:
        raise BackupExistsError(path=str(output))
    neutron = neutron_snapshot(db) if db is not None else None
    with zookeeper.connect(zk) as client:
        if not client.exists(root):
            raise ConflictError(f"ZooKeeper at {zk} has no node {root}; check --root")
        if dry_run:
            tree = zookeeper.read_tree(client, root)
            return BackupResult(
                file=f"would write {output}", root=root, nodes=len(tree),
                ephemeral_nodes=sum(1 for n in tree.values() if n.ephemeral), sha256="",
                neutron_state="would be recorded" if neutron is not None else "not recorded",
                dry_run=True)
        run_hook(pre_hook, which="pre", step="backup", changed=False, events=sink)
        runner = StepRunner(journal, "backup", str(output.resolve()), {"zk": zk, "root": root},
                            sink)
        try:
            def dump() -> str:
                tree = zookeeper.read_tree(client, root)
                raw = backup_file.encode(root, zk, tree, neutron)
                backup_file.write(output, raw, force=force)
                written = backup_file.read(output)
                again = zookeeper.read_tree(client, root)
                changed = zookeeper.differences(written.nodes, again)
                if changed:
                    output.unlink()
                    raise ConflictError(
                        f"the tree under {root} changed during the backup ({changed[0]}); "
                        "stop the writers (or retry) and take the backup again"
                    )
                return written.sha256

            digest = runner.step("dump", dump)
            runner.complete()
        except BaseException:
            runner.finish("failed")
            raise
        runner.finish("succeeded")
    run_hook(post_hook, which="post", step="backup", changed=True, events=sink)
    written = backup_file.read(output)
    return BackupResult(
        file=str(output),
        root=root,
        nodes=len(written.nodes),
        ephemeral_nodes=sum(1 for n in written.nodes.values() if n.ephemeral),
        sha256=digest,
        neutron_state="recorded" if neutron is not None else "not recorded (no --neutron-*)",
    )
