"""The local side of the stream method: agents over ssh, and the frame pump between two hosts.

:mod:`stackhop.transfer.stream_agent` runs on each storage host (sent over
ssh with every call, nothing installed there). This module starts it in a
mode (:class:`AgentHost`) and, for a copy, pumps the source agent's frames
into the destination agent (:func:`pump`):

- the data goes source host -> this process -> destination host, so the
  backup tee (``--backup-to``) gets the very bytes that are sent, from the
  same read; when there is no backup a frame's payload moves between the two
  ssh pipes with ``splice(2)``, never entering Python;
- back-pressure is the pipes themselves: the pump holds one frame header at
  a time, the agents a few chunks each, so memory is bounded by the chunk
  size whatever the volume's;
- the destination agent acknowledges chunks only after ``fdatasync``; the
  pump hands each acknowledgement to ``on_confirmed`` (the journal), which is
  what a re-run resumes from;
- ssh uses AES-GCM first (the cheapest cipher with AES-NI) and no ssh-level
  compression (the agents compress per chunk, and skip what does not compress).
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhop.errors import CloudUnreachableError, IntegrityError
from stackhop.transfer import stream_agent as agent
from stackhop.transfer.base import Chunk, Destination
from stackhop.transfer.ssh import SshHost, describe_failure

#: Offered in this order; OpenSSH takes the first the server also allows.
SSH_OPTIONS = (
    "Ciphers=aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,"
    "aes128-ctr,aes256-ctr",
    "Compression=no",
)

ENV_PYTHON = "STACKHOP_AGENT_PYTHON"
"""The interpreter the agent runs with on the hosts (default ``python3``)."""

FrameHook = Callable[[int, int, int], None]

#: Test hook: called with (kind, offset, length) of every frame just before it is forwarded to
#: the destination, to break a transfer at a chosen point in functional tests. Empty in
#: production.
frame_hooks: list[FrameHook] = []

_STDERR_KEEP = 8192


def agent_source() -> bytes:
    """The agent's source, as sent to the hosts."""
    return Path(agent.__file__).read_bytes()


def _read_exact(fd: int, count: int) -> bytes:
    parts: list[bytes] = []
    while count:
        part = os.read(fd, count)
        if not part:
            raise EOFError
        parts.append(part)
        count -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _splice_exact(src: int, dst: int, count: int) -> None:
    while count:
        moved = os.splice(src, dst, count)
        if not moved:
            raise EOFError
        count -= moved


class _StderrTail(threading.Thread):
    """Keeps the last few KB of a process's stderr, so errors can quote the agent."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        super().__init__(daemon=True, name="agent stderr")
        self.proc = proc
        self.tail = b""

    def run(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self.tail = (self.tail + line)[-_STDERR_KEEP:]


@dataclass(frozen=True)
class AgentHost:
    """A storage host where the agent runs: the ssh host and the interpreter to use."""

    host: SshHost
    python: str = "python3"

    @classmethod
    def named(cls, name: str, python: str | None = None) -> AgentHost:
        return cls(SshHost.named(name), python or os.environ.get(ENV_PYTHON) or "python3")

    def argv(self, mode: str, *, shared: bool = True) -> list[str]:
        """The ssh command running the agent in ``mode``; bulk streams pass ``shared=False``."""
        source = agent_source()
        command = [self.python, "-c", agent.BOOTSTRAP, str(len(source)), mode]
        return self.host.argv(command, extra_options=SSH_OPTIONS, shared=shared)

    @staticmethod
    def prelude(params: Mapping[str, Any]) -> bytes:
        """What the agent reads first on stdin: its source, then its parameters."""
        blob = json.dumps(params).encode()
        return agent_source() + struct.pack(">Q", len(blob)) + blob

    def failure(self, mode: str, returncode: int, stderr: bytes) -> CloudUnreachableError:
        return CloudUnreachableError(
            describe_failure(self.host.name, ["stackhop-agent", mode], returncode, stderr)
        )

    def call(self, mode: str, params: Mapping[str, Any], *, timeout: float = 3600) -> Any:
        """Run a mode that answers one JSON line (``probe``, ``digests``) and return it."""
        try:
            done = subprocess.run(
                self.argv(mode),
                input=self.prelude(params),
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise CloudUnreachableError(
                f"ssh {self.host.name}: the stream agent ({mode}) did not finish in "
                f"{timeout:.0f} s; check the host and re-run"
            ) from exc
        if done.returncode != 0:
            raise self.failure(mode, done.returncode, done.stderr)
        return json.loads(done.stdout)

    def start(
        self, mode: str, params: Mapping[str, Any]
    ) -> tuple[subprocess.Popen[bytes], _StderrTail]:
        """Start a streaming mode (``read``, ``write``); the prelude is already written."""
        proc = subprocess.Popen(
            self.argv(mode, shared=False),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            bufsize=0,
        )
        tail = _StderrTail(proc)
        tail.start()
        assert proc.stdin is not None
        try:
            _write_all(proc.stdin.fileno(), self.prelude(params))
        except BrokenPipeError:
            pass  # the agent died at once: its exit status and stderr say why
        return proc, tail


@dataclass
class PumpResult:
    """What one pump moved."""

    #: Logical bytes the source agent covered (data and zero runs).
    bytes_read: int = 0
    #: Raw bytes of the data chunks forwarded to the destination.
    bytes_sent: int = 0
    #: Payload bytes forwarded (after compression).
    bytes_wire: int = 0
    chunks_sent: int = 0
    #: offset -> (length, sha256 hex; "" for zeros) of every frame the source sent.
    digests: dict[int, tuple[int, str]] = field(default_factory=dict)
    #: What the destination agent reported at its end.
    writer: dict[str, Any] = field(default_factory=dict)
    #: What the source agent reported at its end.
    reader: dict[str, Any] = field(default_factory=dict)


Confirmed = Callable[[int, int, str], None]


class _Acks(threading.Thread):
    """Reads the destination agent's acknowledgements and hands them on."""

    def __init__(self, proc: subprocess.Popen[bytes], on_confirmed: Confirmed) -> None:
        super().__init__(daemon=True, name="stream acks")
        self.proc = proc
        self.on_confirmed = on_confirmed
        self.end: dict[str, Any] | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in iter(self.proc.stdout.readline, b""):
                if line.startswith(b"A "):
                    _, offset, length, digest = (line.decode().rstrip("\n").split(" ") + [""])[:4]
                    self.on_confirmed(int(offset), int(length), digest)
                elif line.startswith(b"E "):
                    self.end = json.loads(line[2:])
        except BaseException as exc:  # raised again by the pump's thread
            self.error = exc


def pump(
    source: AgentHost,
    read_params: Mapping[str, Any],
    destination: AgentHost,
    write_params: Mapping[str, Any],
    *,
    forward: Callable[[int, int], bool],
    on_confirmed: Confirmed,
    on_progress: Callable[[int], None] | None = None,
    backup: Destination | None = None,
) -> PumpResult:
    """Stream the source agent's frames into the destination agent.

    ``forward(offset, length)`` says whether a frame (a chunk, or a zero run
    of several) goes to the destination: a resumed pass skips confirmed
    chunks, but still reads them when a backup needs the whole volume; every
    data chunk goes to ``backup``.
    """
    result = PumpResult()
    writer, writer_err = destination.start("write", write_params)
    try:
        reader, reader_err = source.start("read", read_params)
    except BaseException:
        writer.kill()
        writer.wait()
        raise
    assert reader.stdin is not None and reader.stdout is not None and writer.stdin is not None
    reader.stdin.close()
    acks = _Acks(writer, on_confirmed)
    acks.start()
    src_fd, dst_fd = reader.stdout.fileno(), writer.stdin.fileno()
    codec = agent.Codec()
    stage = "reading"
    try:
        while True:
            stage = "reading"
            kind, packing, plen, offset, length, digest = agent.unpack_header(
                _read_exact(src_fd, agent.HEADER.size)
            )
            if kind == agent.END:
                result.reader = json.loads(_read_exact(src_fd, plen)) if plen else {}
                break
            send = forward(offset, length)
            for hook in frame_hooks if send else ():
                hook(kind, offset, length)
            result.digests[offset] = (length, digest.hex() if kind == agent.DATA else "")
            stage = "writing"
            header = agent.pack_header(kind, packing, plen, offset, length, digest)
            if send:
                _write_all(dst_fd, header)
            if kind == agent.DATA:
                if backup is not None or not send:
                    payload = _read_exact(src_fd, plen)
                    if backup is not None:
                        backup.write(Chunk(offset, codec.decompress(packing, payload, length)))
                    if send:
                        _write_all(dst_fd, payload)
                else:
                    _splice_exact(src_fd, dst_fd, plen)
                if send:
                    result.bytes_sent += length
                    result.bytes_wire += plen
                    result.chunks_sent += 1
            result.bytes_read += length
            if on_progress is not None:
                on_progress(result.bytes_read)
        stage = "writing"
        _write_all(dst_fd, agent.pack_header(agent.END, agent.RAW, 0, 0, 0, agent.NO_DIGEST))
        writer.stdin.close()
        acks.join()
        if writer.wait() != 0 or acks.end is None:
            raise destination.failure("write", writer.returncode, writer_err.tail)
        if reader.wait() != 0:
            raise source.failure("read", reader.returncode, reader_err.tail)
        if acks.error is not None:
            raise acks.error
        result.writer = acks.end
        return result
    except (EOFError, BrokenPipeError, ValueError) as exc:
        # Which side broke decides the message; its stderr says why.
        broken, proc, err, mode = (
            (source, reader, reader_err, "read")
            if stage == "reading" or isinstance(exc, ValueError)
            else (destination, writer, writer_err, "write")
        )
        _stop(reader, writer)
        if isinstance(exc, ValueError):
            raise IntegrityError(
                f"ssh {source.host.name}: the stream agent's output is out of step ({exc}); "
                "re-run to resume from the first unconfirmed chunk"
            ) from exc
        err.join(timeout=5)
        raise CloudUnreachableError(
            describe_failure(
                broken.host.name,
                ["stackhop-agent", mode],
                proc.returncode or 255,
                err.tail or b"connection closed",
            )
            + "; re-run to resume from the first unconfirmed chunk"
        ) from exc
    except BaseException:
        _stop(reader, writer)
        raise
    finally:
        acks.join(timeout=30)
        for stream in (reader.stdout, writer.stdout, writer.stdin):
            if stream is not None and not stream.closed:
                try:
                    stream.close()
                except BrokenPipeError:
                    pass


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    """Kill our own agent processes (by their handles) and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()
