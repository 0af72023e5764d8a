"""Undo a migration into the testbed's dst, so that dst is again as the seed left it.

``make demo`` migrates into dst and the functional tests share dst, so what a
demo or a test moved must not stay there. Given the journal of the
migration, this removes from dst what its runs created and nothing else:
servers through ``stackhop rollback`` on their runs (the destination servers,
ports and floating IPs; the source servers started again), resources through
``stackhop rollback`` (which also restores changed quota
values and never touches what existed before), the temporaries a killed or
failed volume copy left (``stackhop volumes cleanup``: staging images and
snapshots, on either side), and the images and volumes the journal says were
created (``python -m testbed undo --journal FILE``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import openstack

from stackhop.journal import DONE, PENDING, ROLLED_BACK, Journal
from stackhop.servers.migrate import COMMAND as SERVERS_COMMAND
from stackhop.servers.migrate import STEP_KIND
from stackhop.volumes import temporaries
from testbed import layout

#: Commands whose runs ``stackhop rollback`` undoes (resource imports).
RESOURCE_COMMANDS = ("import", "migrate", "project migrate: import")


def _stackhop(journal_path: Path, *args: str) -> None:
    """Run ``stackhop --journal JOURNAL ARGS``; raise when it fails."""
    command = [sys.executable, "-m", "stackhop.cli.main", "--journal", str(journal_path), *args]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)


def undo_migration(journal_path: Path, destination: str = "dst") -> list[str]:
    """Remove from ``destination`` what the runs of ``journal_path`` created; what was removed."""
    if not journal_path.exists():
        return []
    with Journal(journal_path) as journal:
        runs = [r for r in journal.runs() if r.destination_cloud == destination]
        resource_runs = [r.id for r in runs if r.command in RESOURCE_COMMANDS]
        images = [
            op.destination_id
            for op in journal.operations(kind="glance.image", state=DONE)
            if op.action == "create" and op.destination_id
        ]
        volumes = [
            op.destination_id for op in journal.operations(kind="volume") if op.destination_id
        ]
        leftover_runs = {
            op.run_id
            for op in journal.operations(kind=temporaries.KIND, state=PENDING)
            if not (op.before or {}).get("kept")
        }
        cleanup_runs = [r.id for r in runs if r.id in leftover_runs]
        # Servers first: they hold the volumes and the ports on the networks.
        server_runs = [
            r.id for r in runs if r.command == SERVERS_COMMAND and any(
                op.state != ROLLED_BACK for op in journal.operations(run_id=r.id,
                                                                     kind=STEP_KIND))
        ]
    removed: list[str] = []
    for run_id in server_runs:
        _stackhop(journal_path, "rollback", "--to", destination, "--run", run_id)
        removed.append(f"servers of run {run_id}")
    # Staging images and snapshots first: Cinder deletes no volume that has RBD snapshots.
    storage_map = os.environ.get("STACKHOP_STORAGE_MAP") or str(layout.STORAGE_MAP)
    for run_id in cleanup_runs:
        _stackhop(journal_path, "volumes", "cleanup", "--run", run_id, "--storage-map", storage_map)
        removed.append(f"temporaries of run {run_id}")
    if resource_runs:
        # All in one rollback: it orders the undos by kind across the runs. One run at a
        # time, the oldest first, would try a killed run's subnets before the ports its
        # re-run made on them (Neutron: 409, "ports have an IP allocation").
        _stackhop(journal_path, "rollback", "--to", destination,
                  *[arg for run_id in resource_runs for arg in ("--run", run_id)])
        removed += [f"resources of run {run_id}" for run_id in resource_runs]
    conn = openstack.connect(cloud=destination)
    for image_id in images:
        image = conn.image.find_image(image_id, ignore_missing=True)
        if image is not None:
            conn.image.update_image(image, is_protected=False)
            conn.image.delete_image(image, ignore_missing=True)
            removed.append(f"image {image_id}")
    for volume_id in dict.fromkeys(volumes):
        volume = conn.block_storage.find_volume(volume_id, ignore_missing=True)
        if volume is not None:
            conn.block_storage.delete_volume(volume, ignore_missing=True)
            conn.block_storage.wait_for_delete(volume, wait=300)
            removed.append(f"volume {volume_id}")
    return removed
