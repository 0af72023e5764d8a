"""The ``stackhop`` command: global options, the table of command groups, error handling.

A command group is a module of :mod:`stackhop.cli` with a
``register(subparsers)`` function that adds its parser(s) and sets
``func=handler`` through ``set_defaults``. A handler takes the parsed
``argparse.Namespace`` and returns the exit code (``None`` means 0). Besides
its own options the namespace carries the global ones: ``verbose``,
``log_json``, ``journal``, and ``events``, the event bus to hand to library
calls (it renders progress on stderr).

A handler reports failure by raising a :class:`~stackhop.errors.StackhopError`:
:func:`main` prints it as one line ``stackhop: <message>`` on stderr and
exits with the error's code; ``-v`` adds the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import NoReturn

from rich_argparse import RichHelpFormatter

from stackhop import __version__
from stackhop.cli import (
    clouds,
    idmap,
    images,
    project,
    resources,
    sdn,
    servers,
    status,
    usage,
    volumes,
    worker,
)
from stackhop.cli.output import report_error
from stackhop.cli.render import make_renderer
from stackhop.errors import StackhopError, TransientError
from stackhop.events import EventBus
from stackhop.retry import classify, error_text

#: Every command group, in the order ``--help`` lists them. Add a module here to add a command.
COMMANDS: tuple[ModuleType, ...] = (
    clouds, status, idmap, resources, sdn, images, volumes, servers, usage, project, worker
)

DEFAULT_JOURNAL = "./stackhop-journal.sqlite"

#: Packages whose exceptions mean "the cloud said no" rather than a bug in stackhop.
_CLIENT_LIBRARIES = ("openstack", "keystoneauth1", "requests", "urllib3")


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose help (and that of every subcommand) is formatted by rich,
    and whose usage errors are one line, like every other stackhop error."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", RichHelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> NoReturn:
        report_error(f"{self.prog}: {message} (see `{self.prog} --help`)")
        raise SystemExit(2)


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    # On subcommands the defaults are suppressed, so that `stackhop -v clouds`
    # and `stackhop clouds -v` both work and neither resets the other.
    def default(value: object) -> object:
        return value if defaults else argparse.SUPPRESS

    group = parser.add_argument_group("global options")
    group.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=default(False),
        help="show debug logs, and a traceback with errors",
    )
    group.add_argument(
        "--log-json",
        action="store_true",
        default=default(False),
        help="write progress events to stderr as JSON lines (for machines)",
    )
    group.add_argument(
        "--journal",
        metavar="PATH_OR_URL",
        default=default(os.environ.get("STACKHOP_JOURNAL") or DEFAULT_JOURNAL),
        help=f"journal file or SQLAlchemy URL, for commands that keep one (default: "
        f"$STACKHOP_JOURNAL, where a URL with a password belongs, else {DEFAULT_JOURNAL})",
    )


def build_parser() -> argparse.ArgumentParser:
    """The full parser: global options and every command group of :data:`COMMANDS`."""
    parser = _Parser(
        prog="stackhop",
        description=(
            "Move a tenant's world between OpenStack clouds or storage backends: "
            "complete, resumable, verifiable. Clouds come from clouds.yaml, OS_CLOUD "
            "and OS_* variables as the openstack client reads them."
        ),
        epilog="Exit codes and error classes: docs/errors.md. Commands: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=f"stackhop {__version__}")
    _add_global_options(parser, defaults=True)
    subparsers = parser.add_subparsers(
        title="commands", dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )
    for module in COMMANDS:
        module.register(subparsers)
    for sub in subparsers.choices.values():
        _add_global_options(sub, defaults=False)
    return parser


def _exit_status(code: object) -> int:
    """argparse's SystemExit code (None, int, or a message) as a process status."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _is_client_library_error(exc: BaseException) -> bool:
    module = type(exc).__module__ or ""
    return module.split(".", 1)[0] in _CLIENT_LIBRARIES


@contextmanager
def _debug_logging(verbose: bool) -> Iterator[None]:
    """With -v, debug logs of stackhop and the client libraries go to stderr."""
    if not verbose:
        # keystoneauth warns through logging on its way to an error we report
        # ourselves; without a handler Python would print those to stderr.
        quiet = logging.NullHandler()
        logging.getLogger().addHandler(quiet)
        try:
            yield
        finally:
            logging.getLogger().removeHandler(quiet)
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``stackhop`` with ``argv`` (default: ``sys.argv[1:]``); return the exit status.

    Safe to call in-process (tests do): it neither calls ``sys.exit`` nor
    leaves logging handlers behind.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version and usage errors end inside argparse
        return _exit_status(exc.code)

    renderer = make_renderer(args.log_json, sys.stderr)
    args.events = EventBus()
    args.events.subscribe(renderer.emit)
    try:
        with renderer, _debug_logging(args.verbose):
            result = args.func(args)
        return 0 if result is None else int(result)
    except StackhopError as exc:
        if args.verbose:
            traceback.print_exc()
        report_error(exc)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.verbose:
            traceback.print_exc()
        report_error("interrupted (Ctrl-C); re-run the same command to resume")
        return 130
    except Exception as exc:
        if not _is_client_library_error(exc):
            raise
        # An API error no stackhop layer translated: still one line, not a traceback.
        if args.verbose:
            traceback.print_exc()
        if classify(exc).transient:  # retries spent on a busy or unreachable API
            report_error(f"{error_text(exc)} (the API kept failing: re-run the same command "
                         "later; it resumes)")
            return TransientError.exit_code
        report_error(error_text(exc))
        return 1


if __name__ == "__main__":
    sys.exit(main())
