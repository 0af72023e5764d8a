"""The storage hosts ``src-storage`` and ``dst-storage``: an sshd per cloud on loopback.

Volume streaming runs commands on a cloud's storage host over ssh. On the
testbed both hosts are this machine, each an ``sshd`` with its own port, host
key and configuration, so a client that connects to the wrong one, or accepts
an unknown host key, is caught. Under ``layout.SSH_DIR`` the client side is
generated: a key (``id_ed25519``), a ``known_hosts`` with both host keys, and
an ``ssh_config`` naming both hosts (``ssh -F ssh_config src-storage``).
Sessions get ``CEPH_CONF`` and ``STACKHOP_FILE_BACKEND_DIR`` of their cloud.
"""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from testbed import layout
from testbed.component import Component
from testbed.infra.files import write_file
from testbed.infra.locked import LockedComponent, component_lock
from testbed.process import Daemon, run

CLIENT_KEY = layout.SSH_DIR / "id_ed25519"
KNOWN_HOSTS = layout.SSH_DIR / "known_hosts"
SSH_CONFIG = layout.SSH_DIR / "ssh_config"
#: sshd refuses to start without its privilege-separation directory.
PRIVSEP_DIR = Path("/run/sshd")


def component_name(c: layout.CloudLayout) -> str:
    return f"ssh-{c.name}"


def host_dir(c: layout.CloudLayout) -> Path:
    """Where the storage host's sshd keeps its key, config, authorized keys and pid file."""
    return c.dir / "sshd"


def host_key(c: layout.CloudLayout) -> Path:
    return host_dir(c) / "ssh_host_ed25519_key"


def sshd_config(c: layout.CloudLayout) -> Path:
    return host_dir(c) / "sshd_config"


def authorized_keys(c: layout.CloudLayout) -> Path:
    return host_dir(c) / "authorized_keys"


def _keygen(path: Path, comment: str) -> None:
    """Make an ed25519 key pair once; made aside and renamed so no half key is ever seen."""
    if path.exists() and _pub(path).exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    for p in (tmp, _pub(tmp)):
        p.unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(tmp)])
    os.chmod(tmp, 0o600)
    os.replace(_pub(tmp), _pub(path))
    os.replace(tmp, path)


def _pub(key: Path) -> Path:
    return key.with_name(key.name + ".pub")


def _public_key(path: Path) -> str:
    return _pub(path).read_text().strip()


def _sshd_config_text(c: layout.CloudLayout) -> str:
    d = host_dir(c)
    return "\n".join([
        f"# storage host {c.ssh_host} of the {c.name} cloud (stackhop testbed)",
        f"ListenAddress {layout.HOST}:{c.ssh_port}",
        f"HostKey {host_key(c)}",
        f"PidFile {d / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized_keys(c)}",
        "PermitRootLogin prohibit-password",
        "PubkeyAuthentication yes",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "HostbasedAuthentication no",
        "UsePAM no",
        "PrintMotd no",
        "PrintLastLog no",
        # Streaming opens several connections at once.
        "MaxStartups 100:30:200",
        "MaxSessions 64",
        "ClientAliveInterval 30",
        f"SetEnv CEPH_CONF={c.ceph_conf} STACKHOP_FILE_BACKEND_DIR={c.file_backend_dir}",
        "Subsystem sftp /usr/lib/openssh/sftp-server",
        "",
    ])


def _client_files() -> None:
    """Client key, both host keys, known_hosts and ssh_config (shared by both hosts)."""
    layout.SSH_DIR.mkdir(parents=True, exist_ok=True)
    _keygen(CLIENT_KEY, "stackhop-testbed-client")
    hosts, config = [], []
    for c in layout.CLOUDS:
        _keygen(host_key(c), f"{c.ssh_host}-host")
        hosts.append(f"{c.ssh_host},[{layout.HOST}]:{c.ssh_port} {_public_key(host_key(c))}")
        config += [
            f"Host {c.ssh_host}",
            f"    HostName {layout.HOST}",
            f"    Port {c.ssh_port}",
            "    User root",
            f"    IdentityFile {CLIENT_KEY}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {KNOWN_HOSTS}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "",
        ]
    write_file(KNOWN_HOSTS, "\n".join(hosts) + "\n")
    write_file(SSH_CONFIG, "\n".join(config))


def _setup(c: layout.CloudLayout) -> None:
    # Both hosts' components write the shared client files: one at a time.
    with component_lock("ssh-client"):
        _client_files()
    write_file(authorized_keys(c), _public_key(CLIENT_KEY) + "\n", mode=0o600)
    write_file(sshd_config(c), _sshd_config_text(c))
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    run(["/usr/sbin/sshd", "-t", "-f", str(sshd_config(c))])


def _banner(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server answers on ``port`` with its version banner."""
    try:
        with socket.create_connection((layout.HOST, port), timeout=timeout) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def daemon(c: layout.CloudLayout) -> Daemon:
    return Daemon(
        name=component_name(c),
        # -D: stay in the foreground; -e: log to stderr, i.e. the daemon's log.
        argv=["/usr/sbin/sshd", "-D", "-e", "-f", str(sshd_config(c))],
        check=lambda: _banner(c.ssh_port),
        ready_timeout=30,
        stop_timeout=10,
    )


def component(c: layout.CloudLayout) -> Component:
    """The storage host of cloud ``c`` (``ssh-src`` / ``ssh-dst``)."""
    return LockedComponent(name=component_name(c), daemons=[daemon(c)], setup=lambda: _setup(c))
