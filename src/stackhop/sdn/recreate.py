"""``recreate-controller-objects``: write back the objects ``prepare`` saved, after the import.

``prepare --zk`` saved every ``ROOT/<collection>/<uuid>`` that is not a
Neutron object (tunnel zones with their hosts' memberships, hosts,
operator-made chains and routers) with its subtree to
``DATA_DIR/controller-objects/<collection>/<uuid>.json``. The importer
re-creates only Neutron's objects; this step writes the saved ones back,
under the same root or under ``--root`` (paths rebased).

Idempotent: a node already holding the saved data and ACL is left alone.
Every file is read and every node compared *before* anything is written;
a node that exists with other data is a conflict (someone, or the import,
made it differently) and nothing is written unless ``--force``, which sets
the saved data on it. Each object is one ZooKeeper multi-op: it appears
whole or not at all.
"""

from __future__ import annotations

import base64
import json
import posixpath
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from kazoo.client import KazooClient
from kazoo.exceptions import NoNodeError
from kazoo.security import ACL, Id

from stackhop.errors import ConfigError, ConflictError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.sdn import zookeeper
from stackhop.sdn.prepare import CONTROLLER_DIR
from stackhop.sdn.steps import StepRunner
from stackhop.sdn.zookeeper import Node


@dataclass
class RecreateResult:
    """Per object (``collection/uuid``): what was (or would be) done."""

    directory: str
    objects: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


@dataclass(frozen=True)
class SavedObject:
    key: str
    nodes: tuple[Node, ...]  # parents first, paths rebased to the target root


def _load(path: Path, key: str, root: str | None) -> SavedObject:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        nodes = [
            Node(n["path"], base64.b64decode(n["data"]),
                 tuple((int(a[0]), str(a[1]), str(a[2])) for a in n["acl"]),
                 bool(n.get("ephemeral")))
            for n in document["nodes"]
        ]
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        raise ConfigError(f"{path} is not a controller object file written by prepare ({exc}); "
                          "restore it or remove it") from exc
    if document.get("object") != key or not nodes:
        raise ConfigError(f"{path} names object {document.get('object')!r}, not {key!r}")
    if root is not None:
        # The object's own node is <old root>/<key>: rebase every path onto the new root.
        top = min(nodes, key=lambda n: n.path.count("/")).path
        old_root = top[: -len(key) - 1]
        nodes = [Node(root.rstrip("/") + n.path[len(old_root):], n.data, n.acl, n.ephemeral)
                 for n in nodes]
    persistent = sorted((n for n in nodes if not n.ephemeral), key=lambda n: n.path.count("/"))
    return SavedObject(key, tuple(persistent))


def load_all(data_dir: Path, root: str | None) -> list[SavedObject]:
    """Every saved object under ``data_dir``; an unreadable file is a one-line error."""
    base = data_dir / CONTROLLER_DIR
    if not base.is_dir():
        raise ConfigError(f"no {base}; run `prepare --zk HOST:PORT --data-dir {data_dir}` first "
                          "(it saves the controller objects)")
    out = []
    for path in sorted(base.glob("*/*.json")):
        out.append(_load(path, f"{path.parent.name}/{path.stem}", root))
    return out


def _plan(client: KazooClient, obj: SavedObject) -> tuple[list[Node], list[Node]]:
    """(nodes to create, nodes whose data or ACL differ) for one object."""
    create: list[Node] = []
    differ: list[Node] = []
    for node in obj.nodes:
        try:
            data, _ = client.get(node.path)
            acl, _ = client.get_acls(node.path)
        except NoNodeError:
            create.append(node)
            continue
        have = tuple(sorted((int(a.perms), a.id.scheme, a.id.id) for a in acl))
        if (data or b"") != node.data or have != node.acl:
            differ.append(node)
    return create, differ


def _acl(node: Node) -> list[ACL] | None:
    return [ACL(p, Id(s, i)) for p, s, i in node.acl] or None


def _write(client: KazooClient, obj: SavedObject, force: bool) -> str:
    create, differ = _plan(client, obj)
    if differ and not force:
        raise ConflictError(f"{differ[0].path} exists with other data or ACL than saved for "
                            f"{obj.key}; check it, or pass --force to set the saved ones")
    if not create and not differ:
        return "already present"
    parent = posixpath.dirname(obj.nodes[0].path)
    if create and create[0] is obj.nodes[0]:
        client.ensure_path(parent)
    txn = client.transaction()
    for node in create:
        txn.create(node.path, node.data, acl=_acl(node))
    for node in differ:
        txn.set_data(node.path, node.data)
    failures = [r for r in txn.commit() if isinstance(r, Exception)]
    if failures:
        raise ConflictError(f"ZooKeeper refused to write {obj.key} ({failures[0]!r}); "
                            "nothing of it was written: re-run")
    for node in differ:
        if _acl(node):
            client.set_acls(node.path, _acl(node))
    return f"{len(create)} node(s) created" + (f", {len(differ)} set" if differ else "")


def recreate(
    zk: str,
    data_dir: Path,
    journal: Journal,
    *,
    root: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> RecreateResult:
    """Write every saved controller object back into ZooKeeper ``zk`` (see the module doc)."""
    target = zookeeper.normalise_root(root) if root else None
    objects = load_all(data_dir, target)
    result = RecreateResult(str(data_dir / CONTROLLER_DIR), dry_run=dry_run)
    with zookeeper.connect(zk) as client:
        client.sync("/")
        plans = {obj.key: _plan(client, obj) for obj in objects}
        conflicts = [f"{d[0].path}" for _, d in plans.values() if d]
        if conflicts and not force and not dry_run:
            raise ConflictError(f"{conflicts[0]} exists with other data or ACL than saved "
                                f"({len(conflicts)} object(s) differ); check it, or pass --force "
                                "to set the saved ones; nothing was written")
        if dry_run:
            for key, (create, differ) in plans.items():
                result.objects[key] = (
                    "already present" if not create and not differ else
                    f"would create {len(create)} node(s)"
                    + (f"; {len(differ)} differ (conflict unless --force)" if differ else ""))
            return result
        runner = StepRunner(journal, "recreate-controller-objects",
                            f"{zk}:{data_dir.resolve()}:{target or 'saved root'}",
                            {"data_dir": str(data_dir)}, events or NullSink())
        try:
            for obj in objects:
                result.objects[obj.key] = runner.step(
                    f"recreate {obj.key}", partial(_write, client, obj, force))
            runner.complete()
        except BaseException:
            runner.finish("failed")
            raise
        runner.finish("succeeded")
    return result
