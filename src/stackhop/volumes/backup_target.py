"""Where a volume backup goes (``--backup-to``): a directory, or a command's stdin.

``--backup-to DIR``
    one file per volume, ``DIR/<source volume ID>.tar``, written as
    ``.<name>.part`` (mode 0600 from its first byte) and renamed into place on
    commit, so a file with the final name is always complete.
``--backup-to cmd:COMMAND``
    the backup stream of each volume is piped to ``COMMAND`` (run by
    ``/bin/sh -c``, once per volume, with ``STACKHOP_BACKUP_NAME`` and
    ``STACKHOP_VOLUME_ID`` in its environment): a tape writer
    (``dd of=/dev/nst0 bs=1M``), an object-store upload, a backup tool reading
    its stdin. The backup counts as written when the command exits 0; its exit
    status, the bytes sent and their sha256 are journaled. A stream cut short
    (the copy failed) ends without its manifest, which every reader refuses.

Either way, what was sent is hashed on the way (:class:`SinkResult`), so an
operator can check a tape against the journal without stackhop.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from stackhop.errors import ConfigError, IntegrityError, UsageError

COMMAND_PREFIX = "cmd:"
EXTENSION = "tar"
#: How much of a failing command's stderr is kept for its error message.
_STDERR_TAIL = 4096


@dataclass(frozen=True)
class SinkResult:
    """What one backup stream delivered."""

    location: str
    bytes: int
    sha256: str
    exit_status: int | None = None  # a command's; None for a file

    def as_facts(self) -> dict[str, object]:
        """The journal's record of it."""
        return {
            "location": self.location,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "exit_status": self.exit_status,
        }


class BackupSink(Protocol):
    """A byte stream that is either committed whole or aborted."""

    location: str

    def write(self, data: bytes) -> int: ...

    def commit(self) -> SinkResult: ...

    def abort(self) -> None: ...


class _Hashing:
    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.count = 0

    def take(self, data: bytes) -> None:
        self._hash.update(data)
        self.count += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


class FileSink:
    """``DIR/<name>``, written as a 0600 ``.part`` file and renamed on commit."""

    def __init__(self, directory: Path, name: str) -> None:
        self.path = directory / name
        self.location = str(self.path)
        self.part = directory / f".{name}.part"
        self._hashing = _Hashing()
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.part.unlink(missing_ok=True)  # a crashed run's leftover: never complete
            fd = os.open(self.part, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except OSError as exc:
            raise ConfigError(
                f"cannot write the backup {self.path}: {exc.strerror}; check --backup-to"
            ) from exc
        self._file: BinaryIO | None = os.fdopen(fd, "wb")

    def write(self, data: bytes) -> int:
        assert self._file is not None
        self._hashing.take(data)
        return self._file.write(data)

    def commit(self) -> SinkResult:
        assert self._file is not None
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        os.replace(self.part, self.path)
        dir_fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the rename itself must survive a crash
        finally:
            os.close(dir_fd)
        return SinkResult(self.location, self._hashing.count, self._hashing.hexdigest())

    def abort(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.part.unlink(missing_ok=True)

    def discard(self) -> None:
        """Remove a committed file (its content turned out wrong)."""
        self.path.unlink(missing_ok=True)


class CommandSink:
    """The stdin of ``/bin/sh -c COMMAND``; committed when the command exits 0."""

    def __init__(self, command: str, name: str, volume_id: str) -> None:
        self.command = command
        self.location = f"{COMMAND_PREFIX}{command}"
        self._hashing = _Hashing()
        env = {**os.environ, "STACKHOP_BACKUP_NAME": name, "STACKHOP_VOLUME_ID": volume_id}
        try:
            self._proc: subprocess.Popen[bytes] | None = subprocess.Popen(
                ["/bin/sh", "-c", command],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a terminal's ^C reaches stackhop, which aborts it
            )
        except OSError as exc:
            raise ConfigError(f"cannot start the backup command {command!r}: {exc}") from exc
        self._stderr = b""
        self._broken: IntegrityError | None = None
        self._reader = threading.Thread(target=self._drain, name="backup-cmd-stderr", daemon=True)
        self._reader.start()

    def _drain(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr = (self._stderr + line)[-_STDERR_TAIL:]

    def _failure(self, what: str) -> IntegrityError:
        tail = self._stderr.decode(errors="replace").strip().splitlines()
        said = f": {tail[-1]}" if tail else ""
        return IntegrityError(
            f"the backup command {self.command!r} {what}{said}; the backup is incomplete, "
            "fix the command and re-run"
        )

    def write(self, data: bytes) -> int:
        if self._broken is not None:
            raise self._broken
        assert self._proc is not None and self._proc.stdin is not None
        self._hashing.take(data)
        try:
            self._proc.stdin.write(data)
        except (BrokenPipeError, ValueError) as exc:  # ValueError: its pipe is closed
            self._proc.wait()
            self._broken = self._failure(
                f"stopped reading (exit status {self._proc.returncode})"
            )
            raise self._broken from exc
        return len(data)

    def commit(self) -> SinkResult:
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.close()
        except BrokenPipeError:
            pass
        status = self._proc.wait()
        self._reader.join()
        self._proc = None
        if status != 0:
            raise self._failure(f"exited with status {status}")
        return SinkResult(self.location, self._hashing.count, self._hashing.hexdigest(), status)

    def abort(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The stream ends without its manifest: every reader refuses it as incomplete.
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except BrokenPipeError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child
            proc.wait()

    def discard(self) -> None:
        """Nothing to remove: what a command stored is the operator's to drop."""


def backup_name(volume_id: str, pass_number: int | None = None) -> str:
    """A volume's backup: ``<source volume ID>.tar``; an incremental one ``<ID>.pass<N>.tar``."""
    if pass_number is None:
        return f"{volume_id}.{EXTENSION}"
    return f"{volume_id}.pass{pass_number}.{EXTENSION}"


def check_target(target: str) -> str:
    """Refuse a ``--backup-to`` value that cannot work, before anything is copied."""
    if target.startswith(COMMAND_PREFIX):
        if not target[len(COMMAND_PREFIX) :].strip():
            raise UsageError("--backup-to cmd: needs a command, e.g. 'cmd:dd of=/dev/nst0 bs=1M'")
        return target
    path = Path(target)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--backup-to {target}: not a directory; name a directory or cmd:COMMAND")
    return target


def open_sink(target: str, name: str, volume_id: str) -> FileSink | CommandSink:
    """A fresh sink for the backup ``name`` of source volume ``volume_id``."""
    if target.startswith(COMMAND_PREFIX):
        return CommandSink(target[len(COMMAND_PREFIX) :].strip(), name, volume_id)
    return FileSink(Path(target), name)
