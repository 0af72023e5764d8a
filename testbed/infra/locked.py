"""Components that several ``up`` runs may ensure at the same time.

Two engineers (or a test session and a shell) can run ``up`` at nearly the
same moment. Without care both would see a daemon down, both start it, and
the second would clobber the first's pid file or initialise a data directory
twice. An exclusive ``flock`` per component around its whole ensure/stop
serialises them: the second run waits, then finds everything up.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager

from testbed import layout
from testbed.component import Component


@contextmanager
def component_lock(name: str) -> Iterator[None]:
    """Hold the machine-wide lock of one component (``run/<name>.lock``)."""
    layout.RUN_DIR.mkdir(parents=True, exist_ok=True)
    with open(layout.RUN_DIR / f"{name}.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class LockedComponent(Component):
    """A :class:`Component` whose ensure and stop hold its lock file."""

    def ensure(self) -> str:
        with component_lock(self.name):
            return super().ensure()

    def stop(self) -> None:
        with component_lock(self.name):
            super().stop()
