"""Reading a volume back from its backend to compute its content digest (verification).

Where the storage map knows a volume's backend, stackhop verifies a copy by
reading the destination volume's bytes where they live and computing
:func:`~stackhop.volumes.model.content_digest`:

- ``file``: a short Python 3 program on the backend's ssh host (or locally
  without one) hashes the file in 4 MiB pieces, skipping holes with
  ``SEEK_DATA`` (a hole hashes as zeros without being read) and prints one
  digest a line; only those lines cross the wire;
- ``rbd``: ``rbd export`` of the image to stdout (on the ssh host when the
  map names one), hashed here as it streams.
"""

from __future__ import annotations

import shlex
import subprocess
from typing import Any

from stackhop.errors import CloudUnreachableError, IntegrityError
from stackhop.transfer.ssh import SshHost, describe_failure
from stackhop.volumes.backup import ContentHasher
from stackhop.volumes.model import VERIFY_CHUNK, content_digest
from stackhop.volumes.storage import Backend, StorageMap

#: Hashes a file in VERIFY_CHUNK pieces, skipping holes; argv: path, piece size, size.
_FILE_DIGESTS = r"""
import hashlib, os, sys
path, piece, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
zeros = bytes(piece)
fd = os.open(path, os.O_RDONLY)
out = []
for off in range(0, size, piece):
    n = min(piece, size - off)
    try:
        data_at = os.lseek(fd, off, os.SEEK_DATA)
    except OSError:
        data_at = size
    if data_at >= off + n:
        out.append(hashlib.sha256(zeros[:n]).hexdigest())
        continue
    data = os.pread(fd, n, off)
    data += bytes(n - len(data))
    out.append(hashlib.sha256(data).hexdigest())
sys.stdout.write("\n".join(out) + "\n")
"""


def _run(host: SshHost | None, command: list[str]) -> bytes:
    if host is not None:
        return host.run(command, timeout=3600)
    done = subprocess.run(command, capture_output=True, check=False, timeout=3600)
    if done.returncode != 0:
        raise CloudUnreachableError(
            describe_failure("localhost", command, done.returncode, done.stderr)
        )
    return done.stdout


def rbd_command(backend: Backend, *args: str) -> list[str]:
    """The ``rbd`` command line for ``backend`` (its conf, keyring and client id)."""
    argv = ["rbd"]
    if backend.ceph_conf:
        argv += ["-c", backend.ceph_conf]
    if backend.keyring:
        argv += ["--keyring", backend.keyring]
    if backend.user:
        argv += ["--id", backend.user]
    return argv + list(args)


def _file_digest(backend: Backend, volume_id: str, size: int) -> str:
    host = SshHost.named(backend.ssh_host) if backend.ssh_host else None
    command = [
        "python3",
        "-c",
        _FILE_DIGESTS,
        backend.volume_path(volume_id),
        str(VERIFY_CHUNK),
        str(size),
    ]
    lines = _run(host, command).decode().split()
    return content_digest(lines)


def _rbd_digest(backend: Backend, volume_id: str, size: int) -> str:
    spec = f"{backend.pool}/{backend.rbd_image(volume_id)}"
    command = rbd_command(backend, "export", "--no-progress", spec, "-")
    if backend.ssh_host:
        command = SshHost.named(backend.ssh_host).argv(command, shared=False)
    hasher = ContentHasher()
    offset = 0
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stderr is not None
        while data := proc.stdout.read(VERIFY_CHUNK):
            hasher.write(offset, data)
            offset += len(data)
        stderr = proc.stderr.read()
        code = proc.wait()
    if code != 0:
        raise CloudUnreachableError(
            describe_failure(backend.ssh_host or "localhost", command[-6:], code, stderr)
        )
    if offset < size:
        raise IntegrityError(
            f"rbd image {shlex.quote(spec)} holds {offset} bytes, the volume {size}; "
            "the copy is short, re-run"
        )
    return hasher.finish(offset)


def backend_knows(storage: StorageMap, cloud: str, volume_host: str | None) -> Backend | None:
    """The storage map's backend of a volume, or None when the map does not know it."""
    if not volume_host or "@" not in volume_host:
        return None
    name = volume_host.split("@", 1)[1].split("#", 1)[0]
    return storage.backends.get((cloud, name))


def volume_digest(backend: Backend, volume_id: str, size: int) -> str:
    """The content digest of volume ``volume_id`` (``size`` bytes) read from ``backend``."""
    if backend.driver == "file":
        return _file_digest(backend, volume_id, size)
    return _rbd_digest(backend, volume_id, size)


def describe(backend: Backend) -> str:
    """How the backend was read, for the result's details."""
    where = f" on {backend.ssh_host}" if backend.ssh_host else ""
    return f"read back from {backend.cloud}/{backend.name} ({backend.driver}{where})"


def conn_volume_host(conn: Any, volume_id: str) -> str | None:
    """``os-vol-host-attr:host`` of a volume (admin only), or None."""
    host = conn.block_storage.get_volume(volume_id).host
    return str(host) if host else None
