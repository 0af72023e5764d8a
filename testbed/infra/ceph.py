"""One small Ceph cluster per cloud, started by hand like Ceph's vstart.

Each cluster has one monitor, one manager and one bluestore OSD over a sparse
file, pools ``volumes`` and ``images`` with a single replica, cephx on, and
everything bound to 127.0.0.1 within the cloud's own port range. The first
``up`` bootstraps it (about 15 s); later runs find the daemons answering on
their admin sockets and return at once; a killed daemon is started again from
its existing data.

A cluster counts as built only once its ``bootstrapped`` marker exists: a
bootstrap that was interrupted is wiped and done again, never half-reused.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import struct
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra import ceph_config as cfg
from testbed.infra.files import write_file
from testbed.infra.locked import LockedComponent
from testbed.process import Daemon, TestbedError, run, wait_until

DEBIAN_PYTHON_EXTENSIONS = Path("/usr/lib/python3/dist-packages")
PYTHON_DIR = layout.SHARED_DIR / "ceph-python"
PG_NUM = 32


# -- public API ------------------------------------------------------------------


def cinder_user(c: layout.CloudLayout) -> str:
    """The cephx user Cinder uses on this cloud's cluster, without ``client.``."""
    return f"cinder-{c.name}"


def etc_ceph_dir(c: layout.CloudLayout) -> Path:
    """The directory to bind-mount over /etc/ceph for cinder-volume (os-brick reads it)."""
    return cfg.etc_dir(c)


def cinder_conf(c: layout.CloudLayout) -> Path:
    """The client ceph.conf for Cinder; its keyring is ``etc_ceph_dir(c)/ceph.$name.keyring``."""
    return etc_ceph_dir(c) / "ceph.conf"


def keyring(c: layout.CloudLayout, user: str) -> Path:
    """The keyring file of ``user`` (without ``client.``) in :func:`etc_ceph_dir`."""
    return etc_ceph_dir(c) / f"ceph.client.{user}.keyring"


def python_path() -> Path:
    """A directory that makes Debian's ``rados`` and ``rbd`` importable from the venv.

    There are no usable ``rados``/``rbd`` packages on PyPI; Debian's extensions
    are built for the same Python minor version, so symlinks to them suffice.
    Put the directory on ``PYTHONPATH``.
    """
    PYTHON_DIR.mkdir(parents=True, exist_ok=True)
    for module in ("rados", "rbd"):
        found = sorted(DEBIAN_PYTHON_EXTENSIONS.glob(f"{module}.cpython-*.so"))
        if not found:
            raise TestbedError(
                f"{module} Python extension missing; apt-get install python3-{module}"
            )
        for so in found:
            link = PYTHON_DIR / so.name
            if not link.is_symlink() or link.resolve() != so:
                # Unique: several threads and processes may link at once.
                tmp = PYTHON_DIR / f".{so.name}.{os.getpid()}.{threading.get_ident()}.tmp"
                tmp.unlink(missing_ok=True)
                tmp.symlink_to(so)
                tmp.replace(link)
    return PYTHON_DIR


def ceph(c: layout.CloudLayout, *args: str, timeout: float = 120) -> str:
    """Run the ``ceph`` CLI as client.admin on this cloud's cluster; return stdout."""
    return run(
        ["ceph", "--conf", str(c.ceph_conf), "--connect-timeout", "30", *args],
        log=_setup_log(c), timeout=timeout,
    ).stdout


def admin_socket(path: Path, prefix: str, timeout: float = 2.0) -> dict[str, object] | None:
    """Ask a Ceph daemon over its admin socket; ``None`` when it does not answer.

    The protocol: a JSON command ended by a NUL byte; the answer is a
    big-endian 32-bit length and that many bytes of JSON.
    """
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(json.dumps({"prefix": prefix}).encode() + b"\0")
            data = b""
            while len(data) < 4:
                chunk = s.recv(4 - len(data))
                if not chunk:
                    return None
                data += chunk
            (length,) = struct.unpack(">I", data)
            body = b""
            while len(body) < length:
                chunk = s.recv(length - len(body))
                if not chunk:
                    return None
                body += chunk
        answer = json.loads(body or b"{}")
    except (OSError, ValueError):
        return None
    return answer if isinstance(answer, dict) else {"answer": answer}


# -- daemons -----------------------------------------------------------------------


def _setup_log(c: layout.CloudLayout) -> Path:
    return layout.LOG_DIR / f"ceph-{c.name}-setup.log"


def _daemon_state(c: layout.CloudLayout, name: str, prefix: str, field: str) -> str:
    answer = admin_socket(cfg.asok(c, name), prefix)
    return str(answer.get(field, "")) if answer else ""


def _mon_answers(c: layout.CloudLayout) -> bool:
    return _daemon_state(c, f"mon.{cfg.MON_ID}", "mon_status", "state") == "leader"


def _mgr_answers(c: layout.CloudLayout) -> bool:
    return admin_socket(cfg.asok(c, f"mgr.{cfg.MGR_ID}"), "version") is not None


def _osd_answers(c: layout.CloudLayout) -> bool:
    return _daemon_state(c, f"osd.{cfg.OSD_ID}", "status", "state") == "active"


def _daemon(c: layout.CloudLayout, kind: str, ident: str | int,
            check: Callable[[layout.CloudLayout], bool]) -> Daemon:
    return Daemon(
        name=f"ceph-{c.name}-{kind}",
        argv=[f"/usr/bin/ceph-{kind}", "-f", "--conf", str(c.ceph_conf), "-i", str(ident)],
        check=lambda: check(c),
        ready_timeout=120,
        stop_timeout=30,
    )


def mon_daemon(c: layout.CloudLayout) -> Daemon:
    return _daemon(c, "mon", cfg.MON_ID, _mon_answers)


def mgr_daemon(c: layout.CloudLayout) -> Daemon:
    return _daemon(c, "mgr", cfg.MGR_ID, _mgr_answers)


def osd_daemon(c: layout.CloudLayout) -> Daemon:
    return _daemon(c, "osd", cfg.OSD_ID, _osd_answers)


# -- bootstrap ---------------------------------------------------------------------


def _marker(c: layout.CloudLayout) -> Path:
    return c.ceph_dir / "bootstrapped"


def _fsid(c: layout.CloudLayout) -> str:
    return (c.ceph_dir / "fsid").read_text().strip()


def _authtool(c: layout.CloudLayout, *args: str) -> str:
    return run(["ceph-authtool", *args], log=_setup_log(c)).stdout


def _wipe(c: layout.CloudLayout) -> None:
    """Remove a half-built cluster (never a bootstrapped one: see the marker)."""
    for name in (f"mon.{cfg.MON_ID}", f"mgr.{cfg.MGR_ID}", f"osd.{cfg.OSD_ID}", "run", "etc-ceph"):
        shutil.rmtree(c.ceph_dir / name, ignore_errors=True)
    for f in ("fsid", "ceph.client.admin.keyring"):
        (c.ceph_dir / f).unlink(missing_ok=True)


def _make_monitor(c: layout.CloudLayout) -> None:
    """Keys and the monitor's store, made offline; the manager's key goes in with them."""
    run_dir = cfg.run_dir(c)
    write_file(c.ceph_dir / "fsid", str(uuid.uuid4()) + "\n")
    write_file(c.ceph_conf, cfg.cluster_conf(c, _fsid(c)))
    admin = str(c.ceph_keyring)
    _authtool(c, "--create-keyring", admin, "--gen-key", "-n", "client.admin",
              "--cap", "mon", "allow *", "--cap", "osd", "allow *",
              "--cap", "mgr", "allow *", "--cap", "mds", "allow *")
    c.ceph_keyring.chmod(0o600)
    mgr_dir = cfg.daemon_dir(c, f"mgr.{cfg.MGR_ID}")
    mgr_dir.mkdir(parents=True)
    _authtool(c, "--create-keyring", str(mgr_dir / "keyring"), "--gen-key",
              "-n", f"mgr.{cfg.MGR_ID}", "--cap", "mon", "allow profile mgr",
              "--cap", "osd", "allow *", "--cap", "mds", "allow *")
    bootstrap = str(run_dir / "mon-bootstrap.keyring")
    _authtool(c, "--create-keyring", bootstrap, "--gen-key", "-n", "mon.",
              "--cap", "mon", "allow *")
    _authtool(c, bootstrap, "--import-keyring", admin)
    _authtool(c, bootstrap, "--import-keyring", str(mgr_dir / "keyring"))
    monmap = str(run_dir / "monmap")
    run(["monmaptool", "--create", "--clobber", "--fsid", _fsid(c),
         "--addv", cfg.MON_ID, cfg.mon_addrs(c), monmap], log=_setup_log(c))
    run(["ceph-mon", "--conf", str(c.ceph_conf), "--mkfs", "-i", cfg.MON_ID,
         "--monmap", monmap, "--keyring", bootstrap], log=_setup_log(c))
    Path(bootstrap).unlink()


def _make_osd(c: layout.CloudLayout) -> None:
    """Register the OSD with the (running) monitor and make its bluestore."""
    osd_dir = cfg.daemon_dir(c, f"osd.{cfg.OSD_ID}")
    osd_dir.mkdir(parents=True)
    osd_uuid = str(uuid.uuid4())
    secret = _authtool(c, "--gen-print-key").strip()
    new = run(["ceph", "--conf", str(c.ceph_conf), "osd", "new", osd_uuid, "-i", "-"],
              input=json.dumps({"cephx_secret": secret}), log=_setup_log(c)).stdout.strip()
    if new != str(cfg.OSD_ID):
        raise TestbedError(f"ceph-{c.name}: expected osd.{cfg.OSD_ID}, the monitor made osd.{new}")
    _authtool(c, "--create-keyring", str(osd_dir / "keyring"), "--name", f"osd.{cfg.OSD_ID}",
              "--add-key", secret)
    run(["ceph-osd", "--conf", str(c.ceph_conf), "-i", str(cfg.OSD_ID), "--mkfs",
         "--osd-uuid", osd_uuid], log=_setup_log(c))
    ceph(c, "osd", "crush", "add", f"osd.{cfg.OSD_ID}", "1.0", "host=localhost", "root=default")


def _setup(c: layout.CloudLayout) -> None:
    for d in (c.ceph_dir, layout.LOG_DIR):
        d.mkdir(parents=True, exist_ok=True)
    python_path()
    if _marker(c).exists():
        write_file(c.ceph_conf, cfg.cluster_conf(c, _fsid(c)))
        write_file(cinder_conf(c), cfg.client_conf(c, _fsid(c)))
        return
    # An interrupted bootstrap may have left daemons running on what is wiped next.
    for daemon in (osd_daemon(c), mgr_daemon(c), mon_daemon(c)):
        daemon.stop()
    _wipe(c)
    for d in (cfg.run_dir(c), cfg.log_dir(c), c.ceph_dir / "crash"):
        d.mkdir(parents=True, exist_ok=True)
    _make_monitor(c)
    mon_daemon(c).ensure()
    _make_osd(c)


def _client_files_present(c: layout.CloudLayout) -> bool:
    return all(p.exists() for p in (
        cinder_conf(c), keyring(c, cinder_user(c)), keyring(c, "admin"),
    ))


def _wait_osd_up(c: layout.CloudLayout) -> None:
    def up() -> bool:
        stat = json.loads(ceph(c, "osd", "stat", "--format", "json"))
        return int(stat.get("num_up_osds", 0)) >= 1

    wait_until(up, 120, f"ceph-{c.name} osd.{cfg.OSD_ID} up", cfg.log_dir(c) / "osd.0.log")


def _after_start(c: layout.CloudLayout) -> None:
    if _marker(c).exists() and _client_files_present(c):
        return
    _wait_osd_up(c)
    existing = set(ceph(c, "osd", "pool", "ls").split())
    for pool in cfg.POOLS:
        if pool not in existing:
            ceph(c, "osd", "pool", "create", pool, str(PG_NUM), str(PG_NUM), "replicated")
            ceph(c, "osd", "pool", "set", pool, "size", "1", "--yes-i-really-mean-it")
        # Tags the pool with the rbd application and creates its rbd metadata.
        run(["rbd", "--conf", str(c.ceph_conf), "pool", "init", pool], log=_setup_log(c))
    profiles = ", ".join(f"profile rbd pool={p}" for p in cfg.POOLS)
    key = ceph(c, "auth", "get-or-create", f"client.{cinder_user(c)}",
               "mon", "profile rbd", "osd", profiles, "mgr", profiles)
    etc = etc_ceph_dir(c)
    etc.mkdir(parents=True, exist_ok=True)
    write_file(keyring(c, cinder_user(c)), key, mode=0o600)
    write_file(keyring(c, "admin"), c.ceph_keyring.read_text(), mode=0o600)
    write_file(cinder_conf(c), cfg.client_conf(c, _fsid(c)))
    write_file(_marker(c), time.strftime("%Y-%m-%dT%H:%M:%S\n"))


def _healthy(c: layout.CloudLayout) -> bool:
    try:
        return ceph(c, "health", timeout=30).startswith("HEALTH_OK")
    except TestbedError:
        return False


def component(c: layout.CloudLayout) -> Component:
    """The Ceph cluster of cloud ``c`` (``ceph-src`` / ``ceph-dst``)."""
    return LockedComponent(
        name=f"ceph-{c.name}",
        daemons=[mon_daemon(c), mgr_daemon(c), osd_daemon(c)],
        setup=lambda: _setup(c),
        after_start=lambda: _after_start(c),
        checks={f"ceph-{c.name} HEALTH_OK": lambda: _healthy(c)},
    )
