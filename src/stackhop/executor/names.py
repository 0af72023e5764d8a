"""Names the coordinator and the workers share, without importing Celery.

The queue of a volume pass is ``stackhop.volumes.<source site>.<destination site>``
(:meth:`stackhop.volumes.storage.Backend.site`); everything else goes to
:data:`DEFAULT_QUEUE`.
"""

from __future__ import annotations

import os
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
