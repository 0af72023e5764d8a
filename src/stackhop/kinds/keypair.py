"""``nova.keypair``: every user's SSH keypairs (public half only), moved by an admin.

Nova keypairs belong to a user, not a project; an admin reads and writes
other users' keypairs with compute microversion 2.10. A keypair has no ID of
its own, so its source ID is ``<user id>/<name>`` and its identity
``<domain>/<user>/<name>``. Keypairs cannot be changed in place: ``--overwrite``
replaces one (delete, then create). Nova keeps only the public key, so a
private key never passes through stackhop. ``--via db`` reads Nova API's
``key_pairs`` table.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from stackhop.kinds import register
from stackhop.kinds.base import Connection, ExportScope, Kind, Record, SqlSource, concurrently
from stackhop.kinds.identity import USER
from stackhop.kinds.rest import call, segment

#: Admin access to other users' keypairs (``user_id``) and the key ``type``.
MICROVERSION = "2.10"


def keypair_record(
    user: Mapping[str, Any], name: str, key_type: str, public_key: str, **facts: Any
) -> Record:
    """The archive record of one keypair (the API and the database export both build it here)."""
    return {
        "id": f"{user['id']}/{name}",
        "user_id": user["id"],
        "user_name": user["name"],
        "user_domain": user["domain_name"],
        "name": name,
        "type": key_type,
        "public_key": public_key.strip(),
        **{k: v for k, v in facts.items() if v is not None},
    }


@register
class Keypair(Kind):
    name = "nova.keypair"
    service = "compute"
    references = {"user_id": USER}
    portable_fields = ("type", "public_key")
    source_only_fields = ("fingerprint", "user_name", "user_domain")
    selectors = {"keypairs": "every user's keypairs"}
    transfer = True

    def identity(self, record: Mapping[str, Any]) -> str:
        return f"{record['user_domain']}/{record['user_name']}/{record['name']}"

    def normalize(self, field: str, value: Any) -> Any:
        # Nova may store a key with a trailing newline; the key is the same.
        return value.strip() if isinstance(value, str) else value

    def list(self, conn: Connection, **filters: Any) -> Iterator[Record]:
        """Every keypair of each user in ``users`` (``identity.user`` records).

        Nova lists keypairs one user at a time: a source whose Default domain
        holds an LDAP directory's 1,200 people costs 1,200 requests, so they run
        ``workers`` (default 8) at a time, the answers kept in the users' order.
        """
        users: list[Mapping[str, Any]] = list(filters["users"])
        answers = concurrently(
            int(filters.get("workers", 8)), lambda u: _keypairs_of(conn, str(u["id"])), users
        )
        for user, keypairs in zip(users, answers, strict=True):
            for kp in keypairs:
                yield keypair_record(
                    user,
                    kp["name"],
                    kp.get("type", "ssh"),
                    kp["public_key"],
                    fingerprint=kp.get("fingerprint"),
                )

    def export(self, conn: Connection, scope: ExportScope) -> Iterator[Record]:
        return self.list(conn, users=scope.users)

    def read_db(self, db: SqlSource, scope: ExportScope) -> Iterator[Record]:
        from stackhop.dbexport import DatabaseReader, live

        by_id = {u["id"]: u for u in scope.users}
        if isinstance(db, DatabaseReader):
            # Today key_pairs lives in the API database; Liberty kept it (soft-deleted
            # rows and all) in the cell database: decided by reflection.
            database = (
                "nova_api"
                if db.configured("nova_api") and db.columns("nova_api", "key_pairs") is not None
                else "nova"
            )
            columns = db.require(database, "key_pairs", {"user_id", "name", "public_key"})
            kind = "type" if "type" in columns else "'ssh'"
            fingerprint = "fingerprint" if "fingerprint" in columns else "NULL"
            rows = db.query(
                database,
                f"SELECT user_id, name, {kind} AS type, public_key, {fingerprint} AS fingerprint "
                f"FROM key_pairs WHERE {live(columns)} ORDER BY user_id, name",
            )
        else:
            rows = db.query(
                "nova_api",
                "SELECT user_id, name, type, public_key, fingerprint FROM key_pairs "
                "ORDER BY user_id, name",
            )
        for row in rows:
            user = by_id.get(row.user_id)
            if user is not None:  # a keypair of a deleted user is not listed by the API either
                yield keypair_record(
                    user, row.name, row.type or "ssh", row.public_key, fingerprint=row.fingerprint
                )

    def find(self, conn: Connection, record: Mapping[str, Any]) -> Record | None:
        body = call(
            conn.compute,
            "GET",
            f"/os-keypairs/{segment(record['name'])}?user_id={segment(record['user_id'])}",
            microversion=MICROVERSION,
            missing_ok=True,
        )
        return None if body is None else self._view(record, body["keypair"])

    def find_many(
        self, conn: Connection, records: Sequence[Mapping[str, Any]], workers: int = 8
    ) -> builtins.list[Record | None]:
        """One listing per user (not one request per keypair), ``workers`` users at a time."""
        users = sorted({str(r["user_id"]) for r in records})

        def keypairs_of(user_id: str) -> dict[str, Mapping[str, Any]]:
            return {kp["name"]: kp for kp in _keypairs_of(conn, user_id)}

        by_user = dict(zip(users, concurrently(workers, keypairs_of, users), strict=True))
        found: builtins.list[Record | None] = []
        for record in records:
            kp = by_user[str(record["user_id"])].get(record["name"])
            found.append(None if kp is None else self._view(record, kp))
        return found

    @staticmethod
    def _view(record: Mapping[str, Any], kp: Mapping[str, Any]) -> Record:
        return {
            "id": f"{record['user_id']}/{kp['name']}",
            "user_id": record["user_id"],
            "name": kp["name"],
            "type": kp.get("type", "ssh"),
            "public_key": kp["public_key"],
            "fingerprint": kp.get("fingerprint"),
        }

    def create(self, conn: Connection, record: Mapping[str, Any]) -> str:
        call(
            conn.compute,
            "POST",
            "/os-keypairs",
            json={
                "keypair": {
                    "name": record["name"],
                    "type": record["type"],
                    "public_key": record["public_key"],
                    "user_id": record["user_id"],
                }
            },
            microversion=MICROVERSION,
        )
        return f"{record['user_id']}/{record['name']}"

    def update(
        self, conn: Connection, record: Mapping[str, Any], existing: Mapping[str, Any]
    ) -> None:
        # Keypairs are immutable: replace. Rollback recreates the old key from ``before``.
        self.delete(conn, self.destination_id(existing))
        self.create(conn, record)

    def before(self, existing: Mapping[str, Any]) -> Record:
        return {k: existing[k] for k in ("id", "user_id", "name", "type", "public_key")}

    def delete(self, conn: Connection, destination_id: str) -> None:
        user_id, name = destination_id.split("/", 1)
        call(
            conn.compute,
            "DELETE",
            f"/os-keypairs/{segment(name)}?user_id={segment(user_id)}",
            microversion=MICROVERSION,
            missing_ok=True,
        )

    def restore(self, conn: Connection, before: Mapping[str, Any]) -> None:
        """Put back the keypair an ``--overwrite`` replaced (rollback)."""
        self.delete(conn, str(before["id"]))
        self.create(conn, before)


def _keypairs_of(conn: Connection, user_id: str) -> list[Mapping[str, Any]]:
    """The keypair documents of one user (one request)."""
    body = call(
        conn.compute, "GET", f"/os-keypairs?user_id={segment(user_id)}", microversion=MICROVERSION
    ) or {}
    return [item["keypair"] for item in body.get("keypairs", [])]
