"""The storage map's ``compute`` section: each cloud's Nova compute hosts, read from a real file."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError
from stackhop.volumes.storage import ComputeHost, load_storage_map

MAP = """\
src:
  file:
    driver: file
    ssh_host: src-storage
    path: /srv/cinder/volume-{id}
  compute:
    src-compute:
      ssh_host: root@src-compute
      instances_path: /var/lib/nova/instances/
    src-legacy-compute:
      ssh_host: src-legacy-compute
      instances_path: /srv/nova_legacy/instances
dst:
  compute:
    dst-compute:
      ssh_host: dst-compute
      instances_path: /var/lib/nova/instances
"""

SERVER = "6f1e3c1a-93b4-4c51-9a2e-0d7c5a1f2b3c"


def _load(tmp_path: Path, text: str = MAP) -> Path:
    path = tmp_path / "storage.yaml"
    path.write_text(text)
    return path


def test_compute_hosts_load_beside_the_backends(tmp_path: Path) -> None:
    storage = load_storage_map(_load(tmp_path))
    assert storage.compute_host("src", "src-compute") == ComputeHost(
        cloud="src", name="src-compute", ssh_host="root@src-compute",
        instances_path="/var/lib/nova/instances/",
    )
    assert storage.compute_host("dst", "dst-compute").ssh_host == "dst-compute"
    # `compute` is a section, not a backend: the backends are what they were.
    assert set(storage.backends) == {("src", "file")}
    assert set(storage.computes) == {
        ("src", "src-compute"), ("src", "src-legacy-compute"), ("dst", "dst-compute")
    }


def test_a_server_disk_is_under_its_instance_directory(tmp_path: Path) -> None:
    storage = load_storage_map(_load(tmp_path))
    host = storage.compute_host("src", "src-compute")
    assert host.disk_path(SERVER) == f"/var/lib/nova/instances/{SERVER}/disk"
    legacy = storage.compute_host("src", "src-legacy-compute")
    assert legacy.disk_path(SERVER) == f"/srv/nova_legacy/instances/{SERVER}/disk"


@pytest.mark.parametrize(
    "server_id",
    ["../../etc", "", f"{SERVER}/..", "x; reboot", f"{{{SERVER}}}", f"urn:uuid:{SERVER}"],
)
def test_a_disk_path_needs_a_server_id(tmp_path: Path, server_id: str) -> None:
    host = load_storage_map(_load(tmp_path)).compute_host("src", "src-compute")
    with pytest.raises(ValueError, match="is not a server ID"):
        host.disk_path(server_id)


def test_an_unknown_compute_host_names_the_map_and_the_section(tmp_path: Path) -> None:
    path = _load(tmp_path)
    storage = load_storage_map(path)
    with pytest.raises(ConfigError) as exc:
        storage.compute_host("dst", "src-compute")
    message = str(exc.value)
    assert str(path) in message and "dst.compute" in message and "'src-compute'" in message
    with pytest.raises(ConfigError, match="which compute host"):
        storage.compute_host("src", None)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("  compute: [a, b]\n", "src.compute must map compute host names"),
        ("  compute:\n    src-compute: x\n", "src.compute.src-compute must be a mapping"),
        ("  compute:\n    src-compute:\n      ssh_host: h\n", "needs 'instances_path'"),
        ("  compute:\n    src-compute:\n      instances_path: /i\n", "needs 'ssh_host'"),
        (
            "  compute:\n    src-compute:\n      ssh_host: h\n      instances_path: /i\n"
            "      driver: file\n",
            "unknown keys ['driver']",
        ),
    ],
)
def test_a_malformed_compute_section_is_refused_in_one_line(
    tmp_path: Path, section: str, expected: str
) -> None:
    path = _load(tmp_path, "src:\n" + section)
    with pytest.raises(ConfigError) as exc:
        load_storage_map(path)
    message = str(exc.value)
    assert expected in message and str(path) in message and "\n" not in message


def test_a_map_without_compute_hosts_has_none(tmp_path: Path) -> None:
    path = _load(tmp_path, "src:\n  ceph:\n    driver: rbd\n    pool: volumes\n")
    storage = load_storage_map(path)
    assert storage.computes == {}
    with pytest.raises(ConfigError, match="no compute host 'src-compute'"):
        storage.compute_host("src", "src-compute")
