"""ZooKeeper: connecting with a clear error, reading a subtree, restoring one exactly.

A :class:`Node` is what a restore needs to re-create a znode faithfully: its
data, its ACL, and whether it is ephemeral. Ephemeral nodes belong to live
client sessions (MidoNet agents announcing themselves): they are read and
recorded, but a restore neither re-creates nor removes them, and comparisons
ignore them, since only their owners' sessions can make them right.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from kazoo.client import KazooClient
from kazoo.exceptions import KazooException, NoNodeError
from kazoo.handlers.threading import KazooTimeoutError
from kazoo.security import ACL, Id

from stackhop.errors import ConflictError, UsageError
from stackhop.sdn.errors import ZooKeeperUnreachableError

#: Operations per ZooKeeper multi-op: well under the 1 MB request limit for
#: typical MidoNet nodes (a few KB); a small tree is restored atomically.
BATCH = 200

#: Nodes read concurrently (three requests each) while walking a tree.
READ_WINDOW = 500

#: (perms, scheme, id) of one ACL entry: what the backup file stores.
AclEntry = tuple[int, str, str]


@dataclass(frozen=True)
class Node:
    """One znode as backed up: absolute path, data, ACL, ephemeral flag."""

    path: str
    data: bytes
    acl: tuple[AclEntry, ...]
    ephemeral: bool = False


def normalise_root(root: str) -> str:
    """``/midonet/`` -> ``/midonet``; a root must be absolute."""
    if not root.startswith("/"):
        raise UsageError(f"--root {root!r} must be an absolute ZooKeeper path (start with /)")
    clean = posixpath.normpath(root)
    return "/" if clean in ("/", "//") else clean


@contextmanager
def connect(hosts: str, timeout: float = 5.0) -> Iterator[KazooClient]:
    """A started client for ``HOST:PORT[,HOST:PORT]``; one-line error when it does not answer."""
    if not hosts or ":" not in hosts:
        raise UsageError(f"--zk {hosts!r}: give HOST:PORT, e.g. 127.0.0.1:2181")
    client = KazooClient(hosts=hosts, timeout=timeout, connection_retry={"max_tries": 1})
    try:
        client.start(timeout=timeout)
    except (KazooTimeoutError, KazooException, OSError, ValueError) as exc:
        client.close()
        raise ZooKeeperUnreachableError(
            hosts=hosts, detail=str(exc) or type(exc).__name__
        ) from exc
    try:
        yield client
    finally:
        client.stop()
        client.close()


def _acl(entries: list[ACL]) -> tuple[AclEntry, ...]:
    return tuple(sorted((int(a.perms), a.id.scheme, a.id.id) for a in entries))


def _kazoo_acl(entries: tuple[AclEntry, ...]) -> list[ACL]:
    return [ACL(perms, Id(scheme, ident)) for perms, scheme, ident in entries]


def read_tree(client: KazooClient, root: str) -> dict[str, Node]:
    """Every znode under ``root`` (itself included), by path; empty when root is absent.

    ``sync`` first so that this client sees every write acknowledged before
    the call, whichever server it talks to.
    """
    client.sync(root)
    nodes: dict[str, Node] = {}
    level = [root]
    while level:
        following: list[str] = []
        # Level by level, READ_WINDOW nodes' requests in flight at once rather
        # than one round trip after another; children are listed only for
        # nodes whose stat says they have some (most nodes are leaves).
        for start in range(0, len(level), READ_WINDOW):
            window = [
                (path, client.get_async(path), client.get_acls_async(path))
                for path in level[start : start + READ_WINDOW]
            ]
            parents = []
            for path, data_reply, acl_reply in window:
                try:
                    data, stat = data_reply.get()
                    acl, _ = acl_reply.get()
                except NoNodeError:
                    continue  # removed while we walked; a later comparison catches that
                nodes[path] = Node(path, data or b"", _acl(acl), bool(stat.ephemeralOwner))
                if stat.numChildren:
                    parents.append((path, client.get_children_async(path)))
            for path, children_reply in parents:
                try:
                    children = children_reply.get()
                except NoNodeError:
                    continue
                if path == "/" and "zookeeper" in children:
                    children.remove("zookeeper")  # the server's own quota subtree, not ours
                following.extend(posixpath.join(path, c) for c in children)
        level = following
    return dict(sorted(nodes.items()))


def persistent(tree: Mapping[str, Node]) -> dict[str, Node]:
    """The nodes a restore is responsible for (ephemeral ones left out)."""
    return {p: n for p, n in tree.items() if not n.ephemeral}


def differences(expected: Mapping[str, Node], actual: Mapping[str, Node]) -> list[str]:
    """Human lines for each persistent node that is extra, missing, or different."""
    want, have = persistent(expected), persistent(actual)
    lines = [f"extra node {p}" for p in sorted(have.keys() - want.keys())]
    lines += [f"missing node {p}" for p in sorted(want.keys() - have.keys())]
    for path in sorted(want.keys() & have.keys()):
        if want[path].data != have[path].data:
            lines.append(f"data of {path} differs")
        if want[path].acl != have[path].acl:
            lines.append(f"ACL of {path} differs")
    return lines


def _depth(path: str) -> int:
    return 0 if path == "/" else path.count("/")


@dataclass(frozen=True)
class RestoreReport:
    """What a restore changed."""

    created: int
    deleted: int
    data_restored: int
    acl_restored: int

    @property
    def changes(self) -> int:
        return self.created + self.deleted + self.data_restored + self.acl_restored


def restore_tree(client: KazooClient, root: str, backup: Mapping[str, Node]) -> RestoreReport:
    """Make the subtree at ``root`` equal to ``backup`` (persistent nodes).

    Nodes created since are removed (deepest first), missing ones re-created
    (shallowest first) with their data and ACL, changed data set back; all in
    ZooKeeper multi-ops of :data:`BATCH` operations, so a small tree changes
    atomically. ACLs, which a multi-op cannot carry, are set afterwards.
    """
    current = read_tree(client, root)
    if not current and root != "/":
        # The whole subtree is gone: its ancestors (outside the backup) must exist first.
        client.ensure_path(posixpath.dirname(root))
    want = persistent(backup)
    have = persistent(current)
    # An ephemeral node created since the backup blocks deleting its parent,
    # and the tree must match: it goes too (its owner re-creates it if alive).
    extra = sorted(
        (p for p in current if p not in want), key=lambda p: (-_depth(p), p)
    )
    missing = sorted((p for p in want if p not in have), key=lambda p: (_depth(p), p))
    changed = [p for p in sorted(want.keys() & have.keys()) if want[p].data != have[p].data]
    ops: list[tuple[str, str]] = (
        [("delete", p) for p in extra]
        + [("create", p) for p in missing]
        + [("set", p) for p in changed]
    )
    for start in range(0, len(ops), BATCH):
        txn = client.transaction()
        for op, path in ops[start : start + BATCH]:
            if op == "delete":
                txn.delete(path)
            elif op == "create":
                node = want[path]
                txn.create(path, node.data, acl=_kazoo_acl(node.acl) or None)
            else:
                txn.set_data(path, want[path].data)
        results = txn.commit()
        failures = [r for r in results if isinstance(r, Exception)]
        if failures:
            # The multi-op is all or nothing: nothing of this batch was applied.
            raise ConflictError(
                f"ZooKeeper refused to restore {root} ({failures[0]!r}): the tree changed "
                "during the rollback; stop the writers and re-run the rollback"
            )
    acl_fixed = 0
    for path in sorted(want.keys() & have.keys()):
        if want[path].acl != have[path].acl:
            client.set_acls(path, _kazoo_acl(want[path].acl))
            acl_fixed += 1
    return RestoreReport(len(missing), len(extra), len(changed), acl_fixed)
