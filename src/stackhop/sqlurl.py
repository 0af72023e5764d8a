"""SQLAlchemy URLs with the database drivers stackhop ships.

The services' configuration files and operators write plain schemes
(``postgresql://``, ``mysql://``), which SQLAlchemy reads as psycopg2 and
MySQLdb; stackhop ships psycopg 3 and PyMySQL (pure Python, no compiler on the
operator's machine), so a URL that names no driver gets the shipped one. Used
by the database export and by the journal.
"""

from __future__ import annotations

from collections.abc import Mapping

import sqlalchemy as sa

#: The drivers stackhop ships (requirements), per backend.
DRIVERS: Mapping[str, str] = {"postgresql": "psycopg", "mysql": "pymysql"}


def with_shipped_driver(url: str | sa.URL) -> sa.URL:
    """``url`` with the driver stackhop ships for its backend when it names none."""
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if "+" not in parsed.drivername and backend in DRIVERS:
        parsed = parsed.set(drivername=f"{backend}+{DRIVERS[backend]}")
    return parsed
