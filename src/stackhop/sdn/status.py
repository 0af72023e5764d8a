"""``status``: what has been prepared, backed up and switched, and the task counts.

Read-only. Each part is shown only when its source is named (database, data
directory, backup file, config root); the journal adds the SDN runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stackhop.errors import StackhopError
from stackhop.journal import Journal
from stackhop.sdn import backup_file, cluster, endpoints, neutron_db, tasks
from stackhop.sdn.neutron_db import NeutronDatabase
from stackhop.sdn.prepare import CONTROLLER_DIR, SETTINGS_FILE


def _database_status(db: NeutronDatabase) -> dict[str, Any]:
    engine = neutron_db.connect(db)
    try:
        with engine.connect() as conn:
            if "midonet_tasks" not in tasks.tables_present(conn):
                return {"Task tables": "absent (not prepared)"}
            found = tasks.counts(conn)
            state = tasks.read_data_state(conn) or {}
    finally:
        engine.dispose()
    return {
        "Tasks": found.total,
        "Queued by stackhop": found.stackhop,
        "Tasks per data type": dict(sorted(found.per_data_type.items())),
        "Highest task ID": found.highest_id,
        "Next task ID": found.next_id,
        "Last processed task": state.get("last_processed_task_id"),
    }


def _backup_status(path: Path) -> str:
    try:
        backup = backup_file.read(path)
    except StackhopError as exc:
        return f"unusable: {exc.message}"
    neutron = "with" if backup.neutron is not None else "without"
    return (f"{len(backup.nodes)} nodes of {backup.root}, taken {backup.created_at}, "
            f"{neutron} data state, sha256 {backup.sha256[:12]}")


def _sdn_runs(location: str) -> list[str]:
    if "://" not in location and not Path(location).expanduser().exists():
        return []
    with Journal(location) as journal:
        return [
            f"{run.command}: {run.outcome} ({run.started_at:%Y-%m-%d %H:%M:%S})"
            for run in journal.runs()
            if run.command.startswith("sdn ")
        ][-10:]


def collect_status(
    db: NeutronDatabase | None,
    *,
    data_dir: Path | None,
    backup: Path | None,
    config_root: Path | None,
    journal_location: str,
) -> dict[str, Any]:
    """The status as one mapping of human field names to values."""
    out: dict[str, Any] = {}
    if data_dir is not None:
        settings = data_dir / SETTINGS_FILE
        out["Importer settings"] = str(settings) if settings.is_file() else "not written"
        objects = list((data_dir / CONTROLLER_DIR).rglob("*.json"))
        out["Controller object files"] = len(objects)
        out["Cluster settings"] = cluster.status(data_dir)
    if db is not None:
        out["Neutron database"] = db.describe()
        out.update(_database_status(db))
    if backup is not None:
        out["Backup"] = _backup_status(backup)
    if config_root is not None:
        manifest = endpoints.read_manifest(config_root)
        out["Endpoints"] = (
            f"switched to port {manifest['port']}: " + ", ".join(manifest["files"])
            if manifest else "not switched"
        )
    out["Journal runs"] = _sdn_runs(journal_location)
    return out
