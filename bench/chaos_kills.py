"""Kill trials of ``images copy``, ``images move-store``, ``project migrate`` and ``servers
migrate``: ``kill -9`` at a random moment, re-run, count on the cloud.

Per command, one uninterrupted run measures how long a run takes (and is undone), then
``--kills`` trials each:

1. the starting state is made (images copy: the source images are there, dst holds no
   copy; move-store: fresh images in store ``fast`` of src; project migrate: dst as the
   seed left it);
2. the command starts with a fresh journal and is ``kill -9``-ed (by its ``Popen``
   handle) after a seeded random delay up to the uninterrupted run's time;
3. the killed run's journal is kept, or deleted (half the kills each, or as ``--journal``
   says): the re-run then knows nothing of it; a trial whose command was done before its
   kill does not count, trials go on until ``--kills`` killed it (``chaos_common.kill_trials``);
4. the same command is re-run until it exits 0 (``project migrate``: 0, or 10 for frank's
   keypair, the seed's expected conflict, with every phase done), at most ``--max-runs``;
   every stop before must be one line (no traceback);
5. an independent listing (openstacksdk and the Glance file stores, never stackhop)
   counts duplicates, missing objects, data that differs from the source and
   anything left over;
6. the starting state is restored (project migrate: ``testbed.undo.undo_migration`` with
   the run's journal; what a deleted journal's run made and the re-run only adopted is
   counted, then removed by the bench) and must hold again.

What is counted, per command:

- ``images-copy`` (``--images`` images of a few tens of MiB, random content, on src):
  per source image the active copies on dst carrying its ``stackhop_source`` marker (one),
  each copy's sha512 downloaded from dst (the source's), its protection and visibility;
  left over: an inactive marked image or an unmarked one named like ours on dst, a file
  in dst's Glance stores or staging area of no image.
- ``move-store`` (the same images made afresh each trial in src's store ``fast``, one of
  them protected): each image under its own ID, in ``slow`` only, with its hash and
  downloaded sha512 unchanged, no copy of it; left over: a protection that is not the
  original, a file of it in ``fast`` or in the staging area, an import still marked.
- ``project-migrate`` (the seeded ``beta``): each of beta's volumes, groups and its image
  on dst once; each volume's content digest read from the Ceph and file backends equal
  to the source's, the image's sha512; left over: a staging RBD image on dst, a
  ``stackhop-*`` snapshot on a source volume; after the undo dst's beta (volumes, images,
  networks, subnets, routers, ports, floating IPs, groups and rules, keypairs, quotas,
  role assignments) lists exactly as before.

    .venv/bin/python bench/chaos_kills.py                              # 4 trials per command
    .venv/bin/python bench/chaos_kills.py --commands move-store --kills 10 --seed 3
    .venv/bin/python bench/chaos_kills.py --commands images-copy --kills 1 --journal deleted \
        --no-save
    .venv/bin/python bench/chaos_kills.py --commands servers-migrate --kills 20 --label servers

Results: ``bench/results/chaos-kills-<date>.json`` and ``.md`` (with the command). Goal
(issue 17): every trial completes, 0 duplicates, 0 missing, all data equal, nothing left
over, one-line stops, dst (src for move-store) as before, with the journal kept and
deleted.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from chaos_common import kill_trials, results_name, save_results  # noqa: E402
from testbed import layout, outputs  # noqa: E402

for _line in outputs.env_lines():  # the testbed's environment, as `source env.sh` gives it
    if _line.startswith("export "):
        _key, _, _value = _line[len("export ") :].partition("=")
        os.environ.setdefault(_key, _value)

from testbed.openstack.glance import store_dir  # noqa: E402
from testbed.undo import undo_migration  # noqa: E402
from tests.functional.servers_support import build_web_server  # noqa: E402
from tests.functional.test_images_support import (  # noqa: E402
    JSON_PATCH,
    MIB,
    ImageFactory,
    connect,
    download_sha512,
    glance_json,
    marked_copies,
)
from tests.functional.volumes_support import (  # noqa: E402
    Sandbox,
    digest_of,
    file_backend_path,
    write_pattern,
)
from tests.support.beta import admin_role_in  # noqa: E402

from stackhop.journal import Journal  # noqa: E402
from stackhop.kinds.image import MARKER_PROPERTY, list_images  # noqa: E402
from stackhop.kinds.rest import call, paged  # noqa: E402
from stackhop.servers.gather import STOPPED_KEY, released_from  # noqa: E402
from stackhop.servers.migrate import COMMAND as SERVERS_COMMAND  # noqa: E402
from stackhop.servers.steps import SOURCE_KEY as SERVER_SOURCE_KEY  # noqa: E402
from stackhop.volumes.cinder_adopt import MARKER as VOLUME_MARKER  # noqa: E402
from stackhop.volumes.rbd_ends import cluster_of  # noqa: E402
from stackhop.volumes.storage import load_storage_map  # noqa: E402

COMMANDS = ("images-copy", "move-store", "project-migrate", "servers-migrate")
#: project migrate: frank's keypair, whose user is not on dst, is a conflict every run.
CONFLICT_EXIT = 10
BETA = "beta"
COUNTS = ("duplicates", "missing", "data_mismatches", "leftovers")
#: Commands whose rollback may leave what a lost journal's run made (counted, then swept).
LEFT_AFTER_UNDO = ("project-migrate", "servers-migrate")


class Subject(Protocol):
    """A command under trial: its starting state, its command line, its counts."""

    name: str

    def prepare(self) -> None:
        """Make the starting state of a trial."""
        ...

    def fresh_journal(self, journal: Path) -> None:
        """Make the journal a trial's first run starts with, and a deleted one goes back to
        (nothing: an empty journal)."""
        ...

    def argv(self, journal: Path) -> list[str]:
        """The command line (after ``stackhop``) of one run with ``journal``."""
        ...

    def done(self, proc: subprocess.CompletedProcess[str]) -> bool:
        """Whether this run completed the command."""
        ...

    def check(self) -> dict[str, Any]:
        """Duplicates, missing, data mismatches and leftovers, by an independent listing."""
        ...

    def restore(self, journal: Path) -> dict[str, Any]:
        """Back to the starting state; whether it holds (``as_before``) and what it took."""
        ...

    def close(self) -> None:
        """Remove everything the subject made."""
        ...


class _EmptyJournal:
    def fresh_journal(self, journal: Path) -> None:
        return None


# -- Glance's file stores: data of no image ------------------------------------------------


def _store_files(cloud: layout.CloudLayout) -> dict[str, Path]:
    """Every file in the cloud's Glance file stores and staging area, by its image ID."""
    fast = store_dir(cloud, "fast")
    found: dict[str, Path] = {}
    for directory in (fast, store_dir(cloud, "slow"), fast.parent.parent / "staging"):
        for path in directory.iterdir() if directory.is_dir() else ():
            found[path.name.split(".", 1)[0]] = path
    return found


def _orphan_files(conn: Any, cloud: layout.CloudLayout) -> set[str]:
    """Files of the cloud's Glance stores whose image does not exist."""
    images = {i["id"] for i in list_images(conn.image)}
    return {str(path) for image_id, path in _store_files(cloud).items() if image_id not in images}


def _delete_image(conn: Any, image_id: str) -> None:
    conn.image.patch(f"/images/{image_id}", json=[
        {"op": "replace", "path": "/protected", "value": False}], headers=JSON_PATCH)
    conn.image.delete(f"/images/{image_id}")


# -- images copy -----------------------------------------------------------------------------


class ImagesCopy(_EmptyJournal):
    """``images copy`` of a few images of ours from src to dst (new IDs, marked)."""

    name = "images-copy"

    def __init__(self, count: int) -> None:
        self.images = ImageFactory(connect("src"), connect("dst"),
                                   prefix=f"shkill-{uuid.uuid4().hex[:8]}-")
        sizes = [24, 40, 56]
        self.sources = [
            self.images.create(f"copy-{n}", sizes[n % 3] * MIB, protected=n % 3 == 1,
                               visibility="shared" if n % 3 == 2 else "private",
                               member_projects=("demo",) if n % 3 == 2 else ())
            for n in range(count)
        ]
        self.orphans_before = _orphan_files(self.images.dst, layout.DST)

    def prepare(self) -> None:
        pass  # the sources stay; restore() empties dst

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "images", "copy", "--from", "src", "--to", "dst",
                "--image", *(i["id"] for i in self.sources)]

    def done(self, proc: subprocess.CompletedProcess[str]) -> bool:
        return proc.returncode == 0

    def _ours_on_dst(self) -> list[dict[str, Any]]:
        return [i for i in list_images(self.images.dst.image)
                if str(i.get("name") or "").startswith(self.images.prefix)
                or i.get(MARKER_PROPERTY) in {s["id"] for s in self.sources}]

    def check(self) -> dict[str, Any]:
        row = dict.fromkeys(COUNTS, 0)
        findings: list[str] = []
        on_dst = self._ours_on_dst()
        for source in self.sources:
            marked = [i for i in on_dst if i.get(MARKER_PROPERTY) == source["id"]]
            active = [i for i in marked if i.get("status") == "active"]
            row["duplicates"] += max(0, len(active) - 1)
            row["missing"] += not active
            for copy in active:
                same = {f: copy.get(f) for f in ("os_hash_value", "size", "protected",
                                                 "visibility", "name")}
                want = {f: source.get(f) for f in same}
                if same != want or download_sha512(self.images.dst, copy["id"]) \
                        != source["os_hash_value"]:
                    row["data_mismatches"] += 1
                    findings.append(f"copy {copy['id']} of {source['id']} differs")
        for image in on_dst:
            if image.get("status") != "active" or image.get(MARKER_PROPERTY) is None:
                row["leftovers"] += 1
                findings.append(f"dst image {image['id']} {image.get('status')}, "
                                f"marker {image.get(MARKER_PROPERTY)}")
        return {**row, "findings": findings}

    def restore(self, journal: Path) -> dict[str, Any]:
        for image in self._ours_on_dst():
            _delete_image(self.images.dst, image["id"])
        orphans = _orphan_files(self.images.dst, layout.DST) - self.orphans_before
        return {"as_before": not self._ours_on_dst() and not orphans,
                "orphan_files": sorted(orphans)}

    def close(self) -> None:
        self.images.cleanup()


# -- move-store ------------------------------------------------------------------------------


class MoveStore(_EmptyJournal):
    """``images move-store`` of fresh images of ours on src, store ``fast`` -> ``slow``."""

    name = "move-store"

    def __init__(self, count: int) -> None:
        self.count = count
        self.images = ImageFactory(connect("src"), connect("dst"),
                                   prefix=f"shkill-{uuid.uuid4().hex[:8]}-")
        self.made: list[dict[str, Any]] = []
        self.orphans_before = _orphan_files(self.images.src, layout.SRC)

    def prepare(self) -> None:
        sizes = [24, 40, 56]
        self.made = [self.images.create(f"move-{n}-{uuid.uuid4().hex[:4]}", sizes[n % 3] * MIB,
                                        protected=n % 3 == 1) for n in range(self.count)]

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "images", "move-store", "--cloud", "src",
                "--from-store", "fast", "--to-store", "slow",
                "--image", *(i["id"] for i in self.made)]

    def done(self, proc: subprocess.CompletedProcess[str]) -> bool:
        return proc.returncode == 0

    def check(self) -> dict[str, Any]:
        row = dict.fromkeys(COUNTS, 0)
        findings: list[str] = []
        src = self.images.src
        files = _store_files(layout.SRC)
        fast, slow = store_dir(layout.SRC, "fast"), store_dir(layout.SRC, "slow")
        for original in self.made:
            image_id = original["id"]
            now = glance_json(src, image_id)
            copies = [c for c in marked_copies(src, image_id) if c["id"] != image_id]
            named = [i for i in list_images(src.image, name=f"eq:{original['name']}")
                     if i["id"] != image_id]
            row["duplicates"] += len({c["id"] for c in copies + named})
            if now is None or now.get("status") != "active":
                row["missing"] += 1
                findings.append(f"{image_id}: {now and now.get('status')}")
                continue
            if (now.get("stores") != "slow" or now.get("os_hash_value")
                    != original["os_hash_value"]
                    or download_sha512(src, image_id) != original["os_hash_value"]):
                row["data_mismatches"] += 1
                findings.append(f"{image_id}: stores {now.get('stores')}, hash "
                                f"{str(now.get('os_hash_value'))[:12]}")
            left = []
            if now.get("protected") != original["protected"]:
                left.append(f"protected {now.get('protected')}, was {original['protected']}")
            left += [f"{k}={now[k]}" for k in ("os_glance_importing_to_stores",
                                               "os_glance_failed_import") if now.get(k)]
            left += [f"property {k}" for k in now if k.startswith("stackhop")]
            where = files.get(image_id)
            if where is not None and where.parent != slow:
                left.append(f"file {where}")
            if not (slow / image_id).exists() or (fast / image_id).exists():
                left.append("file store: not in slow only")
            if left:
                row["leftovers"] += len(left)
                findings.append(f"{image_id}: " + "; ".join(left))
        return {**row, "findings": findings}

    def restore(self, journal: Path) -> dict[str, Any]:
        for image in self.made:
            if glance_json(self.images.src, image["id"]) is not None:
                _delete_image(self.images.src, image["id"])
        orphans = _orphan_files(self.images.src, layout.SRC) - self.orphans_before
        return {"as_before": not orphans, "orphan_files": sorted(orphans)}

    def close(self) -> None:
        self.images.cleanup()


# -- project migrate -------------------------------------------------------------------------

#: Neutron objects, in the order they can be deleted: (path, listing key).
NEUTRON = (("floatingips", "floatingips"), ("routers", "routers"), ("ports", "ports"),
           ("subnets", "subnets"), ("networks", "networks"), ("subnetpools", "subnetpools"),
           ("security-group-rules", "security_group_rules"),
           ("security-groups", "security_groups"))


def dst_listing(dst: Any, project_id: str) -> dict[str, Any]:
    """What a migration of the project can change on dst, by ID (names where an ID says too
    little), listed by openstacksdk: every Neutron object and image of the cloud (the
    provider network the project's router uses comes along), the project's volumes, its
    role assignments and quotas, the keypairs of the Default domain's users."""
    state: dict[str, Any] = {
        path: sorted(o["id"] for o in paged(dst.network, f"/{path}", key))
        for path, key in NEUTRON
    }
    state["volumes"] = sorted(v.id for v in dst.block_storage.volumes(
        details=True, all_projects=True, project_id=project_id) if v.project_id == project_id)
    state["images"] = sorted(i["id"] for i in list_images(dst.image))
    users = sorted(u.id for u in dst.identity.users(domain_id="default"))
    state["role_assignments"] = sorted(
        f"{a.user['id']}:{a.role['id']}"
        for a in dst.identity.role_assignments(scope_project_id=project_id) if a.user)
    state["keypairs"] = sorted(
        f"{user}/{k['keypair']['name']}" for user in users
        for k in (call(dst.compute, "GET", f"/os-keypairs?user_id={user}",
                       microversion="2.10") or {}).get("keypairs", []))
    state["quotas"] = {name: _quota(*where)
                       for name, where in _quota_urls(dst, project_id).items()}
    return state


def _quota_urls(dst: Any, project_id: str) -> dict[str, tuple[Any, str, str]]:
    """Per service: (its proxy, the project's quota URL, the body's key)."""
    return {"compute": (dst.compute, f"/os-quota-sets/{project_id}", "quota_set"),
            "volume": (dst.block_storage, f"/os-quota-sets/{project_id}", "quota_set"),
            "network": (dst.network, f"/quotas/{project_id}", "quota")}


def _quota(service: Any, url: str, key: str) -> dict[str, Any]:
    body = (call(service, "GET", url) or {}).get(key, {})
    return {k: v for k, v in body.items() if k != "id"}


class ProjectMigrate(_EmptyJournal):
    """``project migrate`` of the seeded ``beta`` from src to dst, all its volumes."""

    name = "project-migrate"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.src, self.dst = connect("src"), connect("dst")
        self.project_id = str(self.src.identity.find_project(
            BETA, domain_id="default", ignore_missing=False).id)
        self.role = admin_role_in(self.dst, BETA)
        self.role.__enter__()
        self.before = dst_listing(self.dst, self.project_id)
        self.volumes = {v.id: v.name for v in self.src.block_storage.volumes(
            details=True, all_projects=True, project_id=self.project_id)
            if v.project_id == self.project_id}
        self.source_images = {i["id"]: i
                              for i in list_images(self.src.image, owner=self.project_id)}
        self.groups = sorted(g["name"] for g in paged(
            self.src.network, f"/security-groups?project_id={self.project_id}",
            "security_groups") if g["name"] != "default")
        self.digests = {v: digest_of("src", v) for v in self.volumes}
        self.snapshots_before = self._source_snapshots()
        self.out = work / "out"

    def prepare(self) -> None:
        self.out = self.work / f"out-{time.monotonic_ns()}"

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "project", "migrate", "--from", "src", "--to", "dst",
                "--project", BETA, "--all-volumes", "-o", str(self.out)]

    def done(self, proc: subprocess.CompletedProcess[str]) -> bool:
        report = self.out / "report.json"
        if proc.returncode not in (0, CONFLICT_EXIT) or not report.exists():
            return False
        phases = json.loads(report.read_text()).get("phases", [])
        return bool(phases) and all(p["status"] in ("done", "done earlier") for p in phases)

    def _source_snapshots(self) -> list[str]:
        found = []
        for volume in self.src.block_storage.volumes(details=True, all_projects=True,
                                                    project_id=self.project_id):
            if volume.project_id == self.project_id and volume.volume_type == "ceph":
                cluster = cluster_of(load_storage_map().backend("src", "ceph"))
                found += [f"{volume.id}@{s}" for s in cluster.snapshots(f"volume-{volume.id}")
                          if s.startswith("stackhop-")]
        return sorted(found)

    def check(self) -> dict[str, Any]:
        row = dict.fromkeys(COUNTS, 0)
        findings: list[str] = []
        dst = self.dst
        on_dst = [v for v in dst.block_storage.volumes(details=True, all_projects=True,
                                                       project_id=self.project_id)
                  if v.project_id == self.project_id]
        for source_id, name in self.volumes.items():
            copies = [v for v in on_dst if v.name == name
                      or str((v.metadata or {}).get(VOLUME_MARKER, "")).endswith(source_id)]
            row["duplicates"] += max(0, len(copies) - 1)
            row["missing"] += not copies
            for copy in copies:
                if copy.status != "available" or digest_of("dst", copy.id) \
                        != self.digests[source_id]:
                    row["data_mismatches"] += 1
                    findings.append(f"volume {name} {copy.id}: {copy.status}, digest differs")
        groups = [g["name"] for g in paged(dst.network,
                                           f"/security-groups?project_id={self.project_id}",
                                           "security_groups")]
        for name in self.groups:
            row["duplicates"] += max(0, groups.count(name) - 1)
            row["missing"] += name not in groups
        for source_id, source in self.source_images.items():
            copies = [i for i in marked_copies(dst, source_id) if i.get("status") == "active"]
            row["duplicates"] += max(0, len(copies) - 1)
            row["missing"] += not copies
            row["leftovers"] += len(marked_copies(dst, source_id)) - len(copies)
            for copy in copies:
                if download_sha512(dst, copy["id"]) != source["os_hash_value"]:
                    row["data_mismatches"] += 1
                    findings.append(f"image {copy['id']} of {source_id}: sha512 differs")
        return {**row, "findings": findings,
                "source_snapshots": len(self._source_snapshots())}

    def restore(self, journal: Path) -> dict[str, Any]:
        undone: list[str] = []
        error = ""
        try:
            undone = undo_migration(journal)
        except subprocess.CalledProcessError as exc:
            error = f"undo: {exc.cmd[-4:]} exited {exc.returncode}"
        after = dst_listing(self.dst, self.project_id)
        left = {k: len(set(after[k]) - set(self.before[k])) for k in after if k != "quotas"}
        left["quotas"] = sum(after["quotas"][s] != self.before["quotas"][s]
                             for s in self.before["quotas"])
        swept = self._sweep(after) if any(left.values()) else 0
        stale = sorted(set(self._source_snapshots()) - set(self.snapshots_before))
        cluster = cluster_of(load_storage_map().backend("src", "ceph"))
        for snapshot in stale:
            volume, _, snap = snapshot.partition("@")
            cluster.remove_snapshot(f"volume-{volume}", snap)
        return {"undone": len(undone), "undo_error": error,
                "left_after_undo": {k: n for k, n in left.items() if n},
                "swept": swept, "stale_source_snapshots": stale,
                "as_before": dst_listing(self.dst, self.project_id) == self.before}

    def _sweep(self, after: dict[str, Any]) -> int:
        """Remove what is on dst's beta and was not before (a lost journal's run's objects,
        which the re-run adopted and its undo leaves); put the quotas back."""
        dst, before, removed = self.dst, self.before, 0
        extra = {k: [i for i in after[k] if i not in before[k]] for k in after if k != "quotas"}
        for object_id in extra.pop("floatingips"):
            call(dst.network, "DELETE", f"/floatingips/{object_id}", missing_ok=True)
            removed += 1
        for router in extra["routers"]:
            for port in paged(dst.network, f"/ports?device_id={router}", "ports"):
                if port["device_owner"].startswith("network:router_interface"):
                    call(dst.network, "PUT", f"/routers/{router}/remove_router_interface",
                         json={"port_id": port["id"]})
            call(dst.network, "PUT", f"/routers/{router}",
                 json={"router": {"external_gateway_info": {}}})
        for path, _ in NEUTRON[1:]:
            for object_id in extra[path]:
                call(dst.network, "DELETE", f"/{path}/{object_id}", missing_ok=True)
                removed += 1
        backend = load_storage_map().backend("dst", "ceph")
        for volume_id in extra["volumes"]:
            cluster = cluster_of(backend)
            for snap in cluster.snapshots(f"volume-{volume_id}") or []:
                if snap.startswith("stackhop-"):
                    cluster.remove_snapshot(f"volume-{volume_id}", snap)
            volume = dst.block_storage.get_volume(volume_id)
            dst.block_storage.delete_volume(volume, force=True)
            dst.block_storage.wait_for_delete(volume, interval=1, wait=300)
            removed += 1
        for image_id in extra["images"]:
            _delete_image(dst, image_id)
            removed += 1
        for keypair in extra["keypairs"]:
            user, _, name = keypair.partition("/")
            call(dst.compute, "DELETE", f"/os-keypairs/{name}?user_id={user}",
                 microversion="2.10", missing_ok=True)
            removed += 1
        for assignment in extra["role_assignments"]:
            user, _, role = assignment.partition(":")
            dst.identity.unassign_project_role_from_user(self.project_id, user, role)
            removed += 1
        for name, (service, url, key) in _quota_urls(dst, self.project_id).items():
            was = before["quotas"][name]
            changed = {k: v for k, v in was.items() if _quota(service, url, key).get(k) != v}
            if changed:
                call(service, "PUT", url, json={key: changed})
                removed += 1
        return removed

    def close(self) -> None:
        self.role.__exit__(None, None, None)


class ServersMigrate:
    """``servers migrate`` of one web server (``tests.functional.servers_support``)."""

    name = "servers-migrate"

    def __init__(self, work: Path) -> None:
        self.work = work
        self.box = Sandbox.create("srvkill")
        try:
            self.web = build_web_server(self.box)
            for volume, seed in ((self.web.root, "root"), (self.web.data, "data")):
                write_pattern(file_backend_path("src", volume.id), seed, [0, 1, 512])
            self.digests = {v.id: digest_of("src", v.id) for v in (self.web.root, self.web.data)}
            self.networking = work / "networking.sqlite"
            subprocess.run(
                [sys.executable, "-m", "stackhop.cli.main", "--journal", str(self.networking),
                 "migrate", "--from", "src", "--to", "dst", "--project", self.box.name,
                 "--networks", "--routers", "--security-groups", "--server-groups"],
                check=True, capture_output=True)
            self.before = self._dst_listing()
        except BaseException:
            self.box.close()
            raise

    def prepare(self) -> None:
        return None  # restore() left the source running and dst's project as before

    def fresh_journal(self, journal: Path) -> None:
        shutil.copyfile(self.networking, journal)  # the networking's ID map

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "servers", "migrate", "--from", "src", "--to",
                "dst", "--project", self.box.name, "--server", "srv-app", "--method",
                "stream"]

    def done(self, proc: subprocess.CompletedProcess[str]) -> bool:
        return proc.returncode == 0

    def _dst_project(self) -> str:
        return self.box.ids["dst"]

    def _dst_listing(self) -> dict[str, Any]:
        dst, project = self.box.dst, self._dst_project()
        return {
            "servers": sorted(s.id for s in dst.compute.servers(all_projects=True,
                                                                project_id=project)),
            "ports": sorted(p.id for p in dst.network.ports(project_id=project)),
            "floatingips": sorted(f.id for f in dst.network.ips(project_id=project)),
            "volumes": sorted(v.id for v in self.box.volumes("dst")),
        }

    def _copies(self) -> dict[str, list[Any]]:
        on_dst = self.box.volumes("dst")
        return {source: [v for v in on_dst if str((v.metadata or {}).get(VOLUME_MARKER, ""))
                         .endswith(source)] for source in self.digests}

    def check(self) -> dict[str, Any]:
        row = dict.fromkeys(COUNTS, 0)
        findings: list[str] = []
        src, dst, web = self.box.src, self.box.dst, self.web
        twins = [s for s in dst.compute.servers(all_projects=True, project_id=self._dst_project())
                 if (s.metadata or {}).get(SERVER_SOURCE_KEY) == web.server.id]
        row["duplicates"] += max(0, len(twins) - 1)
        row["missing"] += not twins
        for twin in twins:
            if twin.status != "ACTIVE":
                findings.append(f"destination server {twin.id} is {twin.status}")
                row["data_mismatches"] += 1
        if src.compute.get_server(web.server.id).status != "SHUTOFF":
            findings.append("the source server is not SHUTOFF")
            row["data_mismatches"] += 1
        for source, copies in self._copies().items():
            row["duplicates"] += max(0, len(copies) - 1)
            row["missing"] += not copies
            for copy in copies:
                if digest_of("dst", copy.id) != self.digests[source]:
                    row["data_mismatches"] += 1
                    findings.append(f"volume {copy.id} of {source}: digest differs")
        ours = {p.id for t in twins for p in dst.network.ports(device_id=t.id)}
        before = set(self.before["ports"])
        for port in dst.network.ports(project_id=self._dst_project()):
            if port.id not in before and port.id not in ours:
                row["leftovers"] += 1
                findings.append(f"destination port {port.id} ({port.name}) of no server")
        ips = [f for f in dst.network.ips(project_id=self._dst_project())
               if f.id not in self.before["floatingips"]]
        moved = [f for f in ips if f.port_id in ours
                 and f.floating_ip_address == web.fip.floating_ip_address]
        row["missing"] += not moved
        row["leftovers"] += len(ips) - len(moved)
        return {**row, "findings": findings}

    def restore(self, journal: Path) -> dict[str, Any]:
        error = ""
        with Journal(journal) as jr:
            runs = [r.id for r in jr.runs() if r.command == SERVERS_COMMAND]
            copied = {op.destination_id for op in jr.operations(kind="volume")
                      if op.destination_id}
        undone = 0
        if runs:
            rollback = subprocess.run(
                [sys.executable, "-m", "stackhop.cli.main", "--journal", str(journal),
                 "rollback", "--to", "dst", *[a for r in runs for a in ("--run", r)]],
                capture_output=True, text=True, check=False)
            if rollback.returncode != 0:
                error = f"rollback exited {rollback.returncode}: {rollback.stderr[-300:]}"
            undone = len(runs)
        dst = self.box.dst
        for volume_id in copied:
            volume = dst.block_storage.find_volume(volume_id, ignore_missing=True,
                                                  all_projects=True)
            if volume is not None:
                _delete_volume(dst, volume)
        after = self._dst_listing()
        left = {k: len(set(after[k]) - set(self.before[k])) for k in after}
        swept = self._sweep(after) if any(left.values()) else 0
        source = self.box.src.compute.get_server(self.web.server.id)
        fip = self.box.src.network.get_ip(self.web.fip.id)
        as_before = (source.status == "ACTIVE" and STOPPED_KEY not in (source.metadata or {})
                     and fip.port_id == self.web.front.id
                     and released_from(fip.description) is None
                     and self._dst_listing() == self.before)
        if source.status != "ACTIVE":  # the next trial starts from a running source
            self.box.src.compute.start_server(source)
            self.box.src.compute.wait_for_server(source, status="ACTIVE", interval=1, wait=300)
        return {"undone": undone, "undo_error": error,
                "left_after_undo": {k: n for k, n in left.items() if n}, "swept": swept,
                "as_before": as_before}

    def _sweep(self, after: dict[str, Any]) -> int:
        """Remove from dst's project what a lost journal's run made and no rollback knew."""
        dst, removed = self.box.dst, 0
        extra = {k: [i for i in after[k] if i not in self.before[k]] for k in after}
        for server_id in extra["servers"]:
            server = dst.compute.get_server(server_id)
            dst.compute.delete_server(server)
            dst.compute.wait_for_delete(server, interval=1, wait=300)
            removed += 1
        for object_id in extra["floatingips"]:
            dst.network.delete_ip(object_id, ignore_missing=True)
            removed += 1
        for object_id in extra["ports"]:
            dst.network.delete_port(object_id, ignore_missing=True)
            removed += 1
        for volume_id in extra["volumes"]:
            volume = dst.block_storage.find_volume(volume_id, ignore_missing=True,
                                                   all_projects=True)
            if volume is not None:  # a data volume went with its server
                _delete_volume(dst, volume)
            removed += 1
        return removed

    def close(self) -> None:
        try:
            undo_migration(self.networking)
        finally:
            self.box.close()


def _delete_volume(dst: Any, volume: Any) -> None:
    if volume.status == "in-use":
        for attachment in volume.attachments or []:
            dst.compute.delete_volume_attachment(attachment["server_id"], volume.id)
        dst.block_storage.wait_for_status(volume, "available", interval=1, wait=300)
    dst.block_storage.delete_volume(volume)
    dst.block_storage.wait_for_delete(volume, interval=1, wait=300)


# -- the trials ------------------------------------------------------------------------------


def _until_done(env: dict[str, str], argv: list[str], max_runs: int,
                done: Callable[[subprocess.CompletedProcess[str]], bool]) -> dict[str, Any]:
    started, stops, exits = time.monotonic(), list[str](), list[int]()
    for _ in range(max_runs):
        proc = subprocess.run([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                              capture_output=True, text=True, check=False)
        exits.append(proc.returncode)
        if "Traceback" in proc.stderr:
            stops.append(f"NOT ONE LINE: {proc.stderr[-600:]}")
        if done(proc):
            return {"runs": len(exits), "exits": exits, "stops": stops, "completed": True,
                    "seconds": round(time.monotonic() - started, 2)}
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        if "Traceback" not in proc.stderr:
            stops.append(lines[-1] if lines[-1].startswith("stackhop") else
                         f"NOT ONE LINE: {proc.stderr[-600:]}")
    return {"runs": len(exits), "exits": exits, "stops": stops, "completed": False,
            "seconds": round(time.monotonic() - started, 2)}


def _forget(journal: Path) -> None:
    """Delete the journal, its write-ahead log and shared memory (SQLite WAL)."""
    for path in (journal, Path(f"{journal}-wal"), Path(f"{journal}-shm")):
        path.unlink(missing_ok=True)


def _trial(subject: Subject, env: dict[str, str], work: Path, at: float, keep: bool,
           max_runs: int) -> dict[str, Any]:
    subject.prepare()
    journal = work / f"{subject.name}-{time.monotonic_ns()}.sqlite"
    subject.fresh_journal(journal)
    argv = subject.argv(journal)
    with subprocess.Popen([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            proc.wait(at)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # our own child, by its handle
            proc.wait()
            finished = False
    if not keep:
        _forget(journal)
        subject.fresh_journal(journal)
    row: dict[str, Any] = {"command": subject.name, "journal": "kept" if keep else "deleted",
                           "killed_at_s": round(at, 2), "finished_before_kill": finished}
    row["rerun"] = _until_done(env, argv, max_runs, subject.done)
    row.update(subject.check())
    row.update(subject.restore(journal))
    return row


def _baseline(subject: Subject, env: dict[str, str], work: Path) -> dict[str, Any]:
    """One uninterrupted run, counted and undone like a trial's: how long a run takes."""
    subject.prepare()
    journal = work / f"{subject.name}-baseline.sqlite"
    subject.fresh_journal(journal)
    run = _until_done(env, subject.argv(journal), 1, subject.done)
    if not run["completed"]:
        raise SystemExit(f"the uninterrupted {subject.name} failed: {run['stops']}")
    return {"command": subject.name, "rerun": run, **subject.check(),
            **subject.restore(journal)}


def _ok(row: dict[str, Any]) -> bool:
    return (row["rerun"]["completed"] and all(row[c] == 0 for c in COUNTS)
            and row["as_before"] and not row.get("undo_error")
            and not row.get("stale_source_snapshots") and not row.get("orphan_files")
            and not (row["journal"] == "kept" and row.get("left_after_undo"))
            and not any(s.startswith("NOT ONE LINE") for s in row["rerun"]["stops"]))


def _table(rows: list[dict[str, Any]], commands: list[str],
           baselines: dict[str, float]) -> list[str]:
    table = ["| command | journal | trials | killed before the end | re-runs | duplicates "
             "| missing | data differs | left over | left after undo | not one line "
             "| as before |", "|" + "---|" * 12]
    for command in commands:
        for kept in ("kept", "deleted"):
            these = [r for r in rows if r["command"] == command and r["journal"] == kept]
            if not these:
                continue
            sums = [sum(r[c] for r in these) for c in COUNTS]
            undo = sum(sum(r.get("left_after_undo", {}).values()) for r in these)
            lines = sum(s.startswith("NOT ONE LINE") for r in these for s in r["rerun"]["stops"])
            table.append(
                f"| {command} | {kept} | {len(these)} "
                f"| {sum(not r['finished_before_kill'] for r in these)} "
                f"| {sum(r['rerun']['runs'] for r in these)} | "
                + " | ".join(map(str, sums))
                + f" | {undo if command in LEFT_AFTER_UNDO else '-'} | {lines} "
                f"| {sum(r['as_before'] for r in these)}/{len(these)} |"
            )
    table.append("")
    table.append("Uninterrupted run, s: " + ", ".join(f"{c} {s}" for c, s in baselines.items()))
    return table


def _subject(command: str, images: int, work: Path) -> Subject:
    if command == "images-copy":
        return ImagesCopy(images)
    if command == "move-store":
        return MoveStore(images)
    if command == "servers-migrate":
        return ServersMigrate(work)
    return ProjectMigrate(work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--commands", default=",".join(COMMANDS))
    parser.add_argument("--kills", type=int, default=4, help="trials per command (the journal "
                        "kept and deleted alternately)")
    parser.add_argument("--journal", choices=("both", "kept", "deleted"), default="both",
                        help="what happens to the killed run's journal (both: alternately)")
    parser.add_argument("--images", type=int, default=3, help="images of images-copy and "
                        "move-store")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-runs", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--label", help="results as chaos-kills-<date>-LABEL")
    args = parser.parse_args(argv)
    commands = args.commands.split(",")
    unknown = sorted(set(commands) - set(COMMANDS))
    if unknown:
        parser.error(f"unknown command {', '.join(unknown)}; known: {', '.join(COMMANDS)}")
    env = {**os.environ,
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="stackhop-kills-") as tmp:
        for command in commands:
            work = Path(tmp) / command
            work.mkdir()
            subject = _subject(command, args.images, work)
            try:
                uninterrupted = _baseline(subject, env, work)
                print(json.dumps({"uninterrupted": uninterrupted}), flush=True)
                baselines[command] = uninterrupted["rerun"]["seconds"]
                rows += kill_trials(
                    args.kills, args.journal, rng, baselines[command],
                    functools.partial(_trial, subject, env, work, max_runs=args.max_runs))
            finally:
                subject.close()
    ok = bool(rows) and all(_ok(r) for r in rows)
    table = _table(rows, commands, baselines)
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            results_name("chaos-kills", args.label), "chaos_kills.py", argv,
            {"seed": args.seed, "rows": rows, "baselines": baselines, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
