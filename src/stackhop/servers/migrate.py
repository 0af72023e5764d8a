"""``stackhop servers migrate``: the servers of one project, with minutes of downtime.

:func:`migrate_servers` gathers the selected servers and checks them all on the
destination first (:mod:`.preflight`, and the volume copy's own preflight for their
volumes); any problem stops there, with nothing stopped and nothing created. Then, one
server after the other, the steps of :data:`STEPS`, each a journaled engine task of kind
``server.step`` (scope ``servers <src>-><dst>``, identity ``<server ID>/<step>``) run by
the :class:`~stackhop.project.phases.PhaseRunner`: a step done is not run again, its
facts are read back from the journal, and a re-run resumes at the first step not done.

- ``precopy``: incremental passes of the server's volumes while it runs (the volume
  copy's ``--allow-in-use`` chain), repeated while a pass sent more than ``settle``
  bytes, at most ``max_passes``;
- ``stop``: the source server stopped (or shelved); journaled before the call, so that
  ``stackhop status`` says "source stopped, cutover unfinished" until ``verify`` is done;
  ``--cutover none`` leaves it running (a test copy: the volumes are then only
  crash-consistent);
- ``final``: the last pass of every volume (the chain ends, the method's snapshots go);
- ``ports``: the destination ports, same fixed IPs, MACs, groups and address pairs;
- ``boot``: the server from the copied boot volume, with the ports, key, metadata,
  tags, user data, config drive, and the server group as a scheduler hint;
- ``attach``: the data volumes in device order;
- ``floating``: each floating IP released on the source and made (same address where
  free) on the destination port;
- ``verify``: destination ACTIVE, flavor shape, addresses, MACs, metadata, tags equal,
  every volume's final pass verified, the source stopped; then each volume's
  ``delete_on_termination`` as on the source (False until then: a rollback's delete of
  the server keeps the copies).

The rollback (:mod:`.rollback`) undoes a run from the facts these steps journal.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stackhop.clouds import scoped_connection
from stackhop.errors import ConflictError, StackhopError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.kinds.identity import OperatorMap
from stackhop.kinds.port import FLOATING_IP, PORT
from stackhop.project.phases import Facts, PhaseOutcome, PhaseResult, PhaseRunner
from stackhop.resolve import Resolver
from stackhop.servers import root_disk, steps
from stackhop.servers.gather import (
    MIGRATED_KEY,
    STOPPED_KEY,
    ServerRecord,
    find_server,
    gather,
)
from stackhop.servers.preflight import Preflight, ServerPreflight, preflight
from stackhop.task import TaskKind
from stackhop.transfer.ssh import SshHost
from stackhop.volumes import copy as volume_copy
from stackhop.volumes.inventory import map_project, project_record, volume_ref
from stackhop.volumes.methods import get_method, supports_incremental
from stackhop.volumes.model import VolumeRef
from stackhop.volumes.storage import StorageMap

STEPS = ("precopy", "stop", "final", "ports", "boot", "attach", "floating", "verify")
STEP_KIND = "server.step"
#: The ID map's kind of a server (source ID -> the destination server), as ``stackhop map``
#: shows it; its ports and floating IPs are mapped as the resource kinds map theirs.
SERVER_KIND = "nova.server"
COMMAND = "servers migrate"
CUTOVERS = ("stop", "shelve", "none")
METHODS = ("auto", "rbd", "stream", "image")
#: ``auto``: the first of these whose checks accept every volume of the server.
AUTO_ORDER = ("rbd", "stream", "image")
#: A pre-copy pass that sent no more than this ends the pre-copy (the default ``settle``).
SETTLE_BYTES = 64 * 2**20


class ServerStepKind(TaskKind):
    """The journal kind of one step of one server (a task: PhaseTask calls it)."""

    name = STEP_KIND
    service = "compute"


STEP = ServerStepKind()


def scope_of(source_cloud: str, destination_cloud: str) -> str:
    return f"servers {source_cloud}->{destination_cloud}"


@dataclass(frozen=True)
class ServerRequest:
    """The options of ``stackhop servers migrate``."""

    source_cloud: str
    destination_cloud: str
    project: str
    servers: tuple[str, ...] = ()
    all: bool = False
    cutover: str = "stop"
    method: str = "auto"
    flavor_map: Mapping[str, str] = field(default_factory=dict)
    settle: int = SETTLE_BYTES
    max_passes: int = 4
    dry_run: bool = False

    def args(self) -> dict[str, Any]:
        return {"project": self.project, "servers": list(self.servers), "all": self.all,
                "cutover": self.cutover, "method": self.method,
                "flavor_map": dict(self.flavor_map), "settle": self.settle,
                "max_passes": self.max_passes}


@dataclass
class ServerOutcome:
    server_id: str
    name: str
    steps: list[PhaseOutcome]
    destination_id: str | None = None

    @property
    def downtime(self) -> float | None:
        """Seconds from the source's stop call to the destination ACTIVE (the journal's
        times, so also when the steps ran in different runs); None without a stop."""
        facts = {s.name: s.facts for s in self.steps}
        stopped = facts.get("stop", {}).get("stopped_at")
        active = facts.get("boot", {}).get("active_at")
        return round(active - stopped, 2) if stopped and active else None

    @property
    def done(self) -> bool:
        return bool(self.steps) and self.steps[-1].name == "verify" and \
            self.steps[-1].status != "failed"


@dataclass
class ServerMigration:
    """The servers of one run: what was gathered, checked, and what each step did."""

    request: ServerRequest
    records: list[ServerRecord]
    checked: Preflight
    methods: dict[str, str]
    run_id: str | None = None
    outcomes: list[ServerOutcome] = field(default_factory=list)


class Migrator:
    """Runs one request (see the module docstring)."""

    def __init__(self, request: ServerRequest, src: Any, dst: Any, journal: Journal,
                 storage: StorageMap, *, resolver: Resolver,
                 project_map: OperatorMap | None = None, events: EventSink | None = None,
                 stop: threading.Event | None = None) -> None:
        if request.cutover not in CUTOVERS:
            raise ConflictError(f"--cutover {request.cutover!r}: choose one of "
                                f"{', '.join(CUTOVERS)}")
        self.request, self.src, self.dst = request, src, dst
        self.journal, self.storage, self.resolver = journal, storage, resolver
        self.project_map = project_map
        self.events = events or NullSink()
        self.stop = stop or threading.Event()
        self.scope = scope_of(request.source_cloud, request.destination_cloud)
        self.project: dict[str, Any] = {}
        self.dst_project = ""
        self._scoped: Any = None

    def scoped(self) -> Any:
        """The operator's connection scoped to the destination project (Nova boots and
        attaches in the token's project); made once, before the source stops."""
        if self._scoped is None:
            self._scoped = scoped_connection(self.dst, self.dst_project,
                                             purpose="boot servers and attach volumes",
                                             role="admin")
        return self._scoped

    # -- gather and preflight -------------------------------------------------

    def prepare(self) -> ServerMigration:
        """Gather and check every selected server; raises ConflictError on any problem."""
        request = self.request
        self.project = project_record(self.src, request.project)
        self.dst_project = map_project(self.project, self.dst, self.project_map)
        if request.all:
            listed = self.src.compute.servers(all_projects=True, project_id=self.project["id"])
            servers = [self.src.compute.get_server(s.id) for s in
                       sorted(listed, key=lambda s: s.name)]
        else:
            servers = [find_server(self.src.compute, self.project["id"], s)
                       for s in request.servers]
        records = [gather(self.src, s) for s in servers]
        # Servers booted on dst by an earlier run are checked too (their ports there are
        # marked as theirs), but only the others count against the quotas.
        checked = preflight(self.dst, self.dst_project, records, self.resolver,
                            request.flavor_map, counted=self._not_booted(records))
        methods = {}
        for record in records:
            volumes = self._volumes(record)
            methods[record.id] = self._method(volumes)
            checked.problems += self._volume_problems(record, volumes, methods[record.id])
            if record.boot == "image":
                checked.problems += self._root_disk_problems(record)
        migration = ServerMigration(request, records, checked, methods)
        if not checked.ok:
            raise PreflightFailed(migration)
        return migration

    def _finished_elsewhere(self, record: ServerRecord, outcome: ServerOutcome) -> bool:
        """A server whose migration a run with another journal finished (the source says
        which destination server replaced it, and that server is there): left alone."""
        twin = (self.src.compute.get_server(record.id).metadata or {}).get(MIGRATED_KEY)
        if not twin or self.journal.operation(self.scope, STEP_KIND, f"{record.id}/verify"):
            return False  # this journal's own run: its steps say what is done
        booted = steps.find_booted(self.dst, self.dst_project, record.id)
        if booted is None or booted.id != twin:
            return False
        outcome.destination_id = booted.id
        outcome.steps.append(PhaseOutcome(
            "verify", "done earlier", f"migrated to {booted.id} by a run of another journal "
            f"(the source's {MIGRATED_KEY}); nothing done"))
        return True

    def _root_disk_problems(self, record: ServerRecord) -> list[str]:
        """An image-booted server's disk must be readable on its compute host before the
        server is stopped: the host in the storage map, the file there."""
        try:
            host = self.storage.compute_host(self.request.source_cloud, record.compute_host)
            path = host.disk_path(record.id)
            SshHost.named(host.ssh_host).run(["test", "-f", path])
        except StackhopError as exc:
            return [f"server {record.id} boots from an image, and its root disk cannot be "
                    f"read on its compute host: {exc.message}"]
        return []

    def _not_booted(self, records: Sequence[ServerRecord]) -> list[ServerRecord]:
        """The records whose server is not on the destination yet (quota counts them)."""
        return [r for r in records
                if steps.find_booted(self.dst, self.dst_project, r.id) is None]

    def _volumes(self, record: ServerRecord) -> list[VolumeRef]:
        cloud = self.request.source_cloud
        return [volume_ref(cloud, self.src.block_storage.get_volume(a.volume_id))
                for a in record.attachments]

    def _method(self, volumes: Sequence[VolumeRef]) -> str:
        if self.request.method != "auto":
            return self.request.method
        types = {v.id: v.volume_type for v in volumes}
        for name in AUTO_ORDER:
            method = get_method(name)
            try:
                for v in volumes:
                    method.check(v, self.storage, self.request.destination_cloud, types[v.id])
            except StackhopError:
                continue
            return name
        return "image"

    def _copier(self, record: ServerRecord, method: str, *, final: bool,
                dry_run: bool = False) -> volume_copy.VolumeCopier:
        request = self.request
        copy = volume_copy.CopyRequest(
            source_cloud=request.source_cloud, destination_cloud=request.destination_cloud,
            project=self.project["id"], volumes=tuple(a.volume_id for a in record.attachments),
            method=method, incremental=True, allow_in_use=True, final=final,
            quiesced=final, dry_run=dry_run,
        )
        return volume_copy.VolumeCopier(
            copy, volume_copy.Clouds(self.src, self.dst), self.journal, self.storage,
            events=self.events, project_map=self.project_map, stop=self.stop)

    def _volume_problems(self, record: ServerRecord, volumes: Sequence[VolumeRef],
                         method: str) -> list[str]:
        if not volumes:
            return []
        try:
            self._copier(record, method, final=True, dry_run=True).prepare()
        except StackhopError as exc:
            return [f"server {record.id}: its volumes by the {method} method: {exc.message}"]
        return []

    # -- the steps -------------------------------------------------------------

    def run(self, migration: ServerMigration) -> ServerMigration:
        """Run every server's steps not done yet; stops at the first server that fails."""
        run = self.journal.start_run(COMMAND, source_cloud=self.request.source_cloud,
                                     destination_cloud=self.request.destination_cloud,
                                     args=self.request.args())
        migration.run_id = run.id
        try:
            for record, check in zip(migration.records, migration.checked.servers,
                                     strict=True):
                outcome = ServerOutcome(record.id, record.name, [])
                migration.outcomes.append(outcome)
                if self._finished_elsewhere(record, outcome):
                    continue
                runner = PhaseRunner(self.journal, run.id, self.scope, record.id, self.events,
                                     self.stop, phases=STEPS, kind=STEP, command=COMMAND)
                cutover = _Cutover(self, runner, record, check, migration.methods[record.id])
                runner.run(cutover.steps(), outcome.steps)
                outcome.destination_id = runner.finished().get("boot", {}).get("server")
        except BaseException:
            self.journal.finish_run(run.id, "failed")
            raise
        self.journal.finish_run(run.id, "succeeded")
        return migration


class PreflightFailed(ConflictError):
    """A problem found before anything moved; the migration's findings ride along."""

    def __init__(self, migration: ServerMigration) -> None:
        self.migration = migration
        problems = migration.checked.all_problems
        super().__init__(f"{len(problems)} problem(s) stop the migration of these servers; "
                         f"nothing was stopped or created: {problems[0]}")


@dataclass
class _Cutover:
    """The step functions of one server (their facts by step name, from the runner)."""

    migrator: Migrator
    runner: PhaseRunner
    record: ServerRecord
    check: ServerPreflight
    method: str
    #: The final pass planned and checked before the source stopped (see :meth:`_ready`).
    _final: tuple[volume_copy.VolumeCopier, list[Any]] | None = None

    def steps(self) -> dict[str, Callable[[Mapping[str, Facts]], PhaseResult]]:
        return {"precopy": self.precopy, "stop": self.stop, "final": self.final,
                "ports": self.ports, "boot": self.boot, "attach": self.attach,
                "floating": self.floating, "verify": self.verify}

    def note(self, facts: dict[str, Any]) -> None:
        """Journal what the running step made so far (read by a rollback, a re-run)."""
        ctx = self.runner.ctx
        assert ctx is not None
        ctx.stage("partial", {"facts": {**self.earlier(), **facts}})

    def map_ids(self, kind: str, pairs: Mapping[str, str]) -> None:
        """Record ``source -> destination`` IDs in the journal's ID map (a floating IP's
        ``verify`` after a project migration resolves its port through it)."""
        scope = self.request.destination_cloud
        self.migrator.journal.apply(
            [], mappings=[(scope, kind, s, d) for s, d in pairs.items() if d])

    def earlier(self) -> dict[str, Any]:
        """What an interrupted earlier attempt of the running step noted."""
        ctx = self.runner.ctx
        previous = ctx.previous if ctx is not None else None
        return dict(((previous.before or {}) if previous else {}).get("facts") or {})

    @property
    def request(self) -> ServerRequest:
        return self.migrator.request

    def precopy(self, facts: Mapping[str, Facts]) -> PhaseResult:
        method = get_method(self.method)
        why = ("no volumes" if not self.record.attachments
               else f"the {self.method} method is not incremental"
               if not supports_incremental(method)
               else "--max-passes 0: stop, then copy" if self.request.max_passes < 1 else "")
        replaced = self._unfinished_twin()
        volumes = [a.volume_id for a in self.record.attachments]  # (a rollback's to delete)
        if why:
            return PhaseResult(f"no pre-copy ({why})",
                               {"passes": [], "replaced": replaced, "volumes": volumes})
        sent: list[int] = []
        self.note({"passes": sent, "volumes": volumes})
        for _ in range(self.request.max_passes):
            result = self._pass(final=False)
            sent.append(sum(o.bytes_sent for o in result.outcomes))
            self.note({"passes": sent, "volumes": volumes})
            if sent[-1] <= self.request.settle:
                break
        return PhaseResult(f"{len(sent)} pass(es) while running, bytes sent {sent}",
                           {"passes": sent, "replaced": replaced, "volumes": volumes})

    def _unfinished_twin(self) -> str | None:
        """A destination server an earlier run booted for this one, whose journal this run
        does not have (it was lost): its cutover never verified, and its volumes, in use
        there, would refuse the passes. It is deleted (its volumes kept, then copied again
        from the stopped source), to be booted anew; returns its ID."""
        m = self.migrator
        twin = steps.find_booted(m.dst, m.dst_project, self.record.id)
        if twin is None:
            return None
        steps.delete_keeping_volumes(m.dst, twin)
        return str(twin.id)

    def _pass(self, *, final: bool) -> volume_copy.CopyResult:
        prepared, self._final = (self._final if final else None), None
        if prepared is None:
            copier = self.migrator._copier(self.record, self.method, final=final)
            prepared = (copier, copier.prepare())
        copier, plan = prepared
        result = copier.run(plan)
        if result.failed:
            first = result.failed[0]
            raise ConflictError(f"volume {first.volume_id}: {first.error}; re-run to carry on")
        return result

    def stop(self, facts: Mapping[str, Facts]) -> PhaseResult:
        src = self.migrator.src
        server = src.compute.get_server(self.record.id)
        marked = (server.metadata or {}).get(STOPPED_KEY)  # by a run whose journal is lost
        was = self.earlier().get("was") or marked or server.status
        cutover = self.request.cutover
        if cutover == "none":
            return PhaseResult("left running (--cutover none: a test copy)",
                               {"was": was, "stopped": False})
        self._ready()
        stopped_at = self.earlier().get("stopped_at") or time.time()  # the downtime's start
        self.note({"was": was, "cutover": cutover, "stopped_at": stopped_at})  # before the call
        if was == "ACTIVE" and marked is None:  # and on the server, for a lost journal
            src.compute.set_server_metadata(server, **{STOPPED_KEY: was})
        if cutover == "stop":
            if server.status == "ACTIVE":
                src.compute.stop_server(server)
            want: tuple[str, ...] = ("SHUTOFF",)
        else:
            if server.status not in ("SHELVED", "SHELVED_OFFLOADED"):
                src.compute.shelve_server(server)
            want = ("SHELVED", "SHELVED_OFFLOADED")
        steps.wait_for(f"source server {server.id} ({cutover})",
                       lambda: src.compute.get_server(server.id), lambda s: s.status in want,
                       lambda s: "Nova put it in ERROR" if s.status == "ERROR" else None)
        return PhaseResult(f"source {was} -> {want[0]}",
                           {"was": was, "stopped": was == "ACTIVE", "cutover": cutover,
                            "stopped_at": stopped_at})

    def _ready(self) -> None:
        """What the downtime's steps need, made while the source still runs: the final
        pass planned and checked (Cinder, quotas, the storage hosts), the destination
        project's connection. A problem found here stops the step before the stop."""
        if self.record.attachments and self._final is None:
            copier = self.migrator._copier(self.record, self.method, final=True)
            self._final = (copier, copier.prepare())
        self.migrator.scoped()

    def final(self, facts: Mapping[str, Facts]) -> PhaseResult:
        m, record = self.migrator, self.record
        found: dict[str, Any] = {"volumes": {}}
        sent = 0
        if record.attachments:
            result = self._pass(final=True)
            found["volumes"] = {o.volume_id: {"destination": o.destination_id,
                                              "digest": o.content_digest,
                                              "bytes_sent": o.bytes_sent}
                                for o in result.outcomes}
            found["run"] = result.run_id
            sent += sum(o.bytes_sent for o in result.outcomes)
        if record.boot == "image":
            host = m.storage.compute_host(self.request.source_cloud, record.compute_host)
            found["root"] = root_disk.copy_root_disk(host, m.dst, m.dst_project, record.id,
                                                     record.name, self.note)
            sent += int(found["root"]["bytes_sent"] or 0)
        what = f"{len(found['volumes'])} volume(s)" + (
            ", the root disk" if record.boot == "image" else "")
        return PhaseResult(f"final pass of {what}, {sent} bytes sent", found)

    def ports(self, facts: Mapping[str, Facts]) -> PhaseResult:
        earlier = self.earlier()  # what an interrupted attempt made, or was making
        created = list(earlier.get("created") or [])
        made = steps.ensure_ports(self.migrator.dst, self.migrator.dst_project, self.record,
                                  self.check.ports, created, self.note,
                                  creating=earlier.get("creating"))
        self.map_ids(PORT, made)
        return PhaseResult(f"{len(made)} port(s), {len(created)} made",
                           {"ports": made, "created": created})

    def boot(self, facts: Mapping[str, Facts]) -> PhaseResult:
        m = self.migrator
        scoped = m.scoped()
        boot = self.record.boot_volume
        volumes = facts.get("final", {}).get("volumes", {})
        boot_volume = volumes[boot.volume_id]["destination"] if boot else None
        image = facts.get("final", {}).get("root", {}).get("image")
        user_id = getattr(m.src.compute.get_server(self.record.id), "user_id", None)
        earlier = self.earlier()
        key_name, made_key = steps.keypair_for_boot(
            m.src, scoped, self.record, user_id, self.note,
            made_earlier=bool(earlier.get("keypair_made"))
            and earlier.get("keypair") == self.record.key_name)
        ports = facts["ports"]["ports"]
        try:
            server_id = steps.boot(
                m.dst, scoped, m.dst_project, self.record, str(self.check.flavor_id),
                [ports[p.id] for p in self.record.ports], boot_volume, image,
                self.check.server_group_ids, key_name,
                lambda f: self.note({**f, "keypair_made": made_key}))
        finally:
            if made_key and key_name:  # the server keeps the key's name and data
                scoped.compute.delete_keypair(key_name, ignore_missing=True)
        self.map_ids(SERVER_KIND, {self.record.id: server_id})
        return PhaseResult(f"destination server {server_id} ACTIVE",
                           {"server": server_id, "active_at": time.time()})

    def attach(self, facts: Mapping[str, Facts]) -> PhaseResult:
        m = self.migrator
        volumes = facts.get("final", {}).get("volumes", {})
        data = [(volumes[a.volume_id]["destination"], a.tag) for a in self.record.data_volumes]
        if data:
            scoped = m.scoped()
            steps.attach(m.dst, scoped, facts["boot"]["server"], data)
        return PhaseResult(f"{len(data)} data volume(s) attached",
                           {"volumes": [v for v, _ in data]})

    def floating(self, facts: Mapping[str, Facts]) -> PhaseResult:
        m = self.migrator
        moved = steps.move_floating_ips(
            m.src, m.dst, m.dst_project, self.record, self.check.ports,
            facts["ports"]["ports"], release=self.request.cutover != "none", note=self.note,
            earlier=self.earlier().get("floating_ips") or ())
        self.map_ids(FLOATING_IP, {f["source"]: f["destination"] for f in moved})
        return PhaseResult(f"{len(moved)} floating IP(s): " + ", ".join(
            f"{f['address']} -> {f['destination_address']}" for f in moved) or "none",
            {"floating_ips": moved})

    def verify(self, facts: Mapping[str, Facts]) -> PhaseResult:
        m = self.migrator
        server_id = facts["boot"]["server"]
        volumes = facts.get("final", {}).get("volumes", {})
        found = steps.verify(m.src, m.dst, self.record, server_id, facts["ports"]["ports"],
                             expect_source_stopped=self.request.cutover != "none")
        found += steps.check_digests(volumes)
        root = facts.get("final", {}).get("root")
        if root:  # the disk Nova made on the destination host from the copied image
            host = m.dst.compute.get_server(server_id).compute_host
            copied = root_disk.disk_digest(
                m.storage.compute_host(self.request.destination_cloud, host), server_id)
            if copied != root.get("digest"):
                found.append(f"root disk: sha512 {copied[:16]}... on the destination host, "
                             f"{str(root.get('digest'))[:16]}... on the source")
        if found:
            raise ConflictError(f"server {self.record.id}: the destination differs: "
                                f"{'; '.join(found)}")
        steps.set_delete_on_termination(m.dst, server_id, {
            volumes[a.volume_id]["destination"]: a.delete_on_termination
            for a in self.record.attachments})
        if self.request.cutover != "none":  # the source says what replaced it
            m.src.compute.set_server_metadata(self.record.id, **{MIGRATED_KEY: server_id})
        return PhaseResult(f"destination server {server_id} equal to the source",
                           {"server": server_id})


def migrate_servers(request: ServerRequest, src: Any, dst: Any, journal: Journal,
                    storage: StorageMap, resolver: Resolver, *,
                    project_map: OperatorMap | None = None,
                    events: EventSink | None = None,
                    on_plan: Callable[[ServerMigration], None] | None = None) -> ServerMigration:
    """Prepare, then (unless ``dry_run``) run: see the module docstring."""
    migrator = Migrator(request, src, dst, journal, storage, resolver=resolver,
                        project_map=project_map, events=events)
    migration = migrator.prepare()
    if on_plan is not None:
        on_plan(migration)
    if request.dry_run:
        return migration
    return migrator.run(migration)
