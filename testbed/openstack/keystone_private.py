"""A private Keystone beside a cloud's own: its configuration and a copy of its database.

Used to try a Keystone configuration (the domain-specific LDAP domain, a
wrong bind password) without touching the shared Keystone every checkout's
tests talk to. The copy runs under uWSGI on its own port, from a copy of the
cloud's ``keystone.conf`` with the database, key repositories and lock path
pointed at its own, and is stopped by its PID and its database dropped when
done.

Clients must talk to it through its URL only: the catalog in the copied
database names the shared Keystone (``identity_endpoint_override``).
"""

from __future__ import annotations

import configparser
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed import layout
from testbed.infra import mariadb
from testbed.openstack import keystone, keystone_ldap, runtime, schema
from testbed.openstack.config import Sections, service_data, write_ini
from testbed.process import Daemon

if TYPE_CHECKING:
    from openstack.connection import Connection

#: Keystone ports of private instances: beside the clouds' (15000, 16000), unused by them.
PRIVATE_PORT_BASE = 16900


@dataclass(frozen=True)
class PrivateKeystone:
    """A running private Keystone: where it answers and how to log in as admin."""

    name: str
    port: int
    dir: Path
    daemon: Daemon

    @property
    def url(self) -> str:
        return f"http://{layout.HOST}:{self.port}/v3"

    def connection(self, **auth: str) -> Connection:
        """A connection that never leaves this instance (admin of project admin by default)."""
        import openstack.connection

        creds: dict[str, Any] = {
            "username": "admin", "password": layout.ADMIN_PASSWORD, "project_name": "admin",
            "user_domain_name": "Default", "project_domain_name": "Default", **auth,
        }
        return openstack.connection.Connection(
            auth_url=self.url, identity_api_version="3", region_name=layout.REGION,
            identity_endpoint_override=self.url, **creds,
        )

    def restart(self) -> None:
        self.daemon.stop()
        self.daemon.ensure()


def _private_config(c: layout.CloudLayout, name: str, base: Path,
                    extra: dict[str, dict[str, object]]) -> Sections:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(keystone.config_file(c))
    sections: dict[str, dict[str, object]] = {s: dict(parser[s]) for s in parser.sections()}
    sections["database"]["connection"] = c.db_url(name.removeprefix(f"{c.name}_"))
    for section in ("fernet_tokens", "fernet_receipts"):
        sections[section]["key_repository"] = base / "fernet-keys"
    sections["credential"]["key_repository"] = base / "credential-keys"
    sections["oslo_concurrency"]["lock_path"] = base / "locks"
    for section, options in extra.items():
        sections.setdefault(section, {}).update(options)
    return sections


@contextmanager
def private_keystone(
    c: layout.CloudLayout,
    label: str,
    *,
    ldap_bind_password: str | None = None,
    hybrid_bind_password: str | None = None,
    slot: int = 0,
) -> Iterator[PrivateKeystone]:
    """A copy of cloud ``c``'s Keystone, optionally reading the directory.

    With ``ldap_bind_password``: plus the domain-specific LDAP domain
    (``layout.LDAP_DOMAIN``), created in the copy and the copy restarted, as
    :func:`keystone_ldap.ensure_domain` does on a cloud. With
    ``hybrid_bind_password``: the default domain's driver is the hybrid one
    (:mod:`stackhop_hybrid_identity`): SQL users and the directory's people.
    """
    name = f"{c.name}_keystone_{label}"
    port = PRIVATE_PORT_BASE + slot
    base = layout.STATE_DIR / "private" / f"keystone-{c.name}-{label}"
    shutil.rmtree(base, ignore_errors=True)
    (base / "locks").mkdir(parents=True)
    live = service_data(c, "keystone")
    shutil.copytree(live / "fernet-keys", base / "fernet-keys")
    shutil.copytree(live / "credential-keys", base / "credential-keys")
    extra: dict[str, dict[str, object]] = {}
    if ldap_bind_password is not None:
        domains = base / "domains"
        domains.mkdir()
        write_ini(domains / f"keystone.{layout.LDAP_DOMAIN}.conf",
                  keystone_ldap.domain_sections(ldap_bind_password))
        extra["identity"] = {"domain_specific_drivers_enabled": True, "domain_config_dir": domains}
    if hybrid_bind_password is not None:
        extra.update(keystone_ldap.hybrid_sections(hybrid_bind_password))
    # The shims' entry points (the hybrid driver's) in a directory of its own.
    runtime.write_plugin_metadata(base / "plugins", name=f"stackhop-private-{label}")
    conf = base / "keystone.conf"
    write_ini(conf, _private_config(c, name, base, extra))
    dump = base / "keystone.sql"
    mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")
    mariadb.create_database(name)
    schema.dump(c.db_name("keystone"), dump)
    schema.load(dump, name)
    dump.unlink()
    daemon = runtime.uwsgi_daemon(
        f"keystone-{c.name}-{label}", port, "keystone.wsgi.api:application",
        env={"OS_KEYSTONE_CONFIG_FILES": str(conf)},
        python_path=[base / "plugins"],
    )
    instance = PrivateKeystone(name=name, port=port, dir=base, daemon=daemon)
    try:
        daemon.ensure()
        if ldap_bind_password is not None:
            ident: Any = instance.connection().identity
            if ident.find_domain(layout.LDAP_DOMAIN) is None:
                ident.create_domain(name=layout.LDAP_DOMAIN)
                instance.restart()
        yield instance
    finally:
        daemon.stop()
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")
        shutil.rmtree(base, ignore_errors=True)
