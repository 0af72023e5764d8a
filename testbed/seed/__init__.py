"""``python -m testbed seed``: fill src (and a little of dst) with realistic tenant data.

The whole inventory is declared in :mod:`testbed.seed.inventory` and documented
in docs/seed.md. Re-running changes nothing: every object is looked up first.
"""

from __future__ import annotations

from collections.abc import Callable


def run(report: Callable[[str], None] = print) -> None:
    """Seed both testbed clouds; ``report`` receives one line per change and a summary."""
    # Imported here: ``python -m testbed`` loads this package for every command.
    from testbed.seed.runner import seed

    seed(report)
