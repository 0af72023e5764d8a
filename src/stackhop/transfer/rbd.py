"""RBD pools reached with the ``rbd`` tools (locally or over ssh), and :func:`open_cluster`.

:func:`open_cluster` picks how a backend's pool is reached: librbd in this
process (:class:`~stackhop.transfer.rbd_lib.LibRbdCluster`) when Debian's
``rados``/``rbd`` bindings import and the cluster is local, else the ``rbd``
command line of the cluster's own release (:class:`RbdCluster`), next to the
cluster: locally, or on the host a storage map's ``ssh_host`` names (the
bindings cannot cross an ssh hop). Both implement
:class:`~stackhop.transfer.rbd_access.RbdAccess`.

On the command line, bytes move as the ``rbd export-diff`` stream
(:mod:`stackhop.transfer.rbd_diff`): the bytes of ``export-diff`` on the
source are parsed into records by stackhop and re-serialised into
``import-diff`` on the destination (or written with librbd, when the
destination is local).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

from stackhop.errors import ConfigError
from stackhop.transfer import rbd_lib
from stackhop.transfer.rbd_access import RbdAccess, RbdError, once_unwatched
from stackhop.transfer.rbd_diff import (
    ChunkDigests,
    ChunkHasher,
    DiffFormatError,
    DiffHeader,
    DiffWriter,
    Record,
    read_diff,
)
from stackhop.transfer.ssh import SshHost, describe_failure, run_until_logged_in


def open_cluster(
    *,
    cloud: str,
    pool: str,
    ceph_conf: str | None = None,
    keyring: str | None = None,
    user: str | None = None,
    ssh: SshHost | None = None,
) -> RbdAccess:
    """The pool ``pool`` of a cluster: librbd in-process when possible, else the ``rbd`` CLI."""
    if ssh is None and rbd_lib.available():
        return rbd_lib.LibRbdCluster(cloud, pool, ceph_conf, keyring, user)
    return RbdCluster(cloud, pool, ceph_conf, keyring, user, ssh)


_BUSY = ("(16) Device or resource busy", "image is still open", "still has watchers")
"""What ``rbd rm`` says, in one release or another, about an image that has watchers."""


@dataclass(frozen=True)
class RbdCluster:
    """One Ceph cluster's pool, reached with the ``rbd`` CLI locally or on an ssh host."""

    #: Cloud name, for messages.
    cloud: str
    pool: str
    ceph_conf: str | None = None
    keyring: str | None = None
    user: str | None = None
    ssh: SshHost | None = None

    @property
    def where(self) -> str:
        via = f", via ssh {self.ssh.name}" if self.ssh else ""
        return f"cloud {self.cloud!r} (pool {self.pool}{via})"

    def command(self, args: Sequence[str], *, shared: bool = True) -> list[str]:
        """The argv running ``rbd ARGS`` against this cluster, wrapped in ssh when remote
        (``shared=False`` for a bulk stream: a connection of its own)."""
        rbd = ["rbd"]
        if self.ceph_conf:
            rbd += ["-c", self.ceph_conf]
        if self.keyring:
            rbd += ["--keyring", self.keyring]
        if self.user:
            rbd += ["--id", self.user]
        rbd += list(args)
        return self.ssh.argv(rbd, shared=shared) if self.ssh else rbd

    def spec(self, image: str, snap: str | None = None) -> str:
        return f"{self.pool}/{image}" + (f"@{snap}" if snap else "")

    def run(self, args: Sequence[str], *, missing_ok: bool = False, timeout: float = 600) -> str:
        """Run ``rbd ARGS``; its stdout. ``missing_ok``: a missing image or snapshot returns ''."""
        try:
            done = run_until_logged_in(self.command(args), input=None, timeout=timeout)
        except FileNotFoundError as exc:
            raise ConfigError(
                f"the rbd tool is not installed here; install ceph-common or set ssh_host for "
                f"{self.where} in the storage map"
            ) from exc
        except subprocess.TimeoutExpired as exc:
            raise RbdError(
                f"rbd {shlex.join(args)} on {self.where} did not finish in {timeout:.0f} s; "
                "check the cluster's health and re-run"
            ) from exc
        if done.returncode != 0:
            stderr = done.stderr.decode(errors="replace")
            if missing_ok and "(2) No such file or directory" in stderr:
                return ""
            raise RbdError(self.failure(args, done.returncode, done.stderr))
        return done.stdout.decode()

    def failure(self, args: Sequence[str], returncode: int, stderr: bytes) -> str:
        """One line saying why ``rbd ARGS`` failed."""
        if self.ssh and returncode == 255:
            return describe_failure(self.ssh.name, ["rbd", *args], returncode, stderr)
        lines = [ln for ln in stderr.decode(errors="replace").splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else f"exit status {returncode}"
        return f"rbd {args[0]} on {self.where} failed: {last}"

    def popen(self, args: Sequence[str], *, stdin: Any = None, stdout: Any = None) -> RbdProcess:
        """Start ``rbd ARGS`` with its stderr kept aside for the error message."""
        errors = tempfile.TemporaryFile()
        try:
            proc = subprocess.Popen(
                self.command(args, shared=False), stdin=stdin, stdout=stdout, stderr=errors
            )
        except FileNotFoundError as exc:
            errors.close()
            raise ConfigError(
                f"the rbd tool is not installed here; install ceph-common or set ssh_host for "
                f"{self.where} in the storage map"
            ) from exc
        return RbdProcess(self, list(args), proc, errors)

    # -- images and snapshots --------------------------------------------------

    def size(self, image: str) -> int | None:
        """The size of ``image`` (``rbd info``), or None when it does not exist."""
        out = self.run(["info", "--format", "json", self.spec(image)], missing_ok=True)
        return int(json.loads(out)["size"]) if out else None

    def snapshots(self, image: str) -> list[str]:
        """Names of ``image``'s snapshots ([] when the image does not exist)."""
        out = self.run(["snap", "ls", "--format", "json", self.spec(image)], missing_ok=True)
        return [str(s["name"]) for s in json.loads(out)] if out else []

    def create_snapshot(self, image: str, snap: str) -> None:
        self.run(["snap", "create", "--no-progress", self.spec(image, snap)])

    def remove_snapshot(self, image: str, snap: str) -> None:
        """Remove ``image@snap``; a missing image or snapshot is fine."""
        self.run(["snap", "rm", "--no-progress", self.spec(image, snap)], missing_ok=True)

    def create_image(self, image: str, size: int) -> None:
        self.run(["create", "--size", f"{size}B", self.spec(image)])

    def remove_image(self, image: str) -> None:
        """Remove ``image`` and its snapshots; a missing image is fine."""
        self.run(["snap", "purge", "--no-progress", self.spec(image)], missing_ok=True)
        once_unwatched(
            lambda: self.run(["rm", "--no-progress", self.spec(image)], missing_ok=True),
            lambda exc: any(sign in str(exc) for sign in _BUSY),
        )

    def export_diff(
        self, image: str, snap: str, from_snap: str | None = None, whole_object: bool = False
    ) -> CliDiffReader:
        """``rbd export-diff`` of ``image@snap`` (since ``from_snap``), parsed from its pipe."""
        args = ["export-diff", "--no-progress", "--snap", snap]
        if from_snap:
            args += ["--from-snap", from_snap]
        if whole_object:
            args.append("--whole-object")
        return CliDiffReader(self.popen([*args, self.spec(image), "-"], stdout=subprocess.PIPE))

    def import_diff(
        self, image: str, retire: str | None = None, *, fresh: bool = False,
        read_back: bool = False,
    ) -> CliDiffSink:
        """``rbd import-diff - image``, fed the re-serialised stream; ``retire`` is removed
        once it has finished. ``fresh`` changes nothing: import-diff zeroes what it is told;
        nor does ``read_back``: another program writes, nothing can be read back as it does
        (the caller re-reads the image instead)."""
        process = self.popen(
            ["import-diff", "--no-progress", "-", self.spec(image)], stdin=subprocess.PIPE
        )
        return CliDiffSink(
            process, (lambda: self.remove_snapshot(image, retire)) if retire else None
        )

    def chunk_digests(
        self, image: str, snap: str, chunk: int, from_snap: str | None = None
    ) -> ChunkDigests:
        """Hash ``image@snap`` per chunk, reading only allocated extents (or, with
        ``from_snap``, only the whole objects changed since it)."""
        reader = self.export_diff(image, snap, from_snap, whole_object=from_snap is not None)
        try:
            hasher = ChunkHasher(size=reader.header.size, chunk=chunk, complete=from_snap is None)
            for record in reader.records():
                hasher.add(record)
            hasher.finish()
        except BaseException:
            reader.cancel()
            raise
        finally:
            reader.close()
        return ChunkDigests(hasher.digests, hasher.partial)


@dataclass
class RbdProcess:
    """A running ``rbd`` command and where its stderr goes."""

    cluster: RbdCluster
    args: list[str]
    proc: subprocess.Popen[bytes]
    errors: IO[bytes]

    def _stderr(self) -> bytes:
        self.errors.seek(0)
        return self.errors.read()

    def wait(self, timeout: float = 600) -> None:
        """Wait for the command; RbdError with its last stderr line if it failed."""
        try:
            returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            self.kill()
            raise RbdError(
                f"rbd {self.args[0]} on {self.cluster.where} did not finish; re-run"
            ) from exc
        try:
            if returncode != 0:
                raise RbdError(self.cluster.failure(self.args, returncode, self._stderr()))
        finally:
            self.errors.close()

    def kill(self) -> None:
        """Stop the command (our own child, by its handle) after a failure elsewhere."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        self.errors.close()

    def failed_message(self) -> str | None:
        """Why the command failed, if it already ended with an error."""
        code = self.proc.poll()
        if code is None or code == 0:
            return None
        return self.cluster.failure(self.args, code, self._stderr())


class CliDiffReader:
    """The export-diff stream of a running ``rbd export-diff``, parsed into records."""

    def __init__(self, process: RbdProcess) -> None:
        self.process = process
        self._cancelled = False
        self._closed = False
        assert process.proc.stdout is not None
        try:
            self.header: DiffHeader
            self.header, self._records = read_diff(process.proc.stdout)
        except DiffFormatError as exc:
            self._explain(exc)
            raise

    def _explain(self, exc: DiffFormatError) -> None:
        """A stream cut short because export-diff failed: raise export-diff's own error."""
        try:
            self.process.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        message = self.process.failed_message()
        if message:
            self.process.kill()
            raise RbdError(message) from exc

    def records(self) -> Iterator[Record]:
        try:
            yield from self._records
        except DiffFormatError as exc:
            if not self._cancelled:
                self._explain(exc)
            raise
        except (OSError, ValueError):
            if self._cancelled:
                return  # the pipe was closed under us on purpose
            raise

    def cancel(self) -> None:
        self._cancelled = True
        if self.process.proc.poll() is None:
            self.process.proc.kill()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._cancelled:
            self.process.kill()
        else:
            self.process.wait()


class CliDiffSink:
    """A running ``rbd import-diff -`` fed the v1 stream."""

    #: import-diff's exit status says it succeeded, not what it wrote where.
    confirms_writes = False
    reads_back = False

    def __init__(self, process: RbdProcess, after: Callable[[], None] | None = None) -> None:
        self.process = process
        self._after = after
        assert process.proc.stdin is not None
        self._writer = DiffWriter(process.proc.stdin)
        self._done = False

    @property
    def bytes(self) -> int:
        return self._writer.bytes

    def _guarded(self, action: Any, *args: Any) -> None:
        try:
            action(*args)
        except BrokenPipeError as exc:
            # import-diff stopped reading: its own stderr says why.
            try:
                self.process.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
            message = self.process.failed_message() or "rbd import-diff stopped reading"
            self._done = True
            self.process.kill()
            raise RbdError(message) from exc

    def header(self, header: DiffHeader) -> None:
        self._guarded(self._writer.header, header)

    def record(self, record: Record) -> None:
        self._guarded(self._writer.record, record)

    def finish(self) -> None:
        assert self.process.proc.stdin is not None
        self._guarded(self._writer.end)
        self._guarded(self.process.proc.stdin.close)
        self._done = True
        self.process.wait()
        if self._after is not None:
            self._after()

    def abort(self) -> None:
        if not self._done:
            self._done = True
            self.process.kill()
