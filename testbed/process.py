"""Start, watch and stop the testbed's daemons, by PID, without systemd.

Every daemon is a :class:`Daemon`: a command line run in the foreground in
its own session, its output appended to ``logs/<name>.log``, its PID in
``run/<name>.pid``, and a health check that says whether it answers.
``ensure()`` is idempotent: a daemon that is up and answering is left alone,
a dead one is started again. ``stop()`` signals the process group that we
created for it, and nothing else.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from testbed import layout


class TestbedError(RuntimeError):
    """A testbed service failed to start or to answer; the message names its log."""


class DaemonExited(TestbedError):
    """A daemon's process ended right after it was started."""


def tcp_open(port: int, host: str = layout.HOST, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, timeout: float = 3.0) -> bool:
    """True when the URL answers with any HTTP status (401 and 404 count as answering)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, urllib.error.URLError):
        return False


def wait_until(
    check: Callable[[], bool], timeout: float, what: str, log: Path | None = None
) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.1
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
    hint = f"; see {log}" if log else ""
    raise TestbedError(f"{what} did not become ready within {timeout:.0f}s{hint}")


def run(
    argv: Sequence[str],
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    log: Path | None = None,
    input: str | None = None,
    check: bool = True,
    timeout: float | None = 600,
) -> subprocess.CompletedProcess[str]:
    """Run a one-shot setup command; on failure raise with the tail of its output."""
    full_env = {**os.environ, **(env or {})}
    try:
        proc = subprocess.run(
            list(argv), env=full_env, cwd=cwd, input=input, text=True,
            capture_output=True, timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise TestbedError(
            f"{' '.join(map(str, argv[:3]))} did not answer within {timeout:.0f}s"
        ) from None
    if log is not None:
        with open(log, "a") as fh:
            fh.write(f"$ {' '.join(map(str, argv))}\n{proc.stdout}{proc.stderr}\n")
    if check and proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
        raise TestbedError(
            f"{' '.join(map(str, argv[:3]))} failed (exit {proc.returncode}): " + " | ".join(tail)
        )
    return proc


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is not alive, unless it is a thread-group leader whose other
    # threads are still exiting: they may still hold its locks (a killed
    # ceph-osd keeps its pid-file lock until the last thread is gone).
    try:
        with open(f"/proc/{pid}/stat") as fh:
            if fh.read().rsplit(")", 1)[1].split()[0] != "Z":
                return True
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


@dataclass
class Daemon:
    """One long-running testbed process."""

    name: str
    argv: Sequence[str]
    check: Callable[[], bool]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ready_timeout: float = 120.0
    stop_timeout: float = 25.0
    #: Runs as a prefix so the daemon gets e.g. its own mount namespace.
    wrapper: Sequence[str] = ()

    @property
    def pidfile(self) -> Path:
        return layout.RUN_DIR / f"{self.name}.pid"

    @property
    def log(self) -> Path:
        return layout.LOG_DIR / f"{self.name}.log"

    def pid(self) -> int | None:
        """The daemon's PID if the process we started still runs.

        The pid file holds the PID and the process's start time: after a
        reboot the same PID may belong to someone else's process, which we must
        never take for ours (and never signal).
        """
        try:
            fields = self.pidfile.read_text().split()
            pid = int(fields[0])
            started = fields[1] if len(fields) > 1 else None
        except (OSError, ValueError, IndexError):
            return None
        if not _pid_alive(pid) or started is None or _start_time(pid) != started:
            return None
        return pid

    def running(self) -> bool:
        return self.pid() is not None

    def answers(self) -> bool:
        return self.running() and self.check()

    def start(self) -> None:
        layout.RUN_DIR.mkdir(parents=True, exist_ok=True)
        layout.LOG_DIR.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONWARNINGS": "ignore", **self.env}
        env["PATH"] = f"{layout.VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}"
        with open(self.log, "ab") as out:
            stamp = time.strftime("%Y-%m-%d %H:%M:%S")
            out.write(f"--- start {stamp}: {' '.join(self.argv)}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                [*self.wrapper, *self.argv], stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, env=env, cwd=self.cwd, start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")

    def ensure(self) -> str:
        """Make sure the daemon runs and answers; returns what was done."""
        if self.running():
            if self.check():
                return "up"
            # Running but not answering: it may still be starting; give it time.
            try:
                wait_until(self.check, min(self.ready_timeout, 30), self.name, self.log)
                return "up"
            except TestbedError:
                self.stop()
        # A daemon killed a moment ago may still hold a lock its successor
        # needs for a little while; one that exits at once gets two more tries.
        tries = 3
        while True:
            tries -= 1
            self.start()
            try:
                wait_until(self._started_ok, self.ready_timeout, self.name, self.log)
                return "started"
            except DaemonExited:
                if not tries:
                    raise
                time.sleep(2)

    def _started_ok(self) -> bool:
        if not self.running():
            raise DaemonExited(f"{self.name} exited right after start; see {self.log}")
        return self.check()

    def stop(self) -> bool:
        """Stop the daemon by its PID (and the process group we made for it)."""
        pid = self.pid()
        if pid is None:
            self.pidfile.unlink(missing_ok=True)
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            _signal_group(pid, signal.SIGKILL)
            time.sleep(0.2)
        self.pidfile.unlink(missing_ok=True)
        return True


def _start_time(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _signal_group(pid: int, sig: int) -> None:
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return
    try:
        if pgid == pid:  # we started it with start_new_session: the group is ours
            os.killpg(pgid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass
