"""``stackhop worker``: run a migration's work sent by ``--executor celery`` commands.

A Celery worker (prefork pool, ``--concurrency`` processes) on the queues named with
``--queue`` (default: ``stackhop``, the queue of API-only work). On a storage host it
serves that host's volume queues, ``stackhop.volumes.<source site>.<destination
site>``, so the bytes of a copy flow where they are (docs/scale.md). Everything comes
from the environment, as for every command: the clouds (clouds.yaml), the storage map
(``$STACKHOP_STORAGE_MAP``), the journal (``--journal`` / ``$STACKHOP_JOURNAL``), the
broker (``$STACKHOP_BROKER_URL``); nothing secret on its command line, which ``ps``
shows. It prints one JSON line per event (``worker_ready``, ``started``, ``finished``)
on stdout, and stops cleanly on SIGTERM (the tasks in flight finish first).
"""

from __future__ import annotations

import argparse
import importlib
import os
import socket
from typing import Any

from stackhop.cli.options import positive_int
from stackhop.errors import UsageError
from stackhop.executor.names import DEFAULT_QUEUE, broker_url
from stackhop.journal import Journal


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``worker`` command."""
    p = subparsers.add_parser(
        "worker",
        help="run the work of --executor celery commands (a Celery worker; docs/scale.md)",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
    )
    p.add_argument(
        "--queue",
        dest="queues",
        action="append",
        default=[],
        metavar="NAME",
        help=f"a queue to serve (repeatable; default: {DEFAULT_QUEUE})",
    )
    p.add_argument(
        "--concurrency",
        type=positive_int,
        default=2,
        metavar="N",
        help="operations run at once, each in a process of its own (default: 2)",
    )
    p.add_argument(
        "--broker",
        metavar="URL",
        help="the broker, without a password (default: $STACKHOP_BROKER_URL)",
    )
    p.set_defaults(func=run)


def _preload() -> None:
    """Import what the tasks run before the pool forks, so that no process pays for it
    on its first task (an optional method missing here fails its task, not the worker)."""
    from stackhop.executor.worker import JOBS
    from stackhop.volumes.methods import METHODS

    for target in (*JOBS.values(), *METHODS.values()):
        try:
            importlib.import_module(target.partition(":")[0])
        except ImportError:
            pass


def run(args: argparse.Namespace) -> int:
    from celery.signals import worker_ready

    from stackhop.executor.celery_app import make_app
    from stackhop.executor.worker import JOURNAL_ENV, say

    queues = list(dict.fromkeys(args.queues)) or [DEFAULT_QUEUE]
    for queue in queues:
        if not queue or any(c.isspace() for c in queue) or "," in queue:
            raise UsageError(f"--queue {queue!r}: a queue name has no spaces or commas")
    url = broker_url(args.broker)
    with Journal(args.journal):  # reachable, and at this stackhop's schema, before any work
        pass
    os.environ[JOURNAL_ENV] = args.journal  # the pool's processes open it themselves
    _preload()
    app = make_app(url)

    def ready(**_: Any) -> None:
        say("worker_ready", queues=queues, concurrency=args.concurrency)

    worker_ready.connect(ready, weak=False)
    worker = app.Worker(
        hostname=f"stackhop-{os.getpid()}@{socket.gethostname()}",
        queues=queues,
        concurrency=args.concurrency,
        pool_cls="prefork",
        optimization="fair",
        loglevel="WARNING",
        without_gossip=True,
        without_mingle=True,
        without_heartbeat=True,
        quiet=True,
    )
    worker.start()
    return int(worker.exitcode or 0)
