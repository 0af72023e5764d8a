"""networking-midonet's task tables, as its own alembic migrations leave them.

stackhop never creates these tables (the plugin's migrations own them); the
testbed and the tests create them here, in the shape of each generation:

- ``newton``: migrations 25aeae45d4ad (add task, as rewritten on 2015-02-26
  for string types), d8a5c672761 (data sync) and, from Newton on, the contract
  migration 27e6e3451f22 renaming ``tenant_id`` to ``project_id``;
- ``kilo``: the same before the rename (``tenant_id``), 2015.1 .. Mitaka;
- ``integer``: the pre-release shape of 2014-10 .. 2015-02-26
  (``type_id``/``data_type_id`` and two lookup tables, no ``tenant_id``),
  which stackhop must refuse.

The DDL states the end result of those migrations on MySQL/MariaDB
(``sa.Text(2**24)`` is LONGTEXT there); ``midonet_data_state`` gets the one
row migration d8a5c672761 inserts (``last_processed_task_id`` NULL).
"""

from __future__ import annotations

from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

Generation = Literal["newton", "kilo", "integer"]

_STRING_TASKS = """
CREATE TABLE midonet_tasks (
  id INT NOT NULL AUTO_INCREMENT,
  type VARCHAR(36) NULL,
  data_type VARCHAR(36) NULL,
  data LONGTEXT NULL,
  resource_id VARCHAR(36) NULL,
  {project} VARCHAR(255) NULL,
  transaction_id VARCHAR(40) NOT NULL,
  created_at DATETIME NOT NULL,
  PRIMARY KEY (id)
) ENGINE=InnoDB
"""

_INTEGER_TASKS = (
    "CREATE TABLE midonet_task_types (id INT NOT NULL AUTO_INCREMENT, "
    "name VARCHAR(50) NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB",
    "CREATE TABLE midonet_data_types (id INT NOT NULL AUTO_INCREMENT, "
    "name VARCHAR(50) NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB",
    "CREATE TABLE midonet_tasks (id INT NOT NULL AUTO_INCREMENT, "
    "type_id INT NULL, data_type_id INT NULL, data LONGTEXT NULL, "
    "resource_id VARCHAR(36) NULL, transaction_id VARCHAR(40) NOT NULL, "
    "created_at DATETIME NOT NULL, PRIMARY KEY (id), "
    "FOREIGN KEY (type_id) REFERENCES midonet_task_types (id), "
    "FOREIGN KEY (data_type_id) REFERENCES midonet_data_types (id)) ENGINE=InnoDB",
)

_DATA_SYNC = (
    "CREATE TABLE midonet_data_versions (id INT NOT NULL AUTO_INCREMENT, "
    "sync_started_at DATETIME NULL, sync_finished_at DATETIME NULL, "
    "sync_status VARCHAR(50) NULL, sync_tasks_status VARCHAR(50) NULL, "
    "stale BOOL NOT NULL, PRIMARY KEY (id)) ENGINE=InnoDB",
    "CREATE TABLE midonet_data_state (id INT NOT NULL AUTO_INCREMENT, "
    "last_processed_task_id INT NULL, updated_at DATETIME NOT NULL, "
    "active_version INT NULL, readonly BOOL NOT NULL, PRIMARY KEY (id), "
    "FOREIGN KEY (last_processed_task_id) REFERENCES midonet_tasks (id), "
    "FOREIGN KEY (active_version) REFERENCES midonet_data_versions (id)) ENGINE=InnoDB",
    "INSERT INTO midonet_data_state (id, last_processed_task_id, updated_at, "
    "active_version, readonly) VALUES (1, NULL, UTC_TIMESTAMP(), NULL, false)",
)

TABLES = ("midonet_data_state", "midonet_data_versions", "midonet_tasks",
          "midonet_task_types", "midonet_data_types")


def create(conn: Connection, generation: Generation = "newton") -> None:
    """Create the task tables of ``generation`` in the connection's database (absent before)."""
    if generation == "integer":
        statements: tuple[str, ...] = _INTEGER_TASKS
    else:
        project = "project_id" if generation == "newton" else "tenant_id"
        statements = (_STRING_TASKS.format(project=project),)
    for statement in (*statements, *_DATA_SYNC):
        conn.execute(sa.text(statement))


def drop(conn: Connection) -> None:
    """Drop every task table (those present), foreign keys first."""
    for table in TABLES:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS `{table}`"))
