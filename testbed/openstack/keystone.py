"""Keystone of one cloud: fernet tokens, the admin bootstrap, and the whole service catalog.

Keystone owns the catalog of its cloud: the service users (admin and
service roles in project ``service``), one service and three endpoints per
OpenStack service, and the ``demo`` project with its member user. Services
come up beside Keystone and only need it when a request arrives.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed import layout
from testbed.component import Component
from testbed.infra.locked import LockedComponent
from testbed.openstack import keystone_ldap, runtime, schema
from testbed.openstack.config import (
    common_sections,
    make_service_dirs,
    service_data,
    service_etc,
    write_ini,
)
from testbed.outputs import DEMO_PROJECT, DEMO_USER
from testbed.process import Daemon, run

NAME = "keystone"
#: Roles every cloud has (bootstrap creates them; the catalog makes sure).
ROLES = ("admin", "member", "reader", "service")


@dataclass(frozen=True)
class CatalogEntry:
    """One OpenStack service as the catalog lists it."""

    user: str | None  # the service user, or None for an extra service type of the same user
    name: str
    type: str
    url: str


def catalog(c: layout.CloudLayout) -> list[CatalogEntry]:
    """Every service of cloud ``c`` besides Keystone itself (which bootstrap registers)."""
    base = f"http://{layout.HOST}"
    cinder = f"{base}:{c.cinder_port}/v3/%(project_id)s"
    return [
        CatalogEntry("glance", "glance", "image", f"{base}:{c.glance_port}"),
        CatalogEntry("placement", "placement", "placement", f"{base}:{c.placement_port}"),
        CatalogEntry("nova", "nova", "compute", f"{base}:{c.nova_port}/v2.1"),
        CatalogEntry("neutron", "neutron", "network", f"{base}:{c.neutron_port}"),
        CatalogEntry("cinder", "cinder", "block-storage", cinder),
        CatalogEntry(None, "cinderv3", "volumev3", cinder),
    ]


def config_file(c: layout.CloudLayout) -> Path:
    return service_etc(c, NAME) / "keystone.conf"


def _write_config(c: layout.CloudLayout) -> bool:
    make_service_dirs(c, NAME)
    data = service_data(c, NAME)
    sections: dict[str, dict[str, object]] = {
        "DEFAULT": {},
        "database": {"connection": c.db_url(NAME)},
        "token": {"provider": "fernet"},
        "fernet_tokens": {"key_repository": data / "fernet-keys"},
        "fernet_receipts": {"key_repository": data / "fernet-keys"},
        "credential": {"key_repository": data / "credential-keys"},
        # bcrypt's minimum cost: every token request checks a password hash,
        # and the testbed's passwords protect nothing.
        "identity": {"password_hash_rounds": 4, "caching": False},
        # One process: an in-process cache is coherent, and spares the
        # database a lookup per token validation. Identity data stays
        # uncached: the seed writes Keystone's tables directly (dst's
        # copy of src's projects), and must be seen at once.
        "cache": {"enabled": True, "backend": "dogpile.cache.memory"},
        "resource": {"caching": False},
        "assignment": {"caching": False},
        "role": {"caching": False},
        **common_sections(c, NAME),
    }
    for section, options in keystone_ldap.config_sections(c).items():
        sections[section] = {**sections.get(section, {}), **options}
    return write_ini(config_file(c), sections)


def _manage(c: layout.CloudLayout, *args: str) -> None:
    # The service's environment: keystone-manage loads the identity driver the
    # config names (src's ``stackhop_hybrid`` is one of the testbed's shims).
    run(
        [str(layout.VENV_BIN / "keystone-manage"), "--config-file", str(config_file(c)), *args],
        env=runtime.service_env(),
        log=layout.LOG_DIR / f"{NAME}-{c.name}-manage.log",
    )


def _bootstrap(c: layout.CloudLayout) -> None:
    """Schema, keys and the admin user, once per Keystone version."""
    done = runtime.stamp(c, "keystone-bootstrap", runtime.version("keystone"))
    if done.done():
        return
    schema.ensure(c, NAME, "keystone", [NAME], lambda c: _manage(c, "db_sync"))
    data = service_data(c, NAME)
    if not any((data / "fernet-keys").glob("*")):
        _manage(c, "fernet_setup", "--keystone-user", "root", "--keystone-group", "root")
    if not any((data / "credential-keys").glob("*")):
        _manage(c, "credential_setup", "--keystone-user", "root", "--keystone-group", "root")
    _manage(
        c,
        "bootstrap",
        "--bootstrap-password",
        layout.ADMIN_PASSWORD,
        "--bootstrap-admin-url",
        c.keystone_url,
        "--bootstrap-internal-url",
        c.keystone_url,
        "--bootstrap-public-url",
        c.keystone_url,
        "--bootstrap-region-id",
        layout.REGION,
    )
    done.mark()


def _catalog_stamp(c: layout.CloudLayout) -> runtime.Stamp:
    wanted = json.dumps(
        [e.__dict__ for e in catalog(c)]
        + [ROLES, DEMO_PROJECT, DEMO_USER, layout.DEMO_PASSWORD, layout.SERVICE_PASSWORD],
        sort_keys=True,
    )
    return runtime.stamp(c, "keystone-catalog", hashlib.sha256(wanted.encode()).hexdigest())


def register_catalog(c: layout.CloudLayout) -> None:
    """Service users, services, endpoints, roles and the demo tenant (idempotent)."""
    done = _catalog_stamp(c)
    if done.done():
        return
    conn = runtime.admin_connection(c)
    ident: Any = conn.identity  # the SDK types it as identity v2 | v3
    roles = {r: ident.find_role(r) or ident.create_role(name=r) for r in ROLES}
    service_project = ident.find_project("service", domain_id="default") or ident.create_project(
        name="service", domain_id="default", description="OpenStack service users"
    )
    for entry in catalog(c):
        if entry.user is not None:
            user = ident.find_user(entry.user, domain_id="default")
            if user is None:
                user = ident.create_user(
                    name=entry.user, password=layout.SERVICE_PASSWORD, domain_id="default"
                )
            else:  # keep the password in step with layout.py
                ident.update_user(user, password=layout.SERVICE_PASSWORD)
            for role in ("admin", "service"):
                ident.assign_project_role_to_user(service_project, user, roles[role])
        service = ident.find_service(entry.name) or ident.create_service(
            name=entry.name, type=entry.type
        )
        existing = {e.interface: e for e in ident.endpoints(service_id=service.id)}
        for interface in ("public", "internal", "admin"):
            have = existing.get(interface)
            if have is None:
                ident.create_endpoint(
                    service_id=service.id,
                    interface=interface,
                    url=entry.url,
                    region_id=layout.REGION,
                )
            elif have.url != entry.url:
                ident.update_endpoint(have, url=entry.url)
    demo = ident.find_project(DEMO_PROJECT, domain_id="default") or ident.create_project(
        name=DEMO_PROJECT, domain_id="default", description="A tenant of the testbed"
    )
    user = ident.find_user(DEMO_USER, domain_id="default")
    if user is None:
        user = ident.create_user(
            name=DEMO_USER,
            password=layout.DEMO_PASSWORD,
            domain_id="default",
            default_project_id=demo.id,
        )
    ident.assign_project_role_to_user(demo, user, roles["member"])
    done.mark()


def daemon(c: layout.CloudLayout) -> Daemon:
    return runtime.uwsgi_daemon(
        f"{NAME}-{c.name}",
        c.keystone_port,
        "keystone.wsgi.api:application",
        env={"OS_KEYSTONE_CONFIG_FILES": str(config_file(c))},
    )


def component(c: layout.CloudLayout) -> Component:
    """Keystone of cloud ``c`` with its catalog registered."""
    d = daemon(c)

    def setup() -> None:
        runtime.write_shared_files()
        changed = _write_config(c)
        changed = keystone_ldap.write_domain_configs(c) or changed
        runtime.restart_on_change(changed, [d])
        _bootstrap(c)

    def after_start() -> None:
        register_catalog(c)
        keystone_ldap.ensure_domain(c, d)

    return LockedComponent(
        name=f"{NAME}-{c.name}",
        # slapd: dst's ldap_users domain reads the directory (only when asked, but then at once).
        after=("mariadb", "slapd") if keystone_ldap.reads_directory(c) else ("mariadb",),
        daemons=[d],
        setup=setup,
        after_start=after_start,
    )
