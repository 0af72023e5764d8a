"""``stackhop volumes backup verify|extract``: a ``--backup-to`` backup, without any cloud.

Both read a backup file or a stream (``-``: stdin, e.g. ``dd if=/dev/nst0 bs=1M |``),
check every piece against the manifest, and say what the backup holds.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.errors import UsageError
from stackhop.volumes.backup_reader import BackupSummary, extract_backup, scan_backup
from stackhop.volumes.backup_target import check_target

COLUMNS = ("Volume", "Name", "Size", "Pieces", "Stored", "Digest", "Written to")


def backup_target(value: str) -> str:
    """argparse type of ``--backup-to``: a directory or ``cmd:COMMAND``."""
    try:
        return check_target(value)
    except UsageError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``volumes backup verify|extract`` under the ``volumes`` group's ``sub``."""
    backup = sub.add_parser(
        "backup",
        help="check or unpack a --backup-to backup, without any cloud",
        description="Read a volume backup (a file, or - for stdin), check every piece "
        "against its manifest; extract writes the volume as a sparse raw image.",
    )
    actions = backup.add_subparsers(dest="backup_action", metavar="ACTION", required=True)
    p = actions.add_parser("verify", help="check every piece of a backup")
    p.add_argument("source", metavar="FILE", help="the backup file, or - for stdin")
    add_format_options(p, columns=False)
    p.set_defaults(func=verify_command)
    p = actions.add_parser("extract", help="write the backed-up volume as a raw image, checked")
    p.add_argument("source", metavar="FILE", help="the backup file, or - for stdin")
    p.add_argument("-o", "--output", required=True, metavar="RAW", help="the raw image to write")
    add_format_options(p, columns=False)
    p.set_defaults(func=extract_command)


def _show(summary: BackupSummary, fmt: str, output: str | None) -> None:
    if fmt != "table":
        dump({**asdict(summary), "output": output}, fmt, sys.stdout)
        return
    row = {
        "Volume": summary.volume_id,
        "Name": summary.name,
        "Size": summary.size,
        "Pieces": summary.pieces,
        "Stored": summary.stored_pieces,
        "Digest": summary.content_digest[:16],
        "Written to": output or "",
    }
    render_table([row], COLUMNS, fmt)


def verify_command(args: argparse.Namespace) -> int:
    _show(scan_backup(args.source), args.format, None)
    return 0


def extract_command(args: argparse.Namespace) -> int:
    _show(extract_backup(args.source, args.output), args.format, args.output)
    return 0
