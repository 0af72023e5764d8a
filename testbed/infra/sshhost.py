"""The testbed's ssh hosts: an sshd per storage host and per compute host, on loopback.

Volume streaming runs commands on a cloud's *storage host* over ssh
(``src-storage``, ``dst-storage``); copying an image-booted server's root
disk reads it on its *compute host*, named exactly like Nova's compute host
(``src-compute``, ``src-legacy-compute``, ``dst-compute``; see
:class:`testbed.layout.ComputeHost`). On the testbed every host is this
machine, each an ``sshd`` with its own port, host key and configuration, so a
client that connects to the wrong one (a storage host for a compute host, or
the other cloud's), or accepts an unknown host key, is caught. Under
``layout.SSH_DIR`` the client side is generated: a key (``id_ed25519``), a
``known_hosts`` with every host key, and an ``ssh_config`` naming every host
(``ssh -F ssh_config src-compute``). Sessions get their host's variables:
``CEPH_CONF`` and ``STACKHOP_FILE_BACKEND_DIR`` of its cloud on a storage
host, ``NOVA_INSTANCES_PATH`` of its nova-compute on a compute host.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
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


@dataclass(frozen=True)
class Host:
    """One ssh host of the testbed: an sshd on ``layout.HOST:port`` with a key of its own."""

    #: The host's name in ``ssh_config`` and ``known_hosts``.
    name: str
    port: int
    #: Its key, sshd_config, authorized keys and pid file.
    dir: Path
    #: The testbed component running its sshd.
    component: str
    #: What it stands for, as the first line of its sshd_config says.
    role: str
    #: ``SetEnv`` of its sessions.
    env: dict[str, str] = field(default_factory=dict)

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.dir / "sshd_config"

    @property
    def authorized_keys(self) -> Path:
        return self.dir / "authorized_keys"


def storage_host(c: layout.CloudLayout) -> Host:
    """The storage host of cloud ``c`` (``src-storage``; component ``ssh-src``)."""
    return Host(
        name=c.ssh_host,
        port=c.ssh_port,
        dir=c.dir / "sshd",
        component=f"ssh-{c.name}",
        role=f"storage host {c.ssh_host} of the {c.name} cloud",
        env={"CEPH_CONF": str(c.ceph_conf), "STACKHOP_FILE_BACKEND_DIR": str(c.file_backend_dir)},
    )


def compute_host(h: layout.ComputeHost) -> Host:
    """The compute host of one nova-compute (``src-compute``; component ``ssh-src-compute``)."""
    return Host(
        name=h.name,
        port=h.ssh_port,
        dir=layout.cloud(h.cloud).dir / f"sshd-{h.name}",
        component=f"ssh-{h.name}",
        role=f"compute host {h.name} of the {h.cloud} cloud",
        env={"NOVA_INSTANCES_PATH": str(h.instances_path)},
    )


def hosts() -> list[Host]:
    """Every ssh host of the testbed: the storage hosts, then the compute hosts."""
    return [
        *(storage_host(c) for c in layout.CLOUDS),
        *(compute_host(h) for h in layout.COMPUTE_HOSTS),
    ]


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


def public_key(key: Path) -> str:
    """The public half of a key made here (``<key>.pub``), one line."""
    return _pub(key).read_text().strip()


def _sshd_config_text(h: Host) -> str:
    lines = [
        f"# {h.role} (stackhop testbed)",
        f"ListenAddress {layout.HOST}:{h.port}",
        f"HostKey {h.host_key}",
        f"PidFile {h.dir / 'sshd.pid'}",
        f"AuthorizedKeysFile {h.authorized_keys}",
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
    ]
    if h.env:
        lines.append("SetEnv " + " ".join(f"{k}={v}" for k, v in h.env.items()))
    return "\n".join([*lines, "Subsystem sftp /usr/lib/openssh/sftp-server", ""])


def _client_files() -> None:
    """Client key, every host key, known_hosts and ssh_config (shared by all hosts)."""
    layout.SSH_DIR.mkdir(parents=True, exist_ok=True)
    _keygen(CLIENT_KEY, "stackhop-testbed-client")
    known, config = [], []
    for h in hosts():
        _keygen(h.host_key, f"{h.name}-host")
        known.append(f"{h.name},[{layout.HOST}]:{h.port} {public_key(h.host_key)}")
        config += [
            f"Host {h.name}",
            f"    HostName {layout.HOST}",
            f"    Port {h.port}",
            "    User root",
            f"    IdentityFile {CLIENT_KEY}",
            "    IdentitiesOnly yes",
            f"    UserKnownHostsFile {KNOWN_HOSTS}",
            "    GlobalKnownHostsFile /dev/null",
            "    StrictHostKeyChecking yes",
            "    BatchMode yes",
            "",
        ]
    write_file(KNOWN_HOSTS, "\n".join(known) + "\n")
    write_file(SSH_CONFIG, "\n".join(config))


def _setup(h: Host) -> None:
    # Every host's component writes the shared client files: one at a time.
    with component_lock("ssh-client"):
        _client_files()
    write_file(h.authorized_keys, public_key(CLIENT_KEY) + "\n", mode=0o600)
    write_file(h.sshd_config, _sshd_config_text(h))
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    run(["/usr/sbin/sshd", "-t", "-f", str(h.sshd_config)])


def _banner(port: int, timeout: float = 2.0) -> bool:
    """True when an SSH server answers on ``port`` with its version banner."""
    try:
        with socket.create_connection((layout.HOST, port), timeout=timeout) as s:
            return s.recv(64).startswith(b"SSH-2.0-")
    except OSError:
        return False


def daemon(h: Host) -> Daemon:
    return Daemon(
        name=h.component,
        # -D: stay in the foreground; -e: log to stderr, i.e. the daemon's log.
        argv=["/usr/sbin/sshd", "-D", "-e", "-f", str(h.sshd_config)],
        check=lambda: _banner(h.port),
        ready_timeout=30,
        stop_timeout=10,
    )


def component(h: Host) -> Component:
    """The sshd of host ``h`` (``ssh-src``, ``ssh-src-compute``, ...)."""
    return LockedComponent(name=h.component, daemons=[daemon(h)], setup=lambda: _setup(h))


def components() -> list[Component]:
    """One component per ssh host."""
    return [component(h) for h in hosts()]
