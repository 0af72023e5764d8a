"""Names the coordinator and the workers share, without importing Celery.

The queue of a volume pass is ``stackhop.volumes.<source site>.<destination site>``
(:meth:`stackhop.volumes.storage.Backend.site`); everything else goes to
:data:`DEFAULT_QUEUE`.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from stackhop.errors import ConfigError, UsageError

#: The task every message runs.
TASK = "stackhop.operation"
#: The queue of API-only work (and of anything no storage host needs).
DEFAULT_QUEUE = "stackhop"
#: Where the broker URL comes from when ``--broker`` is not given.
BROKER_ENV = "STACKHOP_BROKER_URL"
#: The message format this stackhop writes and reads.
MESSAGE_VERSION = 1
#: Seconds a worker's lease lasts unless renewed (``$STACKHOP_LEASE_TTL``).
LEASE_TTL = 60.0


def lease_ttl() -> float:
    """The lease term: ``$STACKHOP_LEASE_TTL`` seconds, else :data:`LEASE_TTL`."""
    return float(os.environ.get("STACKHOP_LEASE_TTL") or LEASE_TTL)


def broker_url(given: str | None = None) -> str:
    """The broker URL: ``given`` (``--broker``, never with a password) or ``$BROKER_ENV``."""
    if given:
        if urlsplit(given).password:
            raise UsageError(
                "--broker must not carry a password (ps shows it): put the URL in "
                f"${BROKER_ENV} instead"
            )
        return given
    url = os.environ.get(BROKER_ENV, "")
    if not url:
        raise ConfigError(
            f"no message broker: set ${BROKER_ENV} (e.g. amqp://USER:PASSWORD@HOST:5672/stackhop) "
            "or give --broker"
        )
    return url


def this_process() -> str:
    """``host:pid``: how a coordinator names itself in the journal."""
    return f"{socket.gethostname()}:{os.getpid()}"


def process_gone(name: str) -> bool:
    """``name`` (``host:pid[:...]``) was a process of this host that no longer runs: its
    lease or run can be taken over at once. False for another host's or a live process."""
    host, _, rest = name.partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
