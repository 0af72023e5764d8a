"""What each phase of ``stackhop project migrate`` does.

1. **gather** — the project on the source and its counterpart on the
   destination (same ID, else (domain, name), else ``--project-map``), an
   inventory of both sides, the volumes selected (flags or interactive) with
   the copy method of each, and the volume preflight (quota, credentials,
   storage hosts) — before anything moves.
2. **export** — the project's keypairs (of its members), quotas and security
   groups, and its images' metadata, into the run's archive
   (``<output>/resources.tar.zst``).
3. **import** — the archive's resources into the destination (the engine of
   ``stackhop import``), the images (``stackhop images copy``, IDs kept where
   the destination allows), then the volumes (``stackhop volumes copy``),
   each volume's backup written from the same read when ``--backup-to`` is
   given. The volumes of the selected servers are left to the next phase.
4. **servers** — the selected servers (``--server``, ``--all-servers``) moved as
   ``stackhop servers migrate`` moves them: their volumes pre-copied while they run,
   then the cutover (:mod:`stackhop.project.servers`).
5. **usage** — the project's usage archive and report (``stackhop usage
   archive``) under ``<output>/usage``.
6. **cleanup** — the temporaries of the volume copies removed, and a final
   verify of everything moved: resources compared with the archive, images
   by checksum, volumes by their verified content digests.

Each phase calls the library of the matching command, so a phase behaves
exactly as that command would, journal included.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from stackhop import resources
from stackhop.archive import ArchiveReader, ArchiveWriter
from stackhop.clouds import cloud_config, connect
from stackhop.engine import Engine, RunResult
from stackhop.errors import ConflictError, OperationFailedError, UsageError, VerificationError
from stackhop.events import Event, EventSink, EventType
from stackhop.images import copy as image_copy
from stackhop.images.common import images_of_projects, inactive
from stackhop.journal import Journal
from stackhop.kinds.identity import list_projects, load_operator_map, map_identities
from stackhop.kinds.volume_type import VOLUME_TYPE_NAME
from stackhop.project import servers as project_servers
from stackhop.project import volumes as project_volumes
from stackhop.project.phases import Facts, PhaseOutcome, PhaseResult, PhaseRunner
from stackhop.project.report import CONFLICT, MigrationReport, objects_of_runs
from stackhop.project.usage import archive_project_usage
from stackhop.volumes.reshape import Reshape

ARCHIVE_NAME = "resources.tar.zst"

#: The resource kinds a project migration carries (all of them).
RESOURCE_KINDS = tuple(resources.selected_kinds(()))  # opt-in kinds (identity) stay out


@dataclass(frozen=True)
class MigrationRequest:
    """What the operator asked for."""

    source_cloud: str
    destination_cloud: str
    project: str
    output_dir: Path
    volumes: tuple[str, ...] = ()
    all_volumes: bool = False
    #: ``auto`` picks per volume: rbd when both backends are Ceph, stream when both are
    #: file backends with an ssh host, else image.
    method: str = "auto"
    backup_to: str | None = None
    #: ``--trust-writes``: volumes copied by the rbd method are verified from the writes
    #: librbd confirmed, not by reading the destination back.
    trust_writes: bool = False
    #: Destination volume types and sizes (``--type-map``, ``--min-size``, ``--grow-to``).
    reshape: Reshape = field(default_factory=Reshape)
    #: The kinds' import options by argparse attribute (``--create-volume-types``,
    #: ``--keep-segmentation-ids``), for the resources phase.
    kind_options: Mapping[str, bool] = field(default_factory=dict)
    #: ``--grant-role``: the role the operator's user holds in the destination project while
    #: volumes are copied (granted and removed by stackhop only when it was missing).
    grant_role: str | None = None
    usage_start: datetime | None = None
    usage_end: datetime | None = None
    workers: int = 2
    allow_in_use: bool = False
    storage_map: str | None = None
    user_map: str | None = None
    #: ``--domain-map SRC=DST`` pairs (they win over the user map file's ``domains``).
    domain_map: dict[str, str] = field(default_factory=dict)
    disabled_users: str | None = None
    project_map: str | None = None
    #: ``--server`` / ``--all-servers``: the servers the servers phase moves.
    servers: tuple[str, ...] = ()
    all_servers: bool = False
    #: ``--cutover``: how the servers phase stops each source server (stop, shelve, none).
    cutover: str = "stop"
    #: ``--executor celery``: the resources phase's creates and the volume passes run on
    #: ``stackhop worker`` processes (``--broker``: the broker, without a password).
    executor: str = "local"
    broker: str | None = None
    #: Interactive selection: given the project's volumes, return the chosen ones.
    choose_volumes: Callable[[list[Any]], list[Any]] | None = field(default=None, compare=False)


@dataclass
class Migration:
    """One project migration in progress: the connections, journal and the phases' steps."""

    request: MigrationRequest
    journal: Journal
    run_id: str
    events: EventSink
    #: The phases' engine's stop event (Ctrl-C): every run a phase starts stops with it.
    stop: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.request.source_cloud == self.request.destination_cloud:
            raise UsageError("--from and --to name the same cloud; a project migrates between two")
        self.source = connect(self.request.source_cloud)
        self.destination = connect(self.request.destination_cloud)
        self.user_map = (
            load_operator_map(self.request.user_map)
            .with_domains(self.request.domain_map)
            .with_disabled_users(self.request.disabled_users)
        )
        self.project_map = load_operator_map(self.request.project_map)
        self.archive_path = self.request.output_dir / ARCHIVE_NAME
        #: The Celery app of ``--executor celery`` (None: everything runs here).
        self.app: Any = None
        if self.request.executor == "celery":
            from stackhop.executor.celery_app import make_app
            from stackhop.executor.names import broker_url

            self.app = make_app(broker_url(self.request.broker))

    @property
    def scope(self) -> str:
        return f"project {self.request.source_cloud}->{self.request.destination_cloud}"

    def key(self, project_id: str) -> str:
        """Names this migration in the ``args`` of every run it starts (see :mod:`.report`)."""
        return f"{self.request.source_cloud}->{self.request.destination_cloud}:{project_id}"

    # -- 1. gather -----------------------------------------------------------

    def source_project(self) -> dict[str, Any]:
        """The source project named by ``--project`` (ID or name), as a record."""
        wanted = self.request.project
        matches = [p for p in list_projects(self.source) if wanted in (p["id"], p["name"])]
        if not matches:
            raise UsageError(
                f"no project {wanted!r} on {self.request.source_cloud}; "
                "pass a project ID or name that exists there"
            )
        if len(matches) > 1:
            raise UsageError(
                f"project name {wanted!r} is in several domains of {self.request.source_cloud}; "
                "pass its ID"
            )
        return matches[0]

    def gather(self, _: Mapping[str, Facts]) -> PhaseResult:
        project = self.source_project()
        identities = map_identities([], [project], self.destination, project_map=self.project_map)
        destination_id = identities.projects.get(project["id"])
        if destination_id is None:
            raise ConflictError(
                f"project {project['name']} ({project['id']}) has no counterpart on "
                f"{self.request.destination_cloud}: create it there (same name and domain) or "
                "map it with --project-map"
            )
        servers = project_servers.select(self, project["id"])
        selection = project_volumes.select(
            self, project["id"], destination_id, leave=project_servers.attached(servers)
        )
        inventory = {
            "source": project_volumes.inventory(self.source, project["id"]),
            "destination": project_volumes.inventory(self.destination, destination_id),
        }
        facts = {
            "project": {
                "id": project["id"],
                "name": project["name"],
                "domain": project.get("domain_name") or project.get("domain_id"),
            },
            "destination_project_id": destination_id,
            "volumes": selection,
            "servers": servers,
            "inventory": inventory,
        }
        src = inventory["source"]
        summary = (
            f"project {project['name']} -> {destination_id}; source has "
            f"{src['images']} images, {src['volumes']} volumes ({src['gigabytes']} GiB); "
            f"{len(selection)} volume(s) selected, preflight passed"
        )
        if servers:
            summary += f"; {len(servers)} server(s) selected, for the servers phase"
        return PhaseResult(summary, facts)

    # -- 2. export -----------------------------------------------------------

    def export(self, facts: Mapping[str, Facts]) -> PhaseResult:
        project_id = facts["gather"]["project"]["id"]
        self.request.output_dir.mkdir(parents=True, exist_ok=True)
        config = cloud_config(self.request.source_cloud)
        with ArchiveWriter(
            self.archive_path,
            source_cloud=self.request.source_cloud,
            source_auth_url=config.auth_url or "",
            overwrite=True,
        ) as writer:
            counts = resources.export(
                self.source, writer, RESOURCE_KINDS, projects=[project_id], events=self.events
            )
            counts.update(image_archive_export(self.source, writer, project_id, self.events))
        total = sum(counts.values())
        detail = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        return PhaseResult(
            f"{total} records into {self.archive_path} ({detail})",
            {"archive": str(self.archive_path), "counts": counts},
        )

    # -- 3. import -----------------------------------------------------------

    def import_(self, facts: Mapping[str, Facts]) -> PhaseResult:
        project_id = facts["gather"]["project"]["id"]
        with ArchiveReader(self.archive_path) as reader:
            resources_run = self.import_resources(reader, project_id)
        images_run = self.copy_images(project_id)
        for run in (resources_run, images_run):
            if run.failed:
                raise OperationFailedError(failed=run.failed, run=run.run_id)
        volume_runs = project_volumes.copy(self, facts["gather"])
        done = resources_run.count("done") + images_run.count("done")
        skipped = resources_run.count("skipped") + images_run.count("skipped")
        conflicts = resources_run.count("conflict") + images_run.count("conflict")
        copied = sum(r["copied"] for r in volume_runs)
        summary = (
            f"{done} resources and images created or updated, {skipped} already there, "
            f"{conflicts} conflict(s) left as they are; {copied} volume(s) copied"
        )
        if self.request.backup_to:
            summary += f", backups in {self.request.backup_to}"
        return PhaseResult(
            summary,
            {
                "resources_run": resources_run.run_id,
                "images_run": images_run.run_id,
                "volume_runs": volume_runs,
                "conflicts": self.conflict_identities([resources_run.run_id, images_run.run_id]),
            },
        )

    def conflict_identities(self, run_ids: list[str]) -> list[str]:
        """``kind identity`` of every object the runs left alone as a conflict."""
        return sorted(
            f"{line.kind} {line.identity}"
            for line in objects_of_runs(self.journal, run_ids)
            if line.outcome == CONFLICT
        )

    def prepare(self, records: Any, journal: Journal | None = None) -> resources.Prepared:
        """The project's resource records mapped on the destination, ready to plan or verify
        (volume types through ``--type-map``, as the volumes are)."""
        prepared = resources.prepare(
            records,
            list(RESOURCE_KINDS),
            self.destination,
            self.request.destination_cloud,
            user_map=self.user_map,
            project_map=self.project_map,
            journal=journal,
            options=self.request.kind_options,
        )
        prepared.resolver.maps[VOLUME_TYPE_NAME] = dict(self.request.reshape.type_map)
        # A volume type missing on the destination is an error now, unless it may be created.
        resources.check_counterparts(prepared, self.destination, self.request.destination_cloud)
        return prepared

    def import_resources(self, reader: ArchiveReader, project_id: str) -> RunResult:
        prepared = self.prepare(reader, self.journal)
        warning = resources.unmapped_warning(prepared.identities, prepared)
        if warning:
            self.events.emit(warning)
        operations = resources.plan_import(prepared, self.destination, False, self.request.workers)
        executor = None
        if self.app is not None:
            from stackhop.executor.dispatch import celery_executor, default_route

            executor = celery_executor(self.app, default_route, self.request.workers)
        engine = Engine(
            self.journal,
            self.destination,
            prepared.resolver,
            workers=self.request.workers,
            events=self.events,
            stop=self.stop,
            executor=executor,
        )
        return engine.run(
            operations,
            command="project migrate: import",
            source_cloud=self.request.source_cloud,
            destination_cloud=self.request.destination_cloud,
            args={"project_migration": self.key(project_id), "archive": str(self.archive_path)},
        )

    def image_copier(self) -> image_copy.ImageCopier:
        return image_copy.ImageCopier(
            self.source,
            self.destination,
            self.journal,
            source_cloud=self.request.source_cloud,
            destination_cloud=self.request.destination_cloud,
            keep_id=True,
            workers=self.request.workers,
            events=self.events,
            project_map=self.project_map,
            stop=self.stop,
        )

    def project_images(self, project_id: str) -> list[dict[str, Any]]:
        images = images_of_projects(self.source, [project_id])
        for line in inactive(images):
            self.events.emit(
                Event(EventType.WARNING, kind="glance.image", message=f"not copied: {line}")
            )
        return [i for i in images if i.get("status") == "active"]

    def copy_images(self, project_id: str) -> RunResult:
        copier = self.image_copier()
        operations = copier.plan(self.project_images(project_id))
        return copier.run(
            operations, args={"project_migration": self.key(project_id), "keep_id": True}
        )

    # -- 4. servers ----------------------------------------------------------

    def servers(self, facts: Mapping[str, Facts]) -> PhaseResult:
        return project_servers.migrate(self, facts["gather"])

    # -- 5. usage ------------------------------------------------------------

    def usage(self, facts: Mapping[str, Facts]) -> PhaseResult:
        return archive_project_usage(self, facts["gather"]["project"])

    # -- 6. cleanup and final verify ----------------------------------------

    def cleanup(self, facts: Mapping[str, Facts]) -> PhaseResult:
        removed = project_volumes.cleanup(self, facts["import"]["volume_runs"])
        with ArchiveReader(self.archive_path) as reader:
            # Through the journal's ID map: a floating IP's port is a server's, which the
            # servers phase moved (no resource record names it).
            checked, mismatches = resources.verify(
                self.prepare(reader, self.journal), self.destination
            )
        images = self.verify_images(facts["gather"]["project"]["id"])
        volumes = project_volumes.verify(self, facts["gather"]["volumes"])
        # Conflicts were reported by the import and left alone on purpose: not a surprise.
        known = set(facts["import"].get("conflicts", []))
        differ = [m.as_dict() for m in mismatches if f"{m.kind} {m.identity}" not in known]
        if differ or images["differ"] or volumes["unverified"]:
            first = (
                f" (first: {differ[0]['kind']} {differ[0]['identity']}: {differ[0]['problem']})"
                if differ
                else ""
            )
            raise VerificationError(
                f"final verify: {len(differ)} of {checked} resources differ{first}, "
                f"{len(images['differ'])} image(s) and {len(volumes['unverified'])} volume(s) "
                "not verified on the destination; fix, and re-run"
            )
        return PhaseResult(
            f"{removed} temporaries removed; verified {checked} resources, "
            f"{images['checked']} images, {volumes['checked']} volumes",
            {
                "resources_checked": checked,
                "images": images,
                "volumes": volumes,
                "temporaries_removed": removed,
            },
        )

    def verify_images(self, project_id: str) -> dict[str, Any]:
        """Every image of the project exists on the destination with the source's checksum."""
        differ: list[str] = []
        images = self.project_images(project_id)
        for image in images:
            copy_id = self.journal.mapped_id(
                self.request.destination_cloud, "glance.image", image["id"]
            )
            found = self.destination.image.find_image(copy_id or image["id"], ignore_missing=True)
            if found is None or (found.checksum or None) != (image.get("checksum") or None):
                differ.append(f"{image.get('name')} ({image['id']})")
        return {"checked": len(images), "differ": differ}

    def steps(self) -> dict[str, Callable[[Mapping[str, Facts]], PhaseResult]]:
        """The function of each phase, by name."""
        return {
            "gather": self.gather,
            "export": self.export,
            "import": self.import_,
            "servers": self.servers,
            "usage": self.usage,
            "cleanup": self.cleanup,
        }


def image_archive_export(
    conn: Any, writer: ArchiveWriter, project_id: str, events: EventSink
) -> dict[str, int]:
    """The project's image records (metadata and members, no data) into the archive."""
    from stackhop.images import archive as image_archive

    return image_archive.export_images(
        conn,
        writer,
        images_of_projects(conn, [project_id]),
        with_data=False,
        events=events,
        write_projects=False,
    )


def dry_run_plan(migration: Migration) -> list[dict[str, Any]]:
    """What a migration would do, phase by phase, changing nothing."""
    gathered = migration.gather({})
    project = gathered.facts["project"]
    rows: list[dict[str, Any]] = [
        {"phase": "gather", "action": "report", "object": "project", "detail": gathered.summary}
    ]
    records = resources.RecordSet()
    resources.export(
        migration.source, records, RESOURCE_KINDS, projects=[project["id"]], events=migration.events
    )
    prepared = migration.prepare(records)
    for op in resources.plan_import(
        prepared, migration.destination, False, migration.request.workers
    ):
        rows.append(
            {
                "phase": "import",
                "action": op.action,
                "object": f"{op.kind.name} {op.identity}",
                "detail": op.as_dict()["detail"] or "",
            }
        )
    for op in migration.image_copier().plan(migration.project_images(project["id"])):
        rows.append(
            {
                "phase": "import",
                "action": op.action,
                "object": f"glance.image {op.identity}",
                "detail": op.as_dict()["detail"] or "",
            }
        )
    rows += project_volumes.plan_rows(migration, gathered.facts)
    for server in gathered.facts["servers"]:
        rows.append(
            {
                "phase": "servers",
                "action": "migrate",
                "object": f"server {server['name']}",
                "detail": f"{len(server['volumes'])} volume(s) pre-copied while it runs, "
                f"then --cutover {migration.request.cutover}",
            }
        )
    rows.append(
        {
            "phase": "usage",
            "action": "archive",
            "object": f"project {project['name']}",
            "detail": str(migration.request.output_dir / "usage"),
        }
    )
    rows.append(
        {
            "phase": "cleanup",
            "action": "verify",
            "object": "everything moved",
            "detail": "temporaries removed, resources/images/volumes verified",
        }
    )
    return rows


def migrate_project(
    request: MigrationRequest, journal: Journal, events: EventSink
) -> MigrationReport:
    """Run the phases not yet done for ``request``; return (and write) the final report.

    A failing phase is re-raised after the report so far is written: the
    operator sees what moved, and the same command resumes.
    """
    run = journal.start_run(
        "project migrate",
        source_cloud=request.source_cloud,
        destination_cloud=request.destination_cloud,
        args={
            "project": request.project,
            "output": str(request.output_dir),
            "method": request.method,
            "volumes": list(request.volumes),
            "all_volumes": request.all_volumes,
            "servers": list(request.servers),
            "all_servers": request.all_servers,
            "cutover": request.cutover,
            **request.reshape.as_args(),
        },
    )
    migration = Migration(request, journal, run.id, events)
    project = migration.source_project()
    runner = PhaseRunner(journal, run.id, migration.scope, project["id"], events, migration.stop)
    outcomes: list[PhaseOutcome] = []
    try:
        outcomes = runner.run(migration.steps(), outcomes)
    except BaseException:
        journal.finish_run(run.id, "failed")
        report_of(migration, project, outcomes).write(request.output_dir)
        raise
    journal.finish_run(run.id, "succeeded")
    report = report_of(migration, project, outcomes)
    report.write(request.output_dir)
    return report


def report_of(
    migration: Migration, project: Mapping[str, Any], outcomes: list[PhaseOutcome]
) -> MigrationReport:
    """The report of the migration so far, every object read from the journal."""
    key = migration.key(project["id"])
    runs = [r.id for r in migration.journal.runs() if r.args.get("project_migration") == key]
    objects = objects_of_runs(migration.journal, runs)
    facts = {o.name: o.facts for o in outcomes}
    gathered = facts.get("gather", {})
    objects += project_volumes.volume_lines(migration, gathered.get("volumes", []))
    objects += project_servers.server_lines(facts.get("servers", {}))
    return MigrationReport(
        project={"id": project["id"], "name": project["name"]},
        source_cloud=migration.request.source_cloud,
        destination_cloud=migration.request.destination_cloud,
        run_id=migration.run_id,
        phases=outcomes,
        objects=objects,
    )
