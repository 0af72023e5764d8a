"""The testbed's shared infrastructure, exercised for real.

MariaDB, RabbitMQ, ZooKeeper, both Ceph clusters and both storage hosts are
brought up (or found up) once per session, then used the way stackhop and the
OpenStack services use them: SQL over TCP, AMQP logins per vhost, kazoo,
``rbd`` and the Python bindings as admin and as the Cinder user, and ssh with
strict host key checking through the generated ``ssh_config``.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import amqp
import pymysql
import pytest
from kazoo.client import KazooClient
from testbed import infra, layout, process
from testbed.component import bring_up
from testbed.infra import ceph, mariadb, sshhost, zookeeper

pytestmark = pytest.mark.functional

CLOUDS = pytest.mark.parametrize("cloud", layout.CLOUDS, ids=lambda c: c.name)
MiB = 1024 * 1024


@pytest.fixture(scope="session")
def infra_up() -> None:
    """Bring up the shared infrastructure, reusing whatever already runs."""
    layout.make_dirs()
    bring_up(infra.components(), report=lambda line: None)


@pytest.fixture(scope="session")
def ceph_python(infra_up: None) -> None:
    """Make Debian's rados/rbd importable here, exactly as PYTHONPATH does for services."""
    path = str(ceph.python_path())
    if path not in sys.path:
        sys.path.insert(0, path)


def _rbd(cloud: layout.CloudLayout, *args: str, user: str = "admin",
         check: bool = True) -> subprocess.CompletedProcess[str]:
    conf = cloud.ceph_conf if user == "admin" else ceph.cinder_conf(cloud)
    return subprocess.run(
        ["rbd", "--conf", str(conf), "--id", user, *args],
        capture_output=True, text=True, timeout=120, check=check,
    )


def _pattern(size: int, seed: str) -> bytes:
    """Deterministic, incompressible-looking test data."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


@pytest.fixture
def image_name() -> str:
    return f"infra-test-{uuid.uuid4().hex[:10]}"


# -- MariaDB ---------------------------------------------------------------------


def test_mariadb_answers_the_service_user_over_tcp(infra_up: None) -> None:
    conn = pymysql.connect(host=layout.HOST, port=layout.MARIADB_PORT, user=layout.DB_USER,
                           password=layout.DB_PASSWORD, connect_timeout=5)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@max_connections, @@bind_address, 6 * 7")
            max_connections, bind_address, answer = cur.fetchone()
    finally:
        conn.close()
    assert answer == 42
    assert max_connections >= 1000
    assert bind_address == layout.HOST


def test_mariadb_create_database_is_idempotent_and_utf8mb4(infra_up: None) -> None:
    name = f"infra_test_{uuid.uuid4().hex[:8]}"
    try:
        mariadb.create_database(name)
        mariadb.create_database(name)
        charset = mariadb.sql(
            "SELECT DEFAULT_CHARACTER_SET_NAME FROM information_schema.SCHEMATA "
            f"WHERE SCHEMA_NAME = '{name}'"
        ).strip()
        assert charset == "utf8mb4"
        mariadb.sql("CREATE TABLE t (s VARCHAR(10)); INSERT INTO t VALUES ('hop')", database=name)
        assert mariadb.sql("SELECT s FROM t", database=name).strip() == "hop"
    finally:
        mariadb.sql(f"DROP DATABASE IF EXISTS `{name}`")


def test_mariadb_rejects_a_bad_database_name(infra_up: None) -> None:
    with pytest.raises(ValueError):
        mariadb.create_database("x; DROP DATABASE mysql")


def test_mariadb_rejects_a_wrong_password(infra_up: None) -> None:
    with pytest.raises(pymysql.err.OperationalError):
        pymysql.connect(host=layout.HOST, port=layout.MARIADB_PORT, user=layout.DB_USER,
                        password="wrong", connect_timeout=5)


# -- RabbitMQ --------------------------------------------------------------------


@CLOUDS
def test_rabbitmq_vhost_carries_a_message(infra_up: None, cloud: layout.CloudLayout) -> None:
    conn = amqp.Connection(f"{layout.HOST}:{layout.RABBIT_PORT}", userid=layout.RABBIT_USER,
                           password=layout.RABBIT_PASSWORD, virtual_host=cloud.rabbit_vhost,
                           connect_timeout=10)
    conn.connect()
    try:
        channel = conn.channel()
        queue = f"infra-test-{uuid.uuid4().hex[:8]}"
        channel.queue_declare(queue, auto_delete=False)
        try:
            channel.basic_publish(amqp.Message(f"hello {cloud.name}"), routing_key=queue)
            msg = None
            for _ in range(50):
                msg = channel.basic_get(queue, no_ack=True)
                if msg is not None:
                    break
                time.sleep(0.1)
            assert msg is not None and msg.body == f"hello {cloud.name}"
        finally:
            channel.queue_delete(queue)
    finally:
        conn.close()


def test_rabbitmq_refuses_a_wrong_password(infra_up: None) -> None:
    conn = amqp.Connection(f"{layout.HOST}:{layout.RABBIT_PORT}", userid=layout.RABBIT_USER,
                           password="wrong", virtual_host="src", connect_timeout=10)
    with pytest.raises(amqp.exceptions.AccessRefused):
        conn.connect()


def test_rabbitmq_keeps_its_cookie_in_the_state_dir(infra_up: None) -> None:
    from testbed.infra import rabbitmq

    assert rabbitmq.COOKIE.is_relative_to(layout.STATE_DIR)
    assert rabbitmq.COOKIE.stat().st_mode & 0o777 == 0o600
    assert {"src", "dst"} <= set(rabbitmq.VHOSTS)


# -- ZooKeeper -------------------------------------------------------------------


def test_zookeeper_is_ok_and_stores_znodes(infra_up: None) -> None:
    assert zookeeper.four_letter_word("ruok") == "imok"
    zk = KazooClient(hosts=zookeeper.address(), timeout=10)
    zk.start(timeout=10)
    path = f"/stackhop-infra-test/{uuid.uuid4().hex[:8]}"
    try:
        zk.create(path, b"topology", makepath=True)
        data, stat = zk.get(path)
        assert data == b"topology" and stat.version == 0
        zk.set(path, b"changed")
        assert zk.get(path)[0] == b"changed"
    finally:
        zk.delete("/stackhop-infra-test", recursive=True)
        zk.stop()
        zk.close()


# -- Ceph ------------------------------------------------------------------------


@CLOUDS
def test_rbd_cli_writes_and_reads_back(infra_up: None, cloud: layout.CloudLayout,
                                       image_name: str, tmp_path: Path) -> None:
    data = _pattern(8 * MiB, image_name)
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    _rbd(cloud, "import", "--no-progress", str(src), f"volumes/{image_name}")
    try:
        out = tmp_path / "out.raw"
        _rbd(cloud, "export", "--no-progress", f"volumes/{image_name}", str(out))
        assert hashlib.sha256(out.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
        assert image_name in _rbd(cloud, "ls", "volumes").stdout.split()
    finally:
        _rbd(cloud, "rm", "--no-progress", f"volumes/{image_name}")


@CLOUDS
def test_rbd_python_bindings_write_and_read(ceph_python: None, cloud: layout.CloudLayout,
                                            image_name: str) -> None:
    import rados
    import rbd

    data = _pattern(3 * MiB + 17, image_name)
    with rados.Rados(conffile=str(ceph.cinder_conf(cloud)), rados_id=ceph.cinder_user(cloud)) as cl:
        # A client's admin socket carries its pid: two clients never clash.
        asok = Path(cl.conf_get("admin_socket"))
        assert str(os.getpid()) in asok.name
        with cl.open_ioctx("images") as ioctx:
            rbd.RBD().create(ioctx, image_name, 4 * MiB)
            try:
                with rbd.Image(ioctx, image_name) as img:
                    img.write(data, 4096)
                with rbd.Image(ioctx, image_name, read_only=True) as img:
                    assert img.read(4096, len(data)) == data
                    assert img.read(0, 4096) == b"\0" * 4096
                    extents: list[tuple[int, int]] = []
                    img.diff_iterate(0, img.size(), None, lambda o, n, e: extents.append((o, n)))
                    assert extents, "written extents must be reported"
            finally:
                rbd.RBD().remove(ioctx, image_name)


def test_the_two_clusters_are_separate(infra_up: None, image_name: str) -> None:
    src, dst = layout.SRC, layout.DST
    _rbd(src, "create", "--size", "4M", f"volumes/{image_name}")
    try:
        assert image_name not in _rbd(dst, "ls", "volumes").stdout.split()
        # src's Cinder key means nothing to dst's monitors.
        refused = subprocess.run(
            ["rbd", "--conf", str(ceph.cinder_conf(dst)), "--id", ceph.cinder_user(src),
             "--keyring", str(ceph.keyring(src, ceph.cinder_user(src))), "ls", "volumes"],
            capture_output=True, text=True, timeout=60,
        )
        assert refused.returncode != 0
    finally:
        _rbd(src, "rm", "--no-progress", f"volumes/{image_name}")


@CLOUDS
def test_cinder_user_uses_both_pools_and_nothing_more(infra_up: None, cloud: layout.CloudLayout,
                                                      image_name: str) -> None:
    user = ceph.cinder_user(cloud)
    assert not user.startswith("client.")
    assert ceph.keyring(cloud, user).parent == ceph.etc_ceph_dir(cloud)
    assert ceph.keyring(cloud, user).stat().st_mode & 0o777 == 0o600
    for pool in ("volumes", "images"):
        _rbd(cloud, "create", "--size", "8M", f"{pool}/{image_name}", user=user)
        _rbd(cloud, "snap", "create", f"{pool}/{image_name}@s1", user=user)
        _rbd(cloud, "snap", "rm", f"{pool}/{image_name}@s1", user=user)
        _rbd(cloud, "rm", "--no-progress", f"{pool}/{image_name}", user=user)
    denied = subprocess.run(
        ["ceph", "--conf", str(ceph.cinder_conf(cloud)), "--id", user, "auth", "ls"],
        capture_output=True, text=True, timeout=60,
    )
    assert denied.returncode != 0 and "denied" in denied.stderr.lower()


@CLOUDS
def test_cinder_keyring_is_found_under_etc_ceph_in_a_mount_namespace(
        infra_up: None, cloud: layout.CloudLayout) -> None:
    """What cinder-volume does: bind etc_ceph_dir over /etc/ceph in its own namespace."""
    user = ceph.cinder_user(cloud)
    script = (
        f"mount --bind {ceph.etc_ceph_dir(cloud)} /etc/ceph && "
        f"rbd --conf /etc/ceph/ceph.conf --id {user} "
        f"--keyring /etc/ceph/ceph.client.{user}.keyring ls volumes"
    )
    proc = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert not Path(f"/etc/ceph/ceph.client.{user}.keyring").exists(), "the bind leaked"


def test_killed_osd_is_restarted_from_its_data(infra_up: None, image_name: str,
                                               tmp_path: Path) -> None:
    cloud = layout.SRC
    data = _pattern(2 * MiB, image_name)
    src = tmp_path / "in.raw"
    src.write_bytes(data)
    _rbd(cloud, "import", "--no-progress", str(src), f"volumes/{image_name}")
    try:
        osd = ceph.osd_daemon(cloud)
        pid = osd.pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)  # ours: started by the testbed, found by its pid file
        deadline = time.monotonic() + 10
        while osd.running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not osd.running()
        bring_up(infra.components(), report=lambda line: None, only={f"ceph-{cloud.name}"})
        assert osd.pid() not in (None, pid)
        out = tmp_path / "out.raw"
        _rbd(cloud, "export", "--no-progress", f"volumes/{image_name}", str(out))
        assert out.read_bytes() == data
    finally:
        _rbd(cloud, "rm", "--no-progress", f"volumes/{image_name}")


# -- storage hosts ---------------------------------------------------------------


def _ssh(host: str, command: str, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(sshhost.SSH_CONFIG), *options, host, command],
        capture_output=True, text=True, timeout=60,
    )


@CLOUDS
def test_ssh_reaches_the_storage_host_and_its_ceph(infra_up: None,
                                                   cloud: layout.CloudLayout) -> None:
    command = 'echo "$CEPH_CONF"; id -u; rbd ls volumes >/dev/null && echo rbd-ok'
    proc = _ssh(cloud.ssh_host, command)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(cloud.ceph_conf), "0", "rbd-ok"]


@CLOUDS
def test_ssh_refuses_a_wrong_host_key(infra_up: None, cloud: layout.CloudLayout,
                                      tmp_path: Path) -> None:
    other = next(c for c in layout.CLOUDS if c is not cloud)
    # The other host's key filed under this host's names: a man in the middle.
    wrong = tmp_path / "known_hosts"
    key = sshhost.public_key(sshhost.storage_host(other).host_key)
    wrong.write_text(f"{cloud.ssh_host},[{layout.HOST}]:{cloud.ssh_port} {key}")
    proc = _ssh(cloud.ssh_host, "true", "-o", f"UserKnownHostsFile={wrong}")
    assert proc.returncode == 255
    assert "host key" in proc.stderr.lower()
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    proc = _ssh(cloud.ssh_host, "true", "-o", f"UserKnownHostsFile={empty}")
    assert proc.returncode == 255 and "host key verification failed" in proc.stderr.lower()


def test_ssh_refuses_an_unknown_client_key(infra_up: None, tmp_path: Path) -> None:
    key = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    # Not through ssh_config: there, IdentityFile would add the stranger key to the good one.
    proc = subprocess.run(
        ["ssh", "-F", "/dev/null", "-p", str(layout.SRC.ssh_port), "-i", str(key),
         "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
         "-o", f"UserKnownHostsFile={sshhost.KNOWN_HOSTS}", f"root@{layout.HOST}", "true"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 255 and "permission denied" in proc.stderr.lower()


def test_ssh_client_files_are_private_where_needed(infra_up: None) -> None:
    assert sshhost.CLIENT_KEY.stat().st_mode & 0o777 == 0o600
    for h in sshhost.hosts():
        assert h.host_key.stat().st_mode & 0o777 == 0o600
        text = h.sshd_config.read_text()
        assert "PasswordAuthentication no" in text
        assert f"ListenAddress {layout.HOST}:{h.port}" in text


# -- the whole ---------------------------------------------------------------------


def test_up_when_up_restarts_nothing(infra_up: None) -> None:
    # How fast this is gets measured (docs/testbed.md), never asserted: what `up` must not do
    # with everything up is restart anything.
    daemons = [d for c in infra.components() for d in c.daemons]
    before = {d.name: d.pid() for d in daemons}
    outcomes: list[str] = []
    bring_up(infra.components(), report=outcomes.append)
    assert {d.name: d.pid() for d in daemons} == before
    assert not [line for line in outcomes if "started" in line.split()]


def test_every_infra_daemon_answers(infra_up: None) -> None:
    names = {c.name for c in infra.components()}
    assert names == {"mariadb", "rabbitmq", "zookeeper", "ceph-src", "ceph-dst",
                     "ssh-src", "ssh-dst", "ssh-src-compute", "ssh-src-legacy-compute",
                     "ssh-dst-compute", "slapd", "postgresql"}
    for component in infra.components():
        for d in component.daemons:
            assert d.answers(), f"{d.name} does not answer; see {d.log}"
        for label, check in component.checks.items():
            assert check(), label


def test_an_unknown_component_is_an_error(infra_up: None) -> None:
    with pytest.raises(process.TestbedError):
        bring_up(infra.components(), report=lambda line: None, only={"no-such-thing"})

