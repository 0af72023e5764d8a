"""Where the MidoNet cluster's ZooKeeper is, when ``--zk`` is not given.

As the MidoNet tools find it: ``[zookeeper] zookeeper_hosts`` of
``/etc/midonet/midonet.conf`` (the node's bootstrap file, which ``mn-conf``
also reads), then of the operator's ``~/.midonetrc``. The paths can be
overridden with ``STACKHOP_MIDONET_CONF`` / ``STACKHOP_MIDONETRC`` (tests,
unusual layouts).
"""

from __future__ import annotations

import configparser
import os
from pathlib import Path

from stackhop.errors import ConfigError

MIDONET_CONF = Path("/etc/midonet/midonet.conf")
CONF_ENV = "STACKHOP_MIDONET_CONF"
RC_ENV = "STACKHOP_MIDONETRC"


def candidates() -> list[Path]:
    """The files looked at, in order."""
    conf = Path(os.environ.get(CONF_ENV) or MIDONET_CONF)
    rc = Path(os.environ.get(RC_ENV) or Path.home() / ".midonetrc")
    return [conf, rc]


def hosts_in(path: Path) -> str | None:
    """``[zookeeper] zookeeper_hosts`` of ``path`` (None when absent); unparsable: an error."""
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    try:
        parser.read(path, encoding="utf-8")
    except (configparser.Error, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot parse {path}: {' '.join(str(exc).split())}") from exc
    value = parser.get("zookeeper", "zookeeper_hosts", fallback="").strip().strip('"')
    return value or None


def resolve(zk: str | None) -> str:
    """``--zk`` if given, else the first ``zookeeper_hosts`` found; else a one-line error."""
    if zk:
        return zk
    looked: list[str] = []
    for path in candidates():
        if not path.is_file():
            looked.append(f"{path} (absent)")
            continue
        found = hosts_in(path)
        if found:
            return found
        looked.append(f"{path} (no [zookeeper] zookeeper_hosts)")
    raise ConfigError(
        f"no --zk given and no ZooKeeper address found in {', '.join(looked)}: "
        "pass --zk HOST:PORT"
    )


DEFAULT_ROOT = "/midonet"


def resolve_root(root: str | None) -> str:
    """``--root`` if given, else ``[zookeeper] root_key`` of the same files, else ``/midonet``.

    Legacy MidoNet nodes name their topology's ZooKeeper path there (e.g.
    ``root_key = /midonet/v1`` in midolman.conf / midonet.conf).
    """
    if root:
        return root
    for path in candidates():
        if path.is_file():
            parser = configparser.ConfigParser(interpolation=None, strict=False)
            try:
                parser.read(path, encoding="utf-8")
            except (configparser.Error, UnicodeDecodeError) as exc:
                raise ConfigError(f"cannot parse {path}: {' '.join(str(exc).split())}") from exc
            value = parser.get("zookeeper", "root_key", fallback="").strip().strip('"')
            if value:
                return value
    return DEFAULT_ROOT
