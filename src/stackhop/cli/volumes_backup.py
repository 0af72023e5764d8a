"""``stackhop volumes backup verify|extract``, and the options of a volume's destination.

``backup verify|extract`` read a backup file or a stream (``-``: stdin, e.g.
``dd if=/dev/nst0 bs=1M |``), without any cloud, check every piece against the
manifest, and say what the backup holds. The ``--backup-to``, ``--min-size``
and ``--grow-to`` options are declared here once for ``volumes copy`` and
``project migrate`` (``--type-map``, which the resource commands take too, in
:mod:`stackhop.cli.options`).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from stackhop.cli.options import add_type_map, checked_each, positive_int
from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.errors import UsageError
from stackhop.volumes.backup_reader import BackupSummary, extract_backup, verify_chain
from stackhop.volumes.backup_target import check_target
from stackhop.volumes.reshape import Reshape, parse_grow_to, parse_type_map

COLUMNS = ("Volume", "Kind", "Name", "Size", "Stored", "Digest", "Written to")


def backup_target(value: str) -> str:
    """argparse type of ``--backup-to``: a directory or ``cmd:COMMAND``."""
    try:
        return check_target(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_reshape_options(p: argparse.ArgumentParser) -> None:
    """``--type-map``, ``--min-size`` and ``--grow-to`` (volumes copy, project migrate)."""
    add_type_map(p)
    p.add_argument(
        "--min-size",
        type=positive_int,
        default=0,
        metavar="GIB",
        help="destination volumes are at least GIB large (extended after the verified copy; "
        "the file system inside is the user's to grow)",
    )
    p.add_argument(
        "--grow-to",
        action="append",
        default=[],
        type=checked_each(parse_grow_to),
        metavar="NAME_OR_ID=GIB",
        help="this volume's destination size (repeatable; never smaller than the source)",
    )


def add_grant_option(p: argparse.ArgumentParser) -> None:
    """``--grant-role`` (volumes copy, project migrate)."""
    p.add_argument(
        "--grant-role",
        metavar="ROLE",
        help="give your user ROLE (e.g. admin) in the destination project for the run: "
        "journaled, removed at its end or by `volumes cleanup --run`; a role you already "
        "hold is left alone",
    )


def reshape_of(args: argparse.Namespace) -> Reshape:
    """The :class:`Reshape` the options above ask for."""
    return Reshape(
        type_map=parse_type_map(args.type_map),
        min_size_gib=args.min_size,
        grow_to=parse_grow_to(args.grow_to),
    )


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``volumes backup verify|extract`` under the ``volumes`` group's ``sub``."""
    backup = sub.add_parser(
        "backup",
        help="check or unpack a --backup-to backup, without any cloud",
        description="Read a volume backup (a file, or - for stdin), check every piece "
        "against its manifest; extract writes the volume as a sparse raw image.",
    )
    actions = backup.add_subparsers(dest="backup_action", metavar="ACTION", required=True)
    chain = (
        "the backup file (- for stdin), or a chain: the full backup, then its incremental "
        "backups in pass order"
    )
    p = actions.add_parser("verify", help="check every piece of a backup (or of a chain)")
    p.add_argument("sources", nargs="+", metavar="FILE", help=chain)
    add_format_options(p, columns=False)
    p.set_defaults(func=verify_command)
    p = actions.add_parser("extract", help="write the backed-up volume as a raw image, checked")
    p.add_argument("sources", nargs="+", metavar="FILE", help=chain)
    p.add_argument("-o", "--output", required=True, metavar="RAW", help="the raw image to write")
    add_format_options(p, columns=False)
    p.set_defaults(func=extract_command)


def _show(summaries: list[BackupSummary], fmt: str, output: str | None) -> None:
    if fmt != "table":
        data = [asdict(s) for s in summaries]
        dump({**data[-1], "chain": data, "output": output}, fmt, sys.stdout)
        return
    rows = [
        {
            "Volume": s.volume_id,
            "Kind": s.kind if s.pass_number is None else f"{s.kind} (pass {s.pass_number})",
            "Name": s.name,
            "Size": s.size,
            "Stored": s.stored_pieces,
            "Digest": s.content_digest[:16],
            "Written to": output or "",
        }
        for s in summaries
    ]
    render_table(rows, COLUMNS, fmt)


def verify_command(args: argparse.Namespace) -> int:
    _show(verify_chain(args.sources), args.format, None)
    return 0


def extract_command(args: argparse.Namespace) -> int:
    _show([extract_backup(args.sources, args.output)], args.format, args.output)
    return 0
