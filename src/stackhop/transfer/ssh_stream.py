"""The local side of the stream method: agents over ssh, and the frame pump between two hosts.

:mod:`stackhop.transfer.stream_agent` runs on each storage host (sent over
ssh with every call, nothing installed there). This module starts it in a
mode (:class:`AgentHost`) and, for a copy, either pumps the source agent's
frames into the destination agent (:func:`pump`, the relay route) or has the
source agent send them to the destination host itself (:func:`pump_direct`):

- relayed, the data goes source host -> this process -> destination host, so
  the backup tee (``--backup-to``) gets the very bytes that are sent, from the
  same read; when there is no backup a frame's payload moves between the two
  ssh pipes with ``splice(2)``, never entering Python;
- direct, it crosses one ssh hop (started on the source host, host keys
  verified there) and this process gets frame headers and acknowledgements;
- back-pressure is the pipes themselves: the pump holds one frame header at
  a time, the agents a few chunks each, so memory is bounded by the chunk
  size whatever the volume's;
- the destination agent acknowledges chunks only after ``fdatasync`` and a
  read-back from the disk, with the digest read; the pump hands each
  acknowledgement whose digest is the source's to ``on_confirmed`` (the
  journal), which is what a re-run resumes from;
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

from stackhop.errors import CloudUnreachableError, ConnectionCutError, IntegrityError
from stackhop.transfer import stream_agent as agent
from stackhop.transfer.base import Chunk, Destination
from stackhop.transfer.ssh import SshHost, describe_failure, run_until_logged_in

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
            done = run_until_logged_in(self.argv(mode), input=self.prelude(params),
                                       timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CloudUnreachableError(
                f"ssh {self.host.name}: the stream agent ({mode}) did not finish in "
                f"{timeout:.0f} s; check the host and re-run"
            ) from exc
        if done.returncode != 0:
            raise self.failure(mode, done.returncode, done.stderr)
        return json.loads(done.stdout)

    def start(
        self, mode: str, params: Mapping[str, Any], *, shared: bool = False
    ) -> tuple[subprocess.Popen[bytes], _StderrTail]:
        """Start a streaming mode (``read``, ``write``, ``send``); the prelude is already
        written. ``shared``: over the shared connection (only when the bulk data does not
        come back through it)."""
        proc = subprocess.Popen(
            self.argv(mode, shared=shared),
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
    #: Offsets the destination read back with a digest other than the source's.
    mismatched: list[int] = field(default_factory=list)
    #: offset -> (length, sha256 hex; "" for zeros) of every frame the destination confirmed.
    confirmed: dict[int, tuple[int, str]] = field(default_factory=dict)

    def frame(self, offset: int, length: int, digest: bytes, wire: int, sent: bool) -> None:
        """Record a frame's digest and account for its ``length`` bytes (``wire`` bytes of
        payload when its data was ``sent``); before its acknowledgement can arrive."""
        self.digests[offset] = (length, "" if digest == agent.NO_DIGEST else digest.hex())
        if sent:
            self.bytes_sent += length
            self.bytes_wire += wire
            self.chunks_sent += 1
        self.bytes_read += length


Confirmed = Callable[[int, int, str], None]


class _AckBook:
    """Checks the destination's acknowledgements against what the source sent.

    The writer acknowledges a chunk with the sha256 of what it read back from the
    disk after ``fdatasync`` ("" for a run that reads as zeros); only a match is
    handed to ``on_confirmed`` (the journal); a mismatch is kept, and the pass
    fails at its end with the chunks still unconfirmed, so a re-run sends them.
    """

    def __init__(self, result: PumpResult, on_confirmed: Confirmed) -> None:
        self.result = result
        self.on_confirmed = on_confirmed
        self.end: dict[str, Any] | None = None

    def line(self, line: bytes) -> None:
        if line.startswith(b"A "):
            _, offset, length, digest = (line.decode().rstrip("\n").split(" ") + [""])[:4]
            sent = self.result.digests.get(int(offset))
            if sent is None or sent[1] != digest:
                self.result.mismatched.append(int(offset))
                return
            self.result.confirmed[int(offset)] = (int(length), digest)
            self.on_confirmed(int(offset), int(length), digest)
        elif line.startswith(b"E "):
            self.end = json.loads(line[2:])

    def check(self, label: str) -> None:
        """IntegrityError when a chunk read back differently from what was sent."""
        bad = sorted(self.result.mismatched)
        if bad:
            raise IntegrityError(
                f"{label}: {len(bad)} chunk(s) read back from the destination's disk differ "
                f"from what was sent (first at byte {bad[0]}); re-run to send them again"
            )


class _Acks(threading.Thread):
    """Reads the destination agent's acknowledgements and hands them to the book."""

    def __init__(self, proc: subprocess.Popen[bytes], book: _AckBook) -> None:
        super().__init__(daemon=True, name="stream acks")
        self.proc = proc
        self.book = book
        self.error: BaseException | None = None

    def run(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in iter(self.proc.stdout.readline, b""):
                self.book.line(line)
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
    tee: Callable[[int, int], bool] | None = None,
) -> PumpResult:
    """Stream the source agent's frames into the destination agent.

    ``forward(offset, length)`` says whether a frame (a chunk, or a zero run
    of several) goes to the destination: a resumed pass skips confirmed
    chunks, but still reads them when a backup needs the whole volume. Every
    data chunk goes to ``backup``; with ``tee`` only the frames it accepts,
    zero runs included (an incremental backup carries what changed, zeros too).
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
    book = _AckBook(result, on_confirmed)
    acks = _Acks(writer, book)
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
            # A SAME frame is already so on the destination: only its digest counts.
            send = kind != agent.SAME and forward(offset, length)
            for hook in frame_hooks if send else ():
                hook(kind, offset, length)
            result.frame(offset, length, digest, plen, send and kind == agent.DATA)
            stage = "writing"
            header = agent.pack_header(kind, packing, plen, offset, length, digest)
            if send:
                _write_all(dst_fd, header)
            teeing = backup is not None and (tee is None or tee(offset, length))
            if kind == agent.DATA:
                if teeing or not send:
                    payload = _read_exact(src_fd, plen)
                    if teeing:
                        assert backup is not None
                        backup.write(Chunk(offset, codec.decompress(packing, payload, length)))
                    if send:
                        _write_all(dst_fd, payload)
                else:
                    _splice_exact(src_fd, dst_fd, plen)
            elif kind == agent.ZERO and teeing and tee is not None:
                assert backup is not None
                for start in range(offset, offset + length, agent.CHUNK):
                    backup.write(Chunk(start, bytes(min(agent.CHUNK, offset + length - start))))
            if on_progress is not None:
                on_progress(result.bytes_read)
        stage = "writing"
        _write_all(dst_fd, agent.pack_header(agent.END, agent.RAW, 0, 0, 0, agent.NO_DIGEST))
        writer.stdin.close()
        acks.join()
        if writer.wait() != 0 or book.end is None:
            raise destination.failure("write", writer.returncode, writer_err.tail)
        if reader.wait() != 0:
            raise source.failure("read", reader.returncode, reader_err.tail)
        if acks.error is not None:
            raise acks.error
        result.writer = book.end
        book.check(f"ssh {destination.host.name}")
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
        # The session worked until now: a cut, worth a retry that resumes.
        raise ConnectionCutError(
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


def pump_direct(
    source: AgentHost,
    read_params: Mapping[str, Any],
    destination: AgentHost,
    write_params: Mapping[str, Any],
    *,
    route_config: str | None,
    on_confirmed: Confirmed,
    on_progress: Callable[[int], None] | None = None,
) -> PumpResult:
    """Stream host to host: the source agent starts the destination's writer over ssh from
    the source host (with ``route_config``, an ssh config file *on that host*) and sends
    the frames there; this process gets headers, acknowledgements and the end facts.

    Half the encryption and copying of :func:`pump` (one ssh hop instead of two); no
    backup can be written here, since the bytes never pass through this process.
    """
    result = PumpResult()
    book = _AckBook(result, on_confirmed)
    route = SshHost(destination.host.name, route_config)
    peer = AgentHost(route, destination.python).argv("write", shared=False)
    params = {
        **read_params,
        "peer": {"argv": peer, "params": dict(write_params), "host": route.name},
    }
    # The bytes go from the source host to the destination host: this connection carries
    # only headers and acknowledgements, so it may share the probes' connection.
    proc, err = source.start("send", params, shared=True)
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.close()
    fd = proc.stdout.fileno()
    label = f"ssh {source.host.name} -> {route.name}"
    try:
        while True:
            kind, packing, plen, offset, length, digest = agent.unpack_header(
                _read_exact(fd, agent.HEADER.size)
            )
            if kind == agent.END:
                result.reader = json.loads(_read_exact(fd, plen)) if plen else {}
                break
            if kind == agent.ACKS:
                for line in _read_exact(fd, plen).splitlines(keepends=True):
                    book.line(line)
                continue
            if kind not in (agent.NOTE, agent.ZERO, agent.SAME):
                raise ValueError(f"a frame of kind {kind} where notes were expected")
            data = kind == agent.NOTE
            for hook in frame_hooks if kind != agent.SAME else ():
                hook(agent.DATA if data else kind, offset, length)
            result.frame(offset, length, digest, plen, data)
            if on_progress is not None:
                on_progress(result.bytes_read)
        if proc.wait() != 0 or book.end is None:
            raise _direct_failure(label, route_config, proc.returncode, err)
        result.writer = book.end
        book.check(label)
        return result
    except (EOFError, ValueError) as exc:
        _stop(proc)
        if isinstance(exc, ValueError):
            raise IntegrityError(
                f"{label}: the stream agent's output is out of step ({exc}); "
                "re-run to resume from the first unconfirmed chunk"
            ) from exc
        raise _direct_failure(label, route_config, proc.returncode, err) from exc
    except BaseException:
        _stop(proc)
        raise
    finally:
        proc.stdout.close()


def _direct_failure(
    label: str, route_config: str | None, returncode: int | None, err: _StderrTail
) -> CloudUnreachableError:
    err.join(timeout=5)
    text = err.tail.decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else f"exit status {returncode}"
    if "stopped (status 255)" in text:  # ssh from the source host to the destination failed
        return CloudUnreachableError(
            f"{label}: {last}; the source host cannot reach the destination host with its ssh "
            f"config {route_config or '(default)'}: fix it there, or remove direct_ssh_config "
            "from the storage map to send through this machine"
        )
    return CloudUnreachableError(
        f"{label}: {last}; re-run to resume from the first unconfirmed chunk"
    )


def _stop(*procs: subprocess.Popen[bytes]) -> None:
    """Kill our own agent processes (by their handles) and reap them."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()
