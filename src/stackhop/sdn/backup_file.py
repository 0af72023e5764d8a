"""The ZooKeeper backup file: a documented, checksummed JSON-lines document.

Layout (``docs/sdn.md`` has the full description)::

    {"format": "stackhop-zookeeper-backup", "version": 1, "root": ..., "zookeeper": ...,
     "created_at": ..., "neutron": {...} | null}
    {"path": "/midonet", "data": "<base64>", "acl": [[31, "world", "anyone"]], "ephemeral": false}
    ... one line per znode, parents before children ...
    {"end": true, "nodes": N, "sha256": "<hex digest of every byte above this line>"}

``neutron`` (present when the backup was taken with the Neutron database) holds
``midonet_data_state`` at backup time and the highest task ID issued then.
A missing trailer, a wrong node count or a wrong digest is an
:class:`~stackhop.sdn.errors.BackupIntegrityError`: nothing is restored from
such a file. Files are created with mode 0600: the tree may hold credentials.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from stackhop.sdn.errors import BackupExistsError, BackupIntegrityError, BackupMissingError
from stackhop.sdn.zookeeper import Node

FORMAT = "stackhop-zookeeper-backup"
VERSION = 1


@dataclass(frozen=True)
class Backup:
    """A backup as read back: header fields, the nodes by path, the file's digest."""

    root: str
    zookeeper: str
    created_at: str
    neutron: Mapping[str, Any] | None
    nodes: dict[str, Node]
    sha256: str


def _node_line(node: Node) -> bytes:
    record = {
        "path": node.path,
        "data": base64.b64encode(node.data).decode("ascii"),
        "acl": [list(a) for a in node.acl],
        "ephemeral": node.ephemeral,
    }
    return json.dumps(record, sort_keys=True).encode() + b"\n"


def encode(
    root: str, zookeeper: str, nodes: Mapping[str, Node], neutron: Mapping[str, Any] | None
) -> bytes:
    """The whole file's bytes for this tree."""
    header = {
        "format": FORMAT,
        "version": VERSION,
        "root": root,
        "zookeeper": zookeeper,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "neutron": dict(neutron) if neutron is not None else None,
    }
    body = json.dumps(header, sort_keys=True).encode() + b"\n"
    body += b"".join(_node_line(nodes[p]) for p in sorted(nodes))
    trailer = {"end": True, "nodes": len(nodes), "sha256": hashlib.sha256(body).hexdigest()}
    return body + json.dumps(trailer, sort_keys=True).encode() + b"\n"


def decode(raw: bytes, path: str | Path) -> Backup:
    """Parse and verify a backup's bytes; :class:`BackupIntegrityError` if anything is off."""

    def bad(detail: str) -> BackupIntegrityError:
        return BackupIntegrityError(path=str(path), detail=detail)

    lines = raw.splitlines(keepends=True)
    if len(lines) < 2 or not raw.endswith(b"\n"):
        raise bad("the file is truncated")
    body, trailer_line = b"".join(lines[:-1]), lines[-1]
    try:
        trailer = json.loads(trailer_line)
        header = json.loads(lines[0])
        records = [json.loads(line) for line in lines[1:-1]]
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad(f"a line is not JSON: {exc}") from exc
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise bad("it is not a stackhop ZooKeeper backup")
    if header.get("version") != VERSION:
        raise bad(f"format version {header.get('version')}, this stackhop reads {VERSION}")
    if not isinstance(trailer, dict) or trailer.get("end") is not True:
        raise bad("the trailer is missing: the file is truncated")
    digest = hashlib.sha256(body).hexdigest()
    if trailer.get("sha256") != digest:
        raise bad("the checksum does not match the content")
    if trailer.get("nodes") != len(records):
        raise bad(f"{len(records)} nodes where the trailer says {trailer.get('nodes')}")
    nodes: dict[str, Node] = {}
    try:
        for r in records:
            acl = tuple((int(p), str(s), str(i)) for p, s, i in r["acl"])
            nodes[r["path"]] = Node(
                r["path"], base64.b64decode(r["data"], validate=True), acl, bool(r["ephemeral"])
            )
    except (KeyError, TypeError, ValueError) as exc:
        raise bad(f"a node record is malformed: {exc}") from exc
    root = header.get("root")
    if root not in nodes:
        raise bad(f"the root {root!r} is not among the nodes")
    return Backup(
        root=root,
        zookeeper=str(header.get("zookeeper")),
        created_at=str(header.get("created_at")),
        neutron=header.get("neutron"),
        nodes=nodes,
        sha256=digest,
    )


def read(path: str | Path) -> Backup:
    """Read and verify the backup at ``path``."""
    p = Path(path)
    if not p.is_file():
        raise BackupMissingError(path=str(p))
    return decode(p.read_bytes(), p)


def write(path: str | Path, raw: bytes, *, force: bool) -> None:
    """Write ``raw`` to ``path`` (mode 0600) durably, after verifying what reached the disk.

    The bytes go to a temporary file next to ``path`` first, are read back and
    decoded, and only then take the final name, so a crash never leaves a
    half-written backup under the name the operator gave.
    """
    target = Path(path)
    if target.exists() and not force:
        raise BackupExistsError(path=str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(f".{target.name}.partial")
    temp.unlink(missing_ok=True)
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        if temp.read_bytes() != raw:
            raise BackupIntegrityError(path=str(temp), detail="the bytes read back differ")
        decode(raw, temp)
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
