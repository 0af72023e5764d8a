"""What ``up`` leaves for its users: ``clouds.yaml`` and an env file to source."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from testbed import layout

#: Names of the demo project and member user created on each cloud.
DEMO_PROJECT = "demo"
DEMO_USER = "demo"


def _cloud_entry(c: layout.CloudLayout, user: str, password: str, project: str) -> dict:
    return {
        "auth": {
            "auth_url": c.keystone_url,
            "username": user,
            "password": password,
            "project_name": project,
            "user_domain_name": "Default",
            "project_domain_name": "Default",
        },
        "region_name": layout.REGION,
        "interface": "public",
        "identity_api_version": 3,
    }


def clouds_yaml() -> dict:
    from testbed.openstack import glance_legacy

    clouds: dict[str, dict] = {}
    for c in layout.CLOUDS:
        clouds[c.name] = _cloud_entry(c, "admin", layout.ADMIN_PASSWORD, "admin")
        clouds[f"{c.name}-demo"] = _cloud_entry(c, DEMO_USER, layout.DEMO_PASSWORD, DEMO_PROJECT)
    for c in glance_legacy.CLOUDS:
        # The cloud's admin, its images served by the legacy single-store Glance
        # (not in the catalog: see testbed/openstack/glance_legacy.py).
        legacy = _cloud_entry(c, "admin", layout.ADMIN_PASSWORD, "admin")
        legacy["image_endpoint_override"] = glance_legacy.url(c)
        clouds[glance_legacy.cloud_name(c)] = legacy
    return {"clouds": clouds}


def env_lines() -> list[str]:
    lines = [
        "# stackhop testbed: source this file to reach the testbed clouds",
        f"export STACKHOP_TESTBED_DIR={layout.STATE_DIR}",
        f"export OS_CLIENT_CONFIG_FILE={layout.CLOUDS_YAML}",
        f"export STACKHOP_ZOOKEEPER={layout.HOST}:{layout.ZOOKEEPER_PORT}",
        f"export STACKHOP_SSH_CONFIG={layout.SSH_DIR / 'ssh_config'}",
        f"export STACKHOP_SSH_KEY={layout.SSH_DIR / 'id_ed25519'}",
        f"export STACKHOP_SSH_KNOWN_HOSTS={layout.SSH_DIR / 'known_hosts'}",
        f"export STACKHOP_DB_URL_PREFIX=mysql+pymysql://{layout.DB_USER}:{layout.DB_PASSWORD}"
        f"@{layout.HOST}:{layout.MARIADB_PORT}",
        f"export STACKHOP_STORAGE_MAP={layout.STORAGE_MAP}",
        f"export STACKHOP_BROKER_URL={layout.stackhop_broker_url()}",
    ]
    for c in layout.CLOUDS:
        up = c.name.upper()
        lines += [
            f"export STACKHOP_{up}_CEPH_CONF={c.ceph_conf}",
            f"export STACKHOP_{up}_CEPH_KEYRING={c.ceph_keyring}",
            f"export STACKHOP_{up}_FILE_BACKEND_DIR={c.file_backend_dir}",
            f"export STACKHOP_{up}_SSH_HOST={c.ssh_host}",
        ]
    return lines


def _image_backends(c: layout.CloudLayout) -> dict:
    """The legacy Glance's RBD store as stackhop writes it (``glance-<store>``, docs/images.md)."""
    from testbed.openstack import glance

    return {
        "glance-rbd": {
            "driver": "rbd",
            "pool": glance.RBD_POOL,
            "ceph_conf": str(c.ceph_conf),
            "keyring": str(c.ceph_keyring),
            "user": "admin",
        },
    }


def storage_map() -> dict:
    """stackhop's storage map for the testbed: each cloud's Cinder backends and how to reach them.

    The format is documented in ``docs/volumes.md`` and ``stackhop.volumes.storage``.
    The ``ceph`` backend is reached with the rbd tools on this host; the
    ``file`` backend through the cloud's storage host over ssh, where each
    volume is a file in the share. ``compute`` names each nova-compute of the
    cloud (``src-compute``, ``src-legacy-compute``) with its ssh compute host
    and ``instances_path``, where an image-booted server's root disk is
    ``<instances_path>/<uuid>/disk``. The legacy Glance's cloud
    (``src-legacy``) lists its RBD image store (``glance-rbd``; docs/images.md).
    """
    from testbed.openstack import glance_legacy

    result: dict = {}
    for c in layout.CLOUDS:
        result[c.name] = {
            "ceph": {
                "driver": "rbd",
                "pool": "volumes",
                "ceph_conf": str(c.ceph_conf),
                "keyring": str(c.ceph_keyring),
                "user": "admin",
            },
            "file": {
                "driver": "file",
                "ssh_host": c.ssh_host,
                "path": str(c.file_backend_dir / "volume-{id}"),
                # Both storage hosts are this machine: the client's ssh config reaches the
                # other one from there too, so the stream method can send host to host.
                "direct_ssh_config": str(layout.SSH_DIR / "ssh_config"),
            },
            "compute": {
                h.name: {"ssh_host": h.name, "instances_path": str(h.instances_path)}
                for h in layout.COMPUTE_HOSTS
                if h.cloud == c.name
            },
        }
    for c in glance_legacy.CLOUDS:
        result[glance_legacy.cloud_name(c)] = _image_backends(c)
    return result


def _write_secret(path: Path, text: str) -> None:
    """Write a file holding passwords: created 0600, replaced atomically."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_all() -> None:
    _write_secret(layout.CLOUDS_YAML, yaml.safe_dump(clouds_yaml(), sort_keys=False))
    _write_secret(layout.ENV_FILE, "\n".join(env_lines()) + "\n")
    _write_secret(layout.STORAGE_MAP, yaml.safe_dump(storage_map(), sort_keys=False))
