"""Options shared by several commands, declared once, with one vocabulary.

Every command that takes one of these options adds it through the function
here, so its spelling, type, default and help are the same everywhere:

- ``--from CLOUD`` / ``--to CLOUD`` (:func:`add_clouds`);
- ``--user-map FILE`` / ``--project-map FILE`` (:func:`add_maps`);
- ``--network-map FILE`` (:func:`add_network_map`);
- ``--type-map SRC_TYPE=DST_TYPE|FILE`` (:func:`add_type_map`: ``volumes copy``,
  ``project migrate`` and the resource commands, one parser);
- ``--workers N``, a positive integer (:func:`add_workers`): ``--workers 0`` is
  a one-line usage error (exit 2), never a traceback;
- ``--dry-run`` (:func:`add_dry_run`);
- ``-f/--format`` and ``-c/--column`` (:func:`add_format_options`);
- the selection of objects (:func:`add_selection`): ``--volume ID`` repeatable
  (several after one flag work too) and ``--all-volumes``.

The resource kinds' selector flags (``--keypairs``, ``--quotas``, ...), the
flags that let a mapped kind create (``--create-volume-types``) and the import
options (``--keep-segmentation-ids``) come from the kinds' declarations
(:func:`add_kind_selectors`, :func:`add_kind_options`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from stackhop import kinds as registry
from stackhop.cli.output import add_format_options
from stackhop.errors import StackhopError, UsageError
from stackhop.volumes.reshape import parse_type_map

__all__ = [
    "add_clouds",
    "add_dry_run",
    "add_executor",
    "add_format_options",
    "add_kind_options",
    "add_kind_selectors",
    "add_maps",
    "add_network_map",
    "add_selection",
    "add_type_map",
    "add_workers",
    "checked_each",
    "executor_app",
    "chosen_options",
    "chosen_selectors",
    "positive_int",
]

USER_MAP_HELP = "YAML: 'domains: {old: new}' renames, 'users: {src id: dst id}' pins"
PROJECT_MAP_HELP = "YAML: 'domains: {old: new}' renames, 'projects: {src id: dst id}' pins"


def positive_int(text: str) -> int:
    """argparse type: an integer of at least 1 (argparse turns the error into exit 2)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def add_clouds(
    parser: argparse.ArgumentParser, *, source: bool = True, destination: bool = True
) -> None:
    """``--from CLOUD`` (``args.source``) and/or ``--to CLOUD`` (``args.destination``)."""
    if source:
        parser.add_argument(
            "--from",
            dest="source",
            required=True,
            metavar="CLOUD",
            help="the source cloud (a clouds.yaml name)",
        )
    if destination:
        parser.add_argument(
            "--to",
            dest="destination",
            required=True,
            metavar="CLOUD",
            help="the destination cloud (a clouds.yaml name)",
        )


def add_maps(parser: argparse.ArgumentParser, *, users: bool = True, projects: bool = True) -> None:
    """``--user-map FILE`` and ``--project-map FILE`` (docs/resources.md: users and projects)."""
    if users:
        parser.add_argument("--user-map", metavar="FILE", help=USER_MAP_HELP)
        parser.add_argument(
            "--domain-map",
            action="append",
            metavar="SRC=DST",
            help="match the users of source domain SRC by name in destination domain DST "
            "(repeatable; e.g. Default=ldap_users; the SQL users of Default stay in Default "
            "unless the --user-map file says sql_users: true)",
        )
        parser.add_argument(
            "--disabled-users",
            choices=("carry", "skip"),
            help="users disabled on the source: carry their objects like anyone's (the "
            "default, or the map file's disabled_users) or skip them, named in the report",
        )
    if projects:
        parser.add_argument("--project-map", metavar="FILE", help=PROJECT_MAP_HELP)


NETWORK_MAP_HELP = (
    "YAML: 'physnets: {src physnet: dst physnet}' renames provider networks, "
    "'networks: {src id: dst id}' pins networks (external ones not exported)"
)


def add_network_map(parser: argparse.ArgumentParser) -> None:
    """``--network-map FILE`` (docs/resources.md: networking)."""
    parser.add_argument("--network-map", metavar="FILE", help=NETWORK_MAP_HELP)


def checked_each(parse: Callable[[list[str]], object]) -> Callable[[str], str]:
    """An argparse type that checks one value of a repeatable option with ``parse``."""

    def check(value: str) -> str:
        try:
            parse([value])
        except StackhopError as exc:
            raise argparse.ArgumentTypeError(exc.message) from exc
        return value

    return check


def add_type_map(parser: argparse.ArgumentParser) -> None:
    """``--type-map SRC_TYPE=DST_TYPE|FILE``, repeatable (``args.type_map``, a list; read it
    with :func:`stackhop.volumes.reshape.parse_type_map`)."""
    parser.add_argument(
        "--type-map",
        action="append",
        default=[],
        type=checked_each(parse_type_map),
        metavar="SRC_TYPE=DST_TYPE|FILE",
        help="the destination volume type of a source type (repeatable; or a YAML file "
        "{source type: destination type}); unmapped types keep their name",
    )


def add_workers(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    """``--workers N``, a positive integer; ``what`` says what runs N at a time."""
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=default,
        metavar="N",
        help=f"{what} at once (default: {default})",
    )


def add_executor(parser: argparse.ArgumentParser) -> None:
    """``--executor local|celery`` and ``--broker URL`` (docs/scale.md)."""
    parser.add_argument(
        "--executor",
        choices=("local", "celery"),
        default="local",
        help="where the work runs: threads of this process (local, the default) or "
        "`stackhop worker` processes through the message broker (celery; docs/scale.md)",
    )
    parser.add_argument(
        "--broker",
        metavar="URL",
        help="with --executor celery: the broker, without a password "
        "(default: $STACKHOP_BROKER_URL, where a password belongs)",
    )


def executor_app(args: argparse.Namespace) -> object | None:
    """The Celery app of ``--executor celery`` (None for local); imports Celery only then."""
    if getattr(args, "executor", "local") != "celery":
        if getattr(args, "broker", None):
            raise UsageError("--broker goes with --executor celery")
        return None
    from stackhop.executor.celery_app import make_app
    from stackhop.executor.names import broker_url

    return make_app(broker_url(args.broker))


def add_dry_run(parser: argparse.ArgumentParser, what: str = "show the plan") -> None:
    """``--dry-run``: say what would be done, change nothing."""
    parser.add_argument("--dry-run", action="store_true", help=f"{what}, change nothing")


def add_selection(
    parser: argparse.ArgumentParser,
    noun: str,
    *,
    title: str,
    every: str,
    aliases_all: tuple[str, ...] = (),
    aliases_one: tuple[str, ...] = (),
    more: str = "",
) -> argparse._ArgumentGroup:
    """``--<noun> ID_OR_NAME`` (repeatable; several after one flag too) and ``--all-<noun>s``.

    The values land in ``args.<noun>s`` (a list) and ``args.all_<noun>s``.
    ``aliases_*`` keep older spellings working (``--all``, ``--volumes``); ``more`` is
    added to the help of ``--<noun>``.
    """
    group = parser.add_argument_group(title)
    group.add_argument(
        f"--{noun}",
        *aliases_one,
        dest=f"{noun}s",
        action="extend",
        nargs="+",
        default=[],
        metavar="ID_OR_NAME",
        help=f"this {noun} (repeat the option, or name several after it){more}",
    )
    group.add_argument(
        f"--all-{noun}s", *aliases_all, dest=f"all_{noun}s", action="store_true", help=every
    )
    return group


def add_kind_selectors(parser: argparse.ArgumentParser) -> None:
    """One flag per selector the resource kinds declare (``--keypairs``, ``--quotas``, ...)."""
    group = parser.add_argument_group("what to move (none given: everything)")
    for flag, (help_text, _) in registry.selectors().items():
        group.add_argument(f"--{flag}", action="store_true", help=help_text)


def add_kind_options(parser: argparse.ArgumentParser) -> None:
    """One flag per import option the resource kinds declare (``--keep-segmentation-ids``,
    ``--create-volume-types``)."""
    group = parser.add_argument_group("how to import (options of some kinds)")
    for flag, (help_text, _) in registry.import_options().items():
        group.add_argument(f"--{flag}", action="store_true", help=help_text)


def chosen_options(args: argparse.Namespace) -> dict[str, bool]:
    """The import options by argparse attribute (``keep_segmentation_ids``), set or not."""
    return {
        registry.selector_dest(flag): bool(getattr(args, registry.selector_dest(flag), False))
        for flag in registry.import_options()
    }


def chosen_selectors(args: argparse.Namespace) -> list[str]:
    """The selector attributes (``nova_quotas``, ...) set on the command line."""
    return [
        registry.selector_dest(flag)
        for flag in registry.selectors()
        if getattr(args, registry.selector_dest(flag), False)
    ]


