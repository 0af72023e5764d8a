"""``prepare``: queue the Neutron topology as importer tasks; write settings and controller data.

Changes no topology: it only adds rows to the task tables (creating them if
missing), and writes files under the data directory. Every step is journaled;
queueing is also idempotent at the database level (an object with a create
task of its data type is never queued again), so a re-run after a failure
queues exactly what is missing, in the same dependency order.
"""

from __future__ import annotations

import base64
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from stackhop.errors import ConfigError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.sdn import neutron_db, tasks, topology, zookeeper
from stackhop.sdn.neutron_db import NeutronDatabase
from stackhop.sdn.steps import StepRunner, run_hook

SETTINGS_FILE = "mn-conf.settings"
NORMAL_SETTINGS_FILE = "mn-conf.normal.settings"
CONTROLLER_DIR = "controller-objects"
_UUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


@dataclass
class PrepareResult:
    """What ``prepare`` did (this run) and found."""

    database: str
    task_table: str
    queued: dict[str, str] = field(default_factory=dict)
    objects: dict[str, int] = field(default_factory=dict)
    settings_file: str = ""
    controller_objects: str = "not exported (no --zk)"
    dry_run: bool = False


def settings_text(db: NeutronDatabase) -> str:
    """The cluster settings turning the Neutron importer on for ``db`` (mn-conf syntax)."""
    lines = [
        "# MidoNet cluster settings for the Neutron importer, written by stackhop.",
        f"# Apply with: mn-conf set -t default < {SETTINGS_FILE}",
        "cluster.neutron_importer.enabled : true",
        f"cluster.neutron_importer.connection_string : {json.dumps(db.jdbc_url())}",
        f"cluster.neutron_importer.user : {json.dumps(db.user)}",
        f"cluster.neutron_importer.password : {json.dumps(db.url.password or '')}",
        "",
    ]
    return "\n".join(lines)


def normal_settings_text() -> str:
    """The cluster settings turning the importer off again (normal mode, after the import)."""
    return (
        "# MidoNet cluster settings: back to normal mode after the import, written by stackhop.\n"
        f"# Apply with: mn-conf set -t default < {NORMAL_SETTINGS_FILE}\n"
        "cluster.neutron_importer.enabled : false\n"
    )


def write_private(path: Path, text: str) -> None:
    """Write ``path`` with mode 0600 from its first byte (it holds a password)."""
    temp = path.with_name(f".{path.name}.partial")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temp, path)


def controller_objects(
    tree: Mapping[str, zookeeper.Node], root: str, neutron_ids: set[str]
) -> dict[str, list[zookeeper.Node]]:
    """Objects under ``<root>/<collection>/<uuid>`` that Neutron does not know, with subtrees.

    Keyed ``<collection>/<uuid>``. Neutron's objects are re-created by the
    importer from the tasks; these (tunnel zones, hosts, operator-made
    routers and chains) must be re-created from the files.
    """
    base = root.rstrip("/")
    found: dict[str, list[zookeeper.Node]] = {}
    for path in tree:
        relative = path[len(base) + 1 :] if path.startswith(base + "/") else ""
        parts = relative.split("/") if relative else []
        if len(parts) != 2 or not _UUID.match(parts[1]) or parts[1] in neutron_ids:
            continue
        prefix = path + "/"
        found[relative] = [n for p, n in tree.items() if p == path or p.startswith(prefix)]
    return found


def _node_record(node: zookeeper.Node) -> dict[str, Any]:
    return {
        "path": node.path,
        "data": base64.b64encode(node.data).decode("ascii"),
        "acl": [list(a) for a in node.acl],
        "ephemeral": node.ephemeral,
    }


def _export_objects(
    data_dir: Path, objects: Mapping[str, list[zookeeper.Node]]
) -> str:
    out_dir = data_dir / CONTROLLER_DIR
    for key, nodes in sorted(objects.items()):
        target = out_dir / f"{key}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        document = {"object": key, "nodes": [_node_record(n) for n in nodes]}
        write_private(target, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return f"{len(objects)} object(s) in {out_dir}"


def prepare(
    db: NeutronDatabase,
    data_dir: Path,
    journal: Journal,
    *,
    zk: str | None = None,
    zk_root: str = "/midonet",
    pre_hook: str | None = None,
    post_hook: str | None = None,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> PrepareResult:
    """Run ``prepare`` (see the module docstring); checks everything it needs first.

    ``dry_run``: the same checks and reads, then what each step would queue
    or write; nothing is written (no task, no file, no directory, no journal).
    """
    sink = events or NullSink()
    root = zookeeper.normalise_root(zk_root)
    if data_dir.exists() and not data_dir.is_dir():
        raise ConfigError(f"--data-dir {data_dir} exists and is not a directory")
    engine = neutron_db.connect(db)
    try:
        with engine.connect() as conn:
            schema = tasks.detect_schema(conn)
            present = {t for t in topology.TABLES if sa.inspect(conn).has_table(t)}
        needs = [("SELECT", t) for t in topology.TABLES if t in present]
        needs += [(p, "midonet_tasks") for p in ("SELECT", "INSERT")]
        neutron_db.require_privileges(engine, db, needs, "queue the importer tasks")
        tree: dict[str, zookeeper.Node] | None = None
        if zk:
            with zookeeper.connect(zk) as client:
                tree = zookeeper.read_tree(client, root)
        if dry_run:
            return _would_prepare(engine, db, schema, data_dir, tree, root)
        data_dir.mkdir(parents=True, exist_ok=True)

        run_hook(pre_hook, which="pre", step="prepare", changed=False, events=sink)
        runner = StepRunner(journal, "prepare", db.key(),
                            {"data_dir": str(data_dir), "zk": zk, "root": root}, sink)
        try:
            result = _steps(runner, engine, db, schema, data_dir, tree, root)
        except BaseException:
            runner.finish("failed")
            raise
        runner.finish("succeeded")
        run_hook(post_hook, which="post", step="prepare", changed=True, events=sink)
        return result
    finally:
        engine.dispose()


def _would_prepare(
    engine: sa.Engine,
    db: NeutronDatabase,
    schema: tasks.TaskSchema,
    data_dir: Path,
    tree: dict[str, zookeeper.Node] | None,
    root: str,
) -> PrepareResult:
    result = PrepareResult(db.describe(), schema.describe(), dry_run=True)
    with engine.connect() as conn:
        objects = topology.read_topology(conn)
        for data_type in topology.DATA_TYPES:
            group = objects[data_type]
            result.objects[data_type] = len(group)
            queued = tasks.queued_resource_ids(conn, data_type)
            missing = sum(1 for obj in group if obj.id not in queued)
            result.queued[data_type] = f"would queue {missing}"
    result.settings_file = (f"would write {data_dir / SETTINGS_FILE} and "
                            f"{data_dir / NORMAL_SETTINGS_FILE} (0600)")
    if tree is not None:
        extra = controller_objects(tree, root, topology.neutron_ids(objects))
        result.controller_objects = (f"would write {len(extra)} object(s) to "
                                     f"{data_dir / CONTROLLER_DIR}")
    return result


def _steps(
    runner: StepRunner,
    engine: sa.Engine,
    db: NeutronDatabase,
    schema: tasks.TaskSchema,
    data_dir: Path,
    tree: dict[str, zookeeper.Node] | None,
    root: str,
) -> PrepareResult:
    # The schema is read, never created: networking-midonet's migrations own it.
    result = PrepareResult(db.describe(), schema.describe())
    # Reading is not a step: it changes nothing and must be current on a re-run.
    with engine.connect() as conn:
        objects = topology.read_topology(conn)
    for data_type in topology.DATA_TYPES:
        group = objects[data_type]
        result.objects[data_type] = len(group)

        def queue(data_type: str = data_type, group: list[topology.NeutronObject] = group) -> str:
            # One transaction per resource group: a group is queued whole or not at all.
            try:
                with engine.begin() as conn:
                    n = tasks.queue_creates(conn, schema, data_type, group)
            except sa.exc.DBAPIError as exc:
                raise neutron_db.translate(exc, db, f"queueing {data_type} tasks") from exc
            return f"{n} queued"

        result.queued[data_type] = runner.step(f"queue {data_type}", queue)

    settings = data_dir / SETTINGS_FILE

    def write_settings() -> str:
        write_private(settings, settings_text(db))
        write_private(data_dir / NORMAL_SETTINGS_FILE, normal_settings_text())
        return str(settings)

    result.settings_file = runner.step("importer settings", write_settings)
    if tree is not None:
        known = topology.neutron_ids(objects)
        extra = controller_objects(tree, root, known)
        result.controller_objects = runner.step(
            "controller objects", lambda: _export_objects(data_dir, extra)
        )
    runner.complete()
    return result
