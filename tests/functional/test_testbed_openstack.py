"""The testbed's OpenStack services answer and do real work, on both clouds.

Everything goes through openstacksdk with the generated ``clouds.yaml``, as
stackhop itself will; bytes are checked on the storage behind the services
(the RBD image in the cloud's Ceph pool, the file on the ``file`` share).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openstack.config
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from openstack.connection import Connection
from testbed import layout, outputs
from testbed.component import bring_up
from testbed.infra import ceph
from testbed.openstack import cinder
from testbed.registry import all_components

MiB = 1024 * 1024
GiB = 1024 * MiB


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def testbed_up() -> None:
    """The whole testbed, up (seconds when it already runs), and its clouds.yaml written."""
    layout.make_dirs()
    bring_up(all_components(), report=lambda line: None)
    outputs.write_all()


@pytest.fixture(scope="module", params=[c.name for c in layout.CLOUDS])
def cloud(request: pytest.FixtureRequest, testbed_up: None) -> layout.CloudLayout:
    return layout.cloud(request.param)


def _connect(name: str) -> Connection:
    config = openstack.config.OpenStackConfig(config_files=[str(layout.CLOUDS_YAML)])
    return Connection(config=config.get_one(cloud=name))


@pytest.fixture(scope="module")
def admin(cloud: layout.CloudLayout) -> Connection:
    return _connect(cloud.name)


@pytest.fixture(scope="module")
def demo(cloud: layout.CloudLayout) -> Connection:
    return _connect(f"{cloud.name}-demo")


@pytest.fixture
def name() -> str:
    """A name no earlier run used, so tests never trip over leftovers."""
    return f"tb-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def cleanup() -> Iterator[Callable[[Callable[[], Any]], None]]:
    """Register undo actions; they run in reverse order after the test."""
    undo: list[Callable[[], Any]] = []
    yield undo.append
    for action in reversed(undo):
        action()


@pytest.fixture(scope="module")
def rbd_modules() -> Any:
    """Debian's ``rados`` and ``rbd`` bindings, importable from the venv."""
    sys.path.insert(0, str(ceph.python_path()))
    import rados
    import rbd

    return rados, rbd


@pytest.fixture
def volumes_pool(cloud: layout.CloudLayout, rbd_modules: Any) -> Iterator[Any]:
    """An ioctx on the cloud's ``volumes`` pool, as the cluster's admin."""
    rados, _ = rbd_modules
    cluster = rados.Rados(conffile=str(cloud.ceph_conf), conf={"keyring": str(cloud.ceph_keyring)})
    cluster.connect(timeout=30)
    try:
        with cluster.open_ioctx(cinder.CEPH_POOL) as ioctx:
            yield ioctx
    finally:
        cluster.shutdown()


def _wait(what: str, probe: Callable[[], Any], timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def _payload(size: int) -> bytes:
    """Recognisable, incompressible-enough bytes (not zeros: sparse reads would hide bugs)."""
    seed = uuid.uuid4().bytes
    block = hashlib.sha256(seed).digest() * (4096 // 32)
    return (block * (size // len(block) + 1))[:size]


# -- identity ------------------------------------------------------------------------------


def test_identity_lists_projects_and_users(admin: Connection) -> None:
    projects = {p.name for p in admin.identity.projects()}
    users = {u.name for u in admin.identity.users()}
    assert {"admin", "service", outputs.DEMO_PROJECT} <= projects
    assert {"admin", outputs.DEMO_USER, "glance", "nova", "placement", "neutron", "cinder"} <= users
    roles = {r.name for r in admin.identity.roles()}
    assert {"admin", "member", "reader"} <= roles


def test_catalog_lists_every_service(demo: Connection, cloud: layout.CloudLayout) -> None:
    ports = {
        "identity": cloud.keystone_port,
        "image": cloud.glance_port,
        "compute": cloud.nova_port,
        "placement": cloud.placement_port,
        "network": cloud.neutron_port,
        "block-storage": cloud.cinder_port,
    }
    for service_type, port in ports.items():
        url = demo.session.get_endpoint(service_type=service_type, interface="public")
        assert url is not None and f":{port}" in url, service_type


# -- image ----------------------------------------------------------------------------------


def _upload(admin: Connection, name: str, data: bytes, store: str) -> Any:
    image = admin.image.create_image(
        name=name, disk_format="raw", container_format="bare", allow_duplicates=True
    )
    admin.image.put(
        f"/images/{image.id}/file",
        data=data,
        headers={"Content-Type": "application/octet-stream", "X-Image-Meta-Store": store},
    )
    return _wait_active_image(admin, image.id)


def _wait_active_image(admin: Connection, image_id: str) -> Any:
    def probe() -> Any:
        image = admin.image.get_image(image_id)
        return image if image.status == "active" else None

    return _wait(f"image {image_id} active", probe)


def _stores(image: Any) -> set[str]:
    """The Glance stores holding the image (openstacksdk keeps ``stores`` among the properties)."""
    return {s for s in (image.properties or {}).get("stores", "").split(",") if s}


@pytest.mark.parametrize("store", ["fast", "slow"])
def test_image_upload_and_download_on_each_store(
    admin: Connection, name: str, store: str, cleanup: Callable[..., None]
) -> None:
    data = _payload(3 * MiB + 17)
    image = _upload(admin, name, data, store)
    cleanup(lambda: admin.image.delete_image(image.id, ignore_missing=True))
    assert _stores(image) == {store}
    assert image.size == len(data)
    assert admin.image.download_image(image).content == data


def test_copy_image_to_other_store_then_delete_from_one(
    admin: Connection, name: str, cleanup: Callable[..., None]
) -> None:
    data = _payload(2 * MiB)
    image = _upload(admin, name, data, "fast")
    cleanup(lambda: admin.image.delete_image(image.id, ignore_missing=True))
    admin.image.import_image(image, method="copy-image", stores=["slow"])
    # The import task adds the location before it finishes; it then saves the image once more,
    # so a store deleted before that reappears. Wait for the task to be done, not just the store.
    def copied() -> bool:
        current = admin.image.get_image(image.id)
        importing = (current.properties or {}).get("os_glance_importing_to_stores", "")
        return _stores(current) == {"fast", "slow"} and not importing

    _wait("copy to slow", copied)

    # Admin drops the copy in "fast"; the image lives on in "slow" alone, bytes intact.
    admin.image.delete(f"/stores/fast/{image.id}").raise_for_status()
    assert _stores(admin.image.get_image(image.id)) == {"slow"}
    assert admin.image.download_image(image).content == data


# -- compute --------------------------------------------------------------------------------


def _public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    ).decode()


def test_admin_creates_keypair_for_another_user(
    admin: Connection, demo: Connection, name: str, cleanup: Callable[..., None]
) -> None:
    demo_user = admin.identity.find_user(outputs.DEMO_USER, domain_id="default")
    key = _public_key()
    created = admin.compute.create_keypair(name=name, public_key=key, user_id=demo_user.id)
    cleanup(lambda: admin.compute.delete_keypair(name, user_id=demo_user.id, ignore_missing=True))
    assert created.user_id == demo_user.id

    # The demo user owns it; the admin's own keypairs do not include it.
    mine = demo.compute.get_keypair(name)
    assert mine.public_key.strip() == key and mine.fingerprint == created.fingerprint
    assert name not in {k.name for k in admin.compute.keypairs()}


def test_compute_max_microversion_allows_keypairs_of_other_users(admin: Connection) -> None:
    version = admin.compute.get("/", microversion=None).json()["version"]
    major, minor = (int(x) for x in version["version"].split("."))
    assert (major, minor) >= (2, 10)


def test_quota_set_on_compute_network_and_block_storage(
    admin: Connection, name: str, cleanup: Callable[..., None]
) -> None:
    # A project of its own: the seeded projects' quotas are not ours to touch.
    project = admin.identity.create_project(name=name, domain_id="default")
    cleanup(lambda: admin.identity.delete_project(project, ignore_missing=True))
    cleanup(lambda: admin.compute.revert_quota_set(project))
    cleanup(lambda: admin.network.delete_quota(project.id))
    cleanup(lambda: admin.block_storage.revert_quota_set(project))
    admin.compute.update_quota_set(project, key_pairs=123)
    admin.network.update_quota(project.id, security_groups=23)
    admin.block_storage.update_quota_set(project, gigabytes=1234)
    assert admin.compute.get_quota_set(project).key_pairs == 123
    assert admin.network.get_quota(project.id).security_groups == 23
    assert admin.block_storage.get_quota_set(project).gigabytes == 1234


def test_flavors_exist(admin: Connection) -> None:
    flavors = {f.name: (f.vcpus, f.ram, f.disk) for f in admin.compute.flavors()}
    assert flavors["m1.tiny"] == (1, 512, 1)
    assert flavors["m1.small"] == (1, 2048, 20)


# -- network --------------------------------------------------------------------------------


def test_security_group_with_rule(
    demo: Connection, name: str, cleanup: Callable[..., None]
) -> None:
    group = demo.network.create_security_group(name=name, description="testbed check")
    cleanup(lambda: demo.network.delete_security_group(group, ignore_missing=True))
    rule = demo.network.create_security_group_rule(
        security_group_id=group.id,
        direction="ingress",
        ethertype="IPv4",
        protocol="tcp",
        port_range_min=22,
        port_range_max=22,
        remote_ip_prefix="10.0.0.0/8",
    )
    rules = list(demo.network.security_group_rules(security_group_id=group.id))
    assert rule.id in {r.id for r in rules}
    assert any(r.port_range_min == 22 and r.remote_ip_prefix == "10.0.0.0/8" for r in rules)


def _tenant_network(demo: Connection, name: str, cleanup: Callable[..., None]) -> tuple[Any, Any]:
    net = demo.network.create_network(name=name)
    cleanup(lambda: demo.network.delete_network(net, ignore_missing=True))
    subnet = demo.network.create_subnet(
        network_id=net.id, name=name, ip_version=4, cidr="192.168.77.0/24"
    )
    cleanup(lambda: demo.network.delete_subnet(subnet, ignore_missing=True))
    return net, subnet


def test_network_and_subnet(demo: Connection, name: str, cleanup: Callable[..., None]) -> None:
    net, subnet = _tenant_network(demo, name, cleanup)
    assert demo.network.get_network(net.id).subnet_ids == [subnet.id]
    assert net.provider_network_type is None or net.provider_network_type == "vxlan"


# About 12 s a cloud; test_servers_migrate.py boots servers with a router and a floating IP
# on both clouds in make test.
@pytest.mark.long
def test_server_goes_active_with_router_and_floating_ip(
    admin: Connection, demo: Connection, name: str, cleanup: Callable[..., None]
) -> None:
    # An external network (admin) and a router with a gateway on it (demo). A
    # flat network takes its physical network whole: use one of our own.
    external = admin.network.create_network(
        name=f"{name}-ext",
        is_router_external=True,
        provider_network_type="flat",
        provider_physical_network=name,
    )
    cleanup(lambda: admin.network.delete_network(external, ignore_missing=True))
    ext_subnet = admin.network.create_subnet(
        network_id=external.id, ip_version=4, cidr="203.0.113.0/24", is_dhcp_enabled=False
    )
    cleanup(lambda: admin.network.delete_subnet(ext_subnet, ignore_missing=True))
    net, subnet = _tenant_network(demo, name, cleanup)
    router = demo.network.create_router(
        name=name, external_gateway_info={"network_id": external.id}
    )
    cleanup(lambda: demo.network.delete_router(router, ignore_missing=True))
    demo.network.add_interface_to_router(router, subnet_id=subnet.id)
    cleanup(lambda: demo.network.remove_interface_from_router(router, subnet_id=subnet.id))

    image = _upload(admin, name, _payload(MiB), "fast")
    cleanup(lambda: admin.image.delete_image(image.id, ignore_missing=True))
    admin.image.update_image(image, visibility="public")
    flavor = demo.compute.find_flavor("m1.tiny")
    server = demo.compute.create_server(
        name=name, image_id=image.id, flavor_id=flavor.id, networks=[{"uuid": net.id}]
    )
    cleanup(lambda: _delete_server(demo, server))
    server = demo.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"], wait=120)
    assert server.status == "ACTIVE"

    # The agentless ML2 driver bound the server's port.
    (port,) = demo.network.ports(device_id=server.id)
    assert port.status == "ACTIVE"
    assert admin.network.get_port(port.id).binding_vif_type == "ovs"

    fip = demo.network.create_ip(floating_network_id=external.id, port_id=port.id)
    cleanup(lambda: demo.network.delete_ip(fip, ignore_missing=True))
    assert fip.floating_ip_address.startswith("203.0.113.")
    assert demo.network.get_ip(fip.id).fixed_ip_address == port.fixed_ips[0]["ip_address"]

    # Usage of the demo project is recorded for the server.
    project_id = server.project_id
    usage = admin.compute.get(
        f"/os-simple-tenant-usage/{project_id}?start=2000-01-01T00:00:00&end=2100-01-01T00:00:00"
    ).json()["tenant_usage"]
    assert server.id in {s["instance_id"] for s in usage["server_usages"]}


def _delete_server(conn: Connection, server: Any) -> None:
    conn.compute.delete_server(server, ignore_missing=True)
    conn.compute.wait_for_delete(server, wait=60)


# -- block storage --------------------------------------------------------------------------


def _pool(cloud: layout.CloudLayout, backend: str) -> str:
    """``host@backend#pool`` of a backend (each backend has one pool, named like it)."""
    return f"{cinder.backend_host(cloud, backend)}#{backend}"


def _volume(demo: Connection, name: str, volume_type: str, cleanup: Callable[..., None]) -> Any:
    vol = demo.block_storage.create_volume(name=name, size=1, volume_type=volume_type)
    cleanup(lambda: demo.block_storage.delete_volume(vol, ignore_missing=True))
    vol = demo.block_storage.wait_for_status(vol, "available", failures=["error"], wait=120)
    return vol


def test_volume_types_per_backend(admin: Connection, cloud: layout.CloudLayout) -> None:
    types = {t.name: t.extra_specs.get("volume_backend_name") for t in admin.block_storage.types()}
    assert types["ceph"] == "ceph" and types["file"] == "file"
    pools = {p.name for p in admin.block_storage.backend_pools()}
    assert {_pool(cloud, "ceph"), _pool(cloud, "file")} <= pools


def test_ceph_volume_holds_real_bytes(
    demo: Connection,
    admin: Connection,
    cloud: layout.CloudLayout,
    name: str,
    volumes_pool: Any,
    rbd_modules: Any,
    cleanup: Callable[..., None],
) -> None:
    _, rbd = rbd_modules
    vol = _volume(demo, name, "ceph", cleanup)
    assert admin.block_storage.get_volume(vol.id).host == _pool(cloud, "ceph")
    data = _payload(MiB)
    with rbd.Image(volumes_pool, f"volume-{vol.id}") as img:
        assert img.size() == GiB
        img.write(data, 5 * MiB)
    with rbd.Image(volumes_pool, f"volume-{vol.id}", read_only=True) as img:
        assert img.read(5 * MiB, len(data)) == data


def test_file_volume_holds_real_bytes(
    demo: Connection,
    admin: Connection,
    name: str,
    cloud: layout.CloudLayout,
    cleanup: Callable[..., None],
) -> None:
    vol = _volume(demo, name, "file", cleanup)
    assert admin.block_storage.get_volume(vol.id).host == _pool(cloud, "file")
    backing = cloud.file_backend_dir / f"volume-{vol.id}"
    assert backing.stat().st_size == GiB
    data = _payload(MiB)
    with open(backing, "r+b") as fh:
        fh.seek(7 * MiB)
        fh.write(data)
    with open(backing, "rb") as fh:
        fh.seek(7 * MiB)
        assert fh.read(len(data)) == data


def test_ceph_volume_uploads_to_image_through_os_brick(
    admin: Connection,
    cloud: layout.CloudLayout,
    name: str,
    volumes_pool: Any,
    rbd_modules: Any,
    cleanup: Callable[..., None],
) -> None:
    """A raw upload reads the RBD volume through os-brick, which finds the keyring only in
    /etc/ceph: this proves cinder-volume's private /etc/ceph. A small adopted image keeps
    the upload short (Cinder does not grow an image it manages)."""
    _, rbd = rbd_modules
    data = _payload(3 * MiB)
    rbd.RBD().create(volumes_pool, name, 8 * MiB)
    cleanup(lambda: _remove_rbd(rbd, volumes_pool, name))
    with rbd.Image(volumes_pool, name) as img:
        img.write(data, 0)
    vol = _manage(admin, _pool(cloud, "ceph"), "ceph", name, name)
    cleanup(lambda: admin.block_storage.delete_volume(vol, ignore_missing=True))

    result = admin.block_storage.upload_volume_to_image(
        vol, name, disk_format="raw", container_format="bare"
    )
    image_id = result["image_id"]
    cleanup(lambda: admin.image.delete_image(image_id, ignore_missing=True))
    image = _wait_active_image(admin, image_id)
    assert admin.image.download_image(image).content == data + bytes(8 * MiB - len(data))


def _manage(admin: Connection, host: str, volume_type: str, source: str, name: str) -> Any:
    """Adopt existing storage into Cinder ("manage existing"); wait until it is available."""
    body = {
        "volume": {
            "host": host,
            "ref": {"source-name": source},
            "name": name,
            "volume_type": volume_type,
            "bootable": False,
        }
    }
    response = admin.block_storage.post("/manageable_volumes", json=body, microversion="3.8")
    response.raise_for_status()
    vol_id = response.json()["volume"]["id"]
    return admin.block_storage.wait_for_status(
        admin.block_storage.get_volume(vol_id), "available", failures=["error"], wait=120
    )


def test_manage_existing_rbd_image(
    admin: Connection,
    cloud: layout.CloudLayout,
    name: str,
    volumes_pool: Any,
    rbd_modules: Any,
    cleanup: Callable[..., None],
) -> None:
    _, rbd = rbd_modules
    data = _payload(MiB)
    rbd.RBD().create(volumes_pool, name, 64 * MiB)
    cleanup(lambda: _remove_rbd(rbd, volumes_pool, name))
    with rbd.Image(volumes_pool, name) as img:
        img.write(data, 0)

    vol = _manage(admin, _pool(cloud, "ceph"), "ceph", name, name)
    cleanup(lambda: admin.block_storage.delete_volume(vol, ignore_missing=True))
    assert vol.size == 1  # rounded up to whole GiB
    assert name not in rbd.RBD().list(volumes_pool)  # adopted: renamed to volume-<id>
    with rbd.Image(volumes_pool, f"volume-{vol.id}", read_only=True) as img:
        assert img.read(0, len(data)) == data


def _remove_rbd(rbd: Any, ioctx: Any, image: str) -> None:
    if image in rbd.RBD().list(ioctx):
        rbd.RBD().remove(ioctx, image)


def test_manage_existing_file(
    admin: Connection, cloud: layout.CloudLayout, name: str, cleanup: Callable[..., None]
) -> None:
    data = _payload(MiB)
    legacy = cloud.file_backend_dir / name
    legacy.write_bytes(data)
    cleanup(lambda: legacy.unlink(missing_ok=True))
    os.truncate(legacy, 40 * MiB)

    vol = _manage(admin, _pool(cloud, "file"), "file", f"{cinder.share(cloud)}/{name}", name)
    cleanup(lambda: admin.block_storage.delete_volume(vol, ignore_missing=True))
    assert vol.size == 1
    adopted = cloud.file_backend_dir / f"volume-{vol.id}"
    assert not legacy.exists() and adopted.exists()
    assert adopted.read_bytes()[: len(data)] == data


def test_no_mount_left_on_the_host(cloud: layout.CloudLayout) -> None:
    """The share's bind mount and /etc/ceph live only in cinder-volume's namespace."""
    mounts = Path("/proc/self/mounts").read_text()
    assert str(cinder.share_mountpoint(cloud)) not in mounts
    assert " /etc/ceph " not in mounts
