"""``stackhop map [ID ...] [--kind KIND] [--scope SCOPE]``: the ID map, from the journal.

Every source -> destination ID pair the journal recorded (imports, image and
volume copies, tasks), per scope (the destination, or ``src->dst`` for
volume copies) and kind. IDs given on the command line keep the pairs where
either side is one of them, so the same command answers "where did source X
go" and "where did destination Y come from"; an ID nothing maps is an error.
``--kind`` keeps some kinds (``nova.`` keeps a whole service).
"""

from __future__ import annotations

import argparse
import sys

from stackhop.cli.output import add_format_options, dump, render_table
from stackhop.cli.status import open_journal
from stackhop.errors import StackhopError, UsageError
from stackhop.journal import Mapping_

COLUMNS = ("Scope", "Kind", "Source ID", "Destination ID")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``map`` command."""
    p = subparsers.add_parser(
        "map",
        help="show the ID map: which destination ID each source ID became, per kind",
        description=(
            "Read the journal (--journal) and list the source -> destination ID of every "
            "object stackhop moved, per scope and kind. Give IDs (source or destination) "
            "to look only those up; --kind to keep some kinds."
        ),
    )
    p.add_argument("ids", nargs="*", metavar="ID", help="a source or destination ID to look up")
    p.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="only this kind (repeat for several; 'nova.' for every kind of a service)",
    )
    p.add_argument("--scope", metavar="SCOPE", help="only this scope (destination cloud)")
    add_format_options(p, columns=False)
    p.add_argument(
        "--json", action="store_const", const="json", dest="format", help="same as -f json"
    )
    p.set_defaults(func=show_map)


def lookup(
    pairs: list[Mapping_], ids: list[str], known_kinds: set[str], kinds: list[str]
) -> list[Mapping_]:
    """Check the query against what the journal holds; the pairs, or a UsageError/StackhopError."""
    unknown = [
        k for k in kinds if not any(k == name or (k.endswith(".") and name.startswith(k))
                                    for name in known_kinds)
    ]
    if unknown:
        held = ", ".join(sorted(known_kinds)) or "none"
        raise UsageError(
            f"no mapping of kind {', '.join(unknown)} in the journal; kinds with mappings: {held}"
        )
    seen = {i for _, _, source, destination in pairs for i in (source, destination)}
    missing = [i for i in ids if i not in seen]
    if missing:
        raise StackhopError(
            f"no mapping for {', '.join(missing)} in the journal (neither a source nor a "
            "destination ID); run `stackhop map` without IDs to list them all"
        )
    return pairs


def show_map(args: argparse.Namespace) -> int:
    with open_journal(args.journal) as journal:
        pairs = journal.mappings(scope=args.scope, kinds=args.kind, ids=args.ids)
        known = set(journal.mapped_kinds(args.scope)) if args.kind else set()
    lookup(pairs, args.ids, known, args.kind)
    if args.format != "table":
        dump(
            [
                {"scope": scope, "kind": kind, "source_id": source, "destination_id": destination}
                for scope, kind, source, destination in pairs
            ],
            args.format,
            sys.stdout,
        )
        return 0
    rows = [dict(zip(COLUMNS, pair, strict=True)) for pair in pairs]
    render_table(rows, COLUMNS, "table", title=f"ID map ({len(rows)})")
    return 0
