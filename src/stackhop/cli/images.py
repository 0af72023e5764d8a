"""``stackhop images move-store|copy``: Glance images between stores, and between clouds.

Thin: parse, open the cloud(s) and the journal, call :mod:`stackhop.images`,
render. Behaviour and what each method needs of the cloud: ``docs/images.md``.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from stackhop.archive import ArchiveReader, ArchiveWriter
from stackhop.cli.options import (
    add_clouds,
    add_dry_run,
    add_executor,
    add_selection,
    add_workers,
    executor_app,
)
from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.clouds import cloud_config, connect
from stackhop.engine import RunResult
from stackhop.errors import ConflictError, OperationFailedError, UsageError
from stackhop.events import Event, EventType
from stackhop.images import archive as image_archive
from stackhop.images import copy as image_copy
from stackhop.images import recreate
from stackhop.images.ceph_copy import CephRoute
from stackhop.images.common import (
    PropertyFilter,
    Selection,
    check_stores,
    inactive,
    select_images,
)
from stackhop.images.locations import (
    LocationMover,
    check_locations_method,
    choose_method,
    plan_location_moves,
)
from stackhop.images.move_store import (
    METHODS,
    MoveResult,
    StoreMover,
    check_cloud,
    plan_moves,
)
from stackhop.images.rbd_store import GlanceRbdStore, storage_entry
from stackhop.journal import Journal
from stackhop.kinds.identity import load_operator_map
from stackhop.volumes.storage import load_storage_map

PLAN_COLUMNS = ("Action", "ID", "Name", "Reason")
RESULT_COLUMNS = ("Outcome", "ID", "Detail")
ACTION_STYLES = {"move": "green", "create": "green", "error": "bold red", "failed": "bold red",
                 "conflict": "bold red"}


#: What ``--image`` says besides the shared wording.
PATTERN_HELP = "; a name with * ? [ is a pattern: every image whose name matches (quote it)"


def _selection(p: argparse.ArgumentParser) -> None:
    group = add_selection(p, "image", title="which images (exactly one of)",
                          every="every image of the cloud (also spelled --all)",
                          aliases_all=("--all",), more=PATTERN_HELP)
    group.add_argument("--project", metavar="ID_OR_NAME", help="every image the project owns")


def _property_filter_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--property-include", action="append", default=[], metavar="GLOB",
                   help=f"{what}: carry only the image properties matching a GLOB (repeat for "
                   "several; default: all)")
    p.add_argument("--property-exclude", action="append", default=[], metavar="GLOB",
                   help=f"{what}: leave out the image properties matching a GLOB (repeatable)")


def _property_filter(args: argparse.Namespace) -> PropertyFilter:
    return PropertyFilter(include=tuple(args.property_include),
                          exclude=tuple(args.property_exclude))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``images`` command group."""
    images = subparsers.add_parser(
        "images", help="move images between Glance stores, or copy them between clouds",
        description="Glance images: same IDs, every attribute, every byte hash-verified.",
    )
    sub = images.add_subparsers(title="image commands", dest="images_command",
                                metavar="COMMAND", required=True)

    p = sub.add_parser(
        "move-store", help="move images' data from one store to another in one cloud",
        description=(
            "Move the data of images from --from-store to --to-store. copy-image: Glance "
            "copies the data (multi-store), the image keeps its ID and everything, then the "
            "old store's copy is removed. locations: on a single-store Glance showing "
            "locations, stackhop writes the data into the RBD pool itself (storage map), "
            "adds the location, reads it back through Glance, then removes the old location "
            "(stores are location schemes there: file, rbd). auto (default): copy-image where "
            "Glance is multi-store, locations where it is single-store. recreate: download, "
            "create a new image with every attribute in the new store, verify, then retire "
            "the original as --original says. Images are protected during the move; a re-run "
            "resumes and skips what is done."
        ),
    )
    p.add_argument("--cloud", required=True, metavar="CLOUD")
    p.add_argument("--from-store", required=True, metavar="STORE")
    p.add_argument("--to-store", required=True, metavar="STORE")
    _selection(p)
    p.add_argument("--method", choices=METHODS, default="auto")
    p.add_argument("--storage-map", metavar="FILE",
                   help="locations: how to reach the target store (default: "
                   "$STACKHOP_STORAGE_MAP; entry glance-STORE of the cloud)")
    p.add_argument("--keep-source", action="store_true",
                   help="copy-image: keep the data in --from-store too")
    p.add_argument("--original", choices=recreate.ORIGINAL_POLICIES, default="protect",
                   help="recreate: what becomes of the original image (default: protect "
                   "both images; deactivate: protect the copy, deactivate the original; "
                   "delete: delete the original)")
    _property_filter_options(p, "recreate")
    p.add_argument("--no-verify-data", dest="verify_data", action="store_false",
                   help="copy-image, locations: skip reading the moved data back through "
                   "Glance to hash it")
    add_dry_run(p, "show what would move")
    add_workers(p, 2, "images moved")
    add_executor(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=move_store_command)

    p = sub.add_parser(
        "copy", help="copy images to another cloud, streamed and hash-verified",
        description=(
            "Copy images from --from to --to: data streamed from the source Glance into the "
            "destination Glance (no temporary file), hash verified, every attribute carried, "
            "owner and members mapped to destination projects (same ID, else same name, "
            "else --project-map). --keep-id keeps the image ID where it is free."
        ),
    )
    add_clouds(p)
    _selection(p)
    p.add_argument("--keep-id", action="store_true", help="same image ID where it is free")
    p.add_argument("--project-map", metavar="FILE", help="YAML: {source id: destination id}")
    p.add_argument("--to-store", metavar="STORE",
                   help="the destination store to upload into (multi-store; default: its "
                   "default store)")
    _property_filter_options(p, "copy")
    p.add_argument("--location-cloud", metavar="CLOUD",
                   help="the destination as a user with Glance's service role: with --to-store "
                   "an RBD store and the storage map reaching both Glances' RBD pools "
                   "(glance-STORE entries), data is copied Ceph to Ceph and attached with "
                   "POST /v2/images/{id}/locations (Glance 2024.2+); else the API stream")
    p.add_argument("--storage-map", metavar="FILE",
                   help="with --location-cloud: how to reach the RBD pools (default: "
                   "$STACKHOP_STORAGE_MAP)")
    add_dry_run(p)
    add_workers(p, 2, "images copied")
    add_executor(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=copy_command)

    p = sub.add_parser(
        "export", help="write images to an archive file (metadata; data with --with-image-data)",
        description=(
            "Write the selected images' metadata (every attribute, owner, members) and the "
            "source's projects to a stackhop archive; with --with-image-data their data too, "
            "checksummed per chunk and against os_hash_value, for clouds that cannot reach "
            "each other. `stackhop images import` uploads it."
        ),
    )
    add_clouds(p, destination=False)
    p.add_argument("-o", "--output", required=True, metavar="FILE")
    _selection(p)
    p.add_argument("--with-image-data", action="store_true", help="put the images' data in too")
    p.add_argument("--compression", choices=("zstd", "bz2"), default="zstd")
    add_format_options(p, columns=False)
    p.set_defaults(func=export_command)

    p = sub.add_parser(
        "import", help="upload the images of an archive to a cloud (resumable)",
        description=(
            "Create the archive's images on --to with their data from the archive, mapped "
            "and verified as `images copy` does. Images whose data the archive lacks are "
            "left out with a warning."
        ),
    )
    add_clouds(p, source=False)
    p.add_argument("archive", metavar="FILE")
    p.add_argument("--image", dest="images", action="extend", nargs="+", default=[],
                   metavar="ID_OR_NAME",
                   help="import only this image of the archive (repeat the option, or name "
                   f"several after it{PATTERN_HELP}; default: every image)")
    p.add_argument("--keep-id", action="store_true", help="same image ID where it is free")
    p.add_argument("--project-map", metavar="FILE", help="YAML: {source id: destination id}")
    _property_filter_options(p, "import")
    add_dry_run(p)
    add_workers(p, 2, "images imported")
    add_format_options(p, columns=False)
    p.set_defaults(func=import_command)


def _selection_of(args: argparse.Namespace) -> Selection:
    selection = Selection(images=tuple(args.images), project=args.project, all=args.all_images)
    selection.check()
    return selection


def _print(rows: list[dict[str, Any]], columns: tuple[str, ...], fmt: str, data: Any) -> None:
    if fmt == "table":
        render_table(rows, columns, fmt, styles=ACTION_STYLES)
    else:
        dump(data, fmt, sys.stdout)


def move_store_command(args: argparse.Namespace) -> int:
    selection = _selection_of(args)
    conn = connect(args.cloud)
    images = select_images(conn, selection)
    method = choose_method(conn.image, args.cloud, args.method, images)
    if method != "copy-image" and args.executor == "celery":
        raise UsageError(f"--executor celery moves images by copy-image only, not by "
                         f"{method}: leave one of them out")  # fmt: skip
    if method == "locations":
        return _locations(conn, args, images)
    check_cloud(conn.image, args.cloud, args.from_store, args.to_store, method)
    plans = plan_moves(images, args.from_store, args.to_store, args.keep_source)
    refused = [f"{p.name} ({p.image_id}): {p.reason}" for p in plans if p.action == "error"]
    if refused and selection.images and not args.dry_run:
        # Named images: refuse before anything moves. With --all/--project the others go on.
        raise ConflictError("cannot move " + "; ".join(refused))
    if method == "recreate" and not args.dry_run:
        return _recreate(conn, args, images)
    if args.dry_run:
        _print([{"Action": p.action, "ID": p.image_id, "Name": p.name, "Reason": p.reason}
                 for p in plans], PLAN_COLUMNS, args.format, [p.as_dict() for p in plans])
        return 0
    with Journal(args.journal) as journal:
        mover = StoreMover(conn.image, journal, args.cloud, args.from_store, args.to_store,
                           keep_source=args.keep_source, verify_data=args.verify_data,
                           workers=args.workers, events=args.events)
        result = mover.run(images, args={"cloud": args.cloud, "from_store": args.from_store,
                                         "to_store": args.to_store, "images": args.images,
                                         "project": args.project, "all": args.all_images,
                                         "keep_source": args.keep_source,
                                         "verify_data": args.verify_data},
                           app=executor_app(args))
    return _print_moves(result, args.format)


def _print_moves(result: MoveResult, fmt: str) -> int:
    rows = [{"Outcome": "done", "ID": i, "Detail": ""} for i in result.done]
    rows += [{"Outcome": "skipped", "ID": i, "Detail": ""} for i in result.skipped]
    rows += [{"Outcome": "failed", "ID": i, "Detail": e} for i, e in result.failed.items()]
    _print(rows, RESULT_COLUMNS, fmt, result.as_dict())
    if result.failed:
        raise OperationFailedError(failed=len(result.failed), run=result.run_id)
    return 0


def _locations(conn: Any, args: argparse.Namespace, images: list[dict[str, Any]]) -> int:
    if args.from_store == args.to_store:
        raise UsageError(f"--from-store and --to-store are both {args.from_store!r}")
    check_locations_method(args.cloud, images, args.to_store)
    store = GlanceRbdStore.from_storage_map(load_storage_map(args.storage_map), args.cloud,
                                            args.to_store)
    plans = plan_location_moves(images, args.from_store, args.to_store)
    refused = [f"{p.name} ({p.image_id}): {p.reason}" for p in plans if p.action == "error"]
    if refused and args.images and not args.dry_run:
        raise ConflictError("cannot move " + "; ".join(refused))
    if args.dry_run:
        _print([{"Action": p.action, "ID": p.image_id, "Name": p.name, "Reason": p.reason}
                for p in plans], PLAN_COLUMNS, args.format, [p.as_dict() for p in plans])
        return 0
    with Journal(args.journal) as journal:
        mover = LocationMover(conn.image, journal, args.cloud, args.from_store, args.to_store,
                              store, verify_data=args.verify_data, workers=args.workers,
                              events=args.events)
        result = mover.run(images, args={"cloud": args.cloud, "from_store": args.from_store,
                                         "to_store": args.to_store, "images": args.images,
                                         "project": args.project, "all": args.all_images})
    return _print_moves(result, args.format)


def _recreate(conn: Any, args: argparse.Namespace, images: list[dict[str, Any]]) -> int:
    with Journal(args.journal) as journal:
        run_id, outcomes = recreate.recreate_images(
            conn, journal, images, cloud=args.cloud, from_store=args.from_store,
            to_store=args.to_store, original_policy=args.original, events=args.events,
            properties=_property_filter(args))
    rows = [{"Outcome": o["outcome"], "ID": o["id"], "Detail": o["detail"]} for o in outcomes]
    _print(rows, RESULT_COLUMNS, args.format, {"run_id": run_id, "images": outcomes})
    failed = sum(o["outcome"] == "failed" for o in outcomes)
    if failed:
        raise OperationFailedError(failed=failed, run=run_id)
    return 0


def copy_command(args: argparse.Namespace) -> int:
    selection = _selection_of(args)
    source = connect(args.source)
    destination = connect(args.destination)
    images = select_images(source, selection)
    bad = inactive(images)
    if bad and selection.images:
        raise ConflictError("only active images can be copied: " + "; ".join(bad))
    project_map = load_operator_map(args.project_map)
    if args.to_store:
        check_stores(destination.image, args.destination, args.to_store)
    with Journal(args.journal) as journal:
        copier = image_copy.ImageCopier(
            source, destination, journal, source_cloud=args.source,
            destination_cloud=args.destination, keep_id=args.keep_id, workers=args.workers,
            events=args.events, project_map=project_map, to_store=args.to_store,
            properties=_property_filter(args), ceph_route=_ceph_route(args),
        )
        operations = copier.plan(images)
        if args.dry_run:
            rows = [{"Action": op.action, "ID": op.source_id, "Name": op.identity,
                     "Reason": op.as_dict().get("detail") or ""} for op in operations]
            _print(rows, PLAN_COLUMNS, args.format, [op.as_dict() for op in operations])
            return 0
        app = executor_app(args)
        if app is not None and copier.ceph_route is not None:
            raise UsageError("--executor celery does not copy Ceph to Ceph (--location-cloud) "
                             "yet: leave one of them out")  # fmt: skip
        result = copier.run(operations, args={"images": args.images, "project": args.project,
                                              "all": args.all_images, "keep_id": args.keep_id,
                                              "to_store": args.to_store,
                                              "location_cloud": args.location_cloud}, app=app)
    _print_run(result, args.format)
    result.raise_for_failures()
    return 0


def _ceph_route(args: argparse.Namespace) -> CephRoute | None:
    """The Ceph-to-Ceph route of a copy, or None (the API stream) with a warning saying why."""
    if not args.location_cloud:
        return None
    storage = load_storage_map(args.storage_map)
    sources = sorted(name for (cloud, name), b in storage.backends.items()
                     if cloud == args.source and b.driver == "rbd"
                     and name.startswith(storage_entry("")))
    wanted = storage_entry(args.to_store or "")
    reason = ""
    if not args.to_store:
        reason = "no --to-store"
    elif (args.destination, wanted) not in storage.backends:
        reason = f"the storage map has no {wanted} entry for {args.destination}"
    elif len(sources) != 1:
        reason = f"the storage map has {len(sources)} glance-* rbd entries for {args.source}"
    if reason:
        args.events.emit(Event(EventType.WARNING, kind="glance.image",
                               message=f"copying through the Glance APIs: {reason}"))
        return None
    source_store = sources[0][len(storage_entry("")):]
    return CephRoute(
        source=GlanceRbdStore.from_storage_map(storage, args.source, source_store),
        source_store=source_store,
        destination=GlanceRbdStore.from_storage_map(storage, args.destination, args.to_store),
        locations=connect(args.location_cloud).image,
    )


def _print_run(result: RunResult, fmt: str) -> None:
    rows = [{"Outcome": "failed", "ID": e["identity"], "Detail": e["error"]}
            for e in result.errors]
    counts = result.counts.get("glance.image", {})
    rows.insert(0, {"Outcome": "summary", "ID": "",
                    "Detail": ", ".join(f"{k} {v}" for k, v in counts.items() if v)})
    _print(rows, RESULT_COLUMNS, fmt, result.as_dict())


def export_command(args: argparse.Namespace) -> int:
    selection = _selection_of(args)
    conn = connect(args.source)
    images = select_images(conn, selection)
    with ArchiveWriter(args.output, source_cloud=args.source,
                       source_auth_url=cloud_config(args.source).auth_url or "",
                       compression=args.compression) as writer:
        counts = image_archive.export_images(conn, writer, images,
                                             with_data=args.with_image_data, events=args.events)
    rows = [{"Outcome": kind, "ID": "", "Detail": str(n)} for kind, n in counts.items()]
    _print(rows, RESULT_COLUMNS, args.format, {"archive": args.output, "records": counts})
    return 0


def import_command(args: argparse.Namespace) -> int:
    destination = connect(args.destination)
    project_map = load_operator_map(args.project_map)
    with ArchiveReader(args.archive) as reader, Journal(args.journal) as journal:
        importer = image_archive.ArchiveImageImporter(
            reader, destination, journal, args.destination, keep_id=args.keep_id,
            workers=args.workers, events=args.events, project_map=project_map,
            images=tuple(args.images), properties=_property_filter(args),
        )
        operations = importer.plan()
        if args.dry_run:
            rows = [{"Action": op.action, "ID": op.source_id, "Name": op.identity,
                     "Reason": op.as_dict().get("detail") or ""} for op in operations]
            _print(rows, PLAN_COLUMNS, args.format, [op.as_dict() for op in operations])
            return 0
        result = importer.run(operations, args={"archive": args.archive, "images": args.images,
                                                "keep_id": args.keep_id})
    _print_run(result, args.format)
    result.raise_for_failures()
    return 0
