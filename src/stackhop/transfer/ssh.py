"""Running commands on storage hosts with the system OpenSSH client, host keys verified.

Hosts are names of the ssh config (``$STACKHOP_SSH_CONFIG`` or ``--ssh-config``,
else the user's ``~/.ssh/config``). stackhop never turns host key checking
off: an unknown or changed host key is an error that names the host, and
``BatchMode`` keeps ssh from ever prompting. The remote side needs nothing
but a shell (and Python 3 for the stream method's agent).

Short commands to one host share one ssh connection (OpenSSH's
``ControlMaster``): a handshake costs 0.1-0.5 s, and a volume pass makes
several short calls per host (probe, digests, checks). The control sockets
live in a private directory (0700) of this process, and the masters are
told to exit when the process ends (:func:`close_shared`; a killed process's
masters exit by themselves after :data:`SHARE_IDLE` seconds idle). Bulk
streams get their own connection (``shared=False``): one master would carry
them all through one process. ``STACKHOP_SSH_SHARE=0`` turns sharing off.
"""

from __future__ import annotations

import atexit
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import tenacity

from stackhop.errors import CloudUnreachableError, ConfigError

ENV_CONFIG = "STACKHOP_SSH_CONFIG"
ENV_SHARE = "STACKHOP_SSH_SHARE"

#: Seconds a shared connection outlives its last session (a killed stackhop's masters end).
SHARE_IDLE = 30
#: A unix socket path must fit in 108 bytes; %C expands to 40 hex digits.
_SOCKET_PATH_MAX = 100
_UNSHARED = ("ControlPath=none",)

#: Options forced on every connection, whatever the ssh config says.
FORCED_OPTIONS = (
    "BatchMode=yes",
    "StrictHostKeyChecking=yes",
    # A dead peer must not hang a transfer forever.
    "ServerAliveInterval=15",
    "ServerAliveCountMax=4",
)


@dataclass(frozen=True)
class SshHost:
    """A storage host reached by ssh: its name in the ssh config, and that config."""

    name: str
    config: str | None = None

    def __post_init__(self) -> None:
        # ssh would read a name beginning with '-' as an option (-oProxyCommand=...).
        if not self.name or self.name.startswith("-") or any(
            c.isspace() or not c.isprintable() for c in self.name
        ):
            raise ConfigError(
                f"ssh host {self.name!r} is not a host name (empty, starts with '-', or holds "
                "spaces or control characters); fix the storage map"
            )

    @classmethod
    def named(cls, name: str, config: str | None = None) -> SshHost:
        """``name`` with ``config``, else ``$STACKHOP_SSH_CONFIG``, else ssh's own default."""
        return cls(name=name, config=config or os.environ.get(ENV_CONFIG) or None)

    def argv(
        self, command: Sequence[str], *, extra_options: Sequence[str] = (), shared: bool = True
    ) -> list[str]:
        """The ssh command line running ``command`` (quoted for the remote shell) on this host;
        ``shared``: over this process's shared connection to the host (module doc)."""
        argv = ["ssh"]
        if self.config:
            argv += ["-F", self.config]
        sharing = _SHARED.options(self) if shared else _UNSHARED
        for option in (*FORCED_OPTIONS, *sharing, *extra_options):
            argv += ["-o", option]
        argv += ["-T", "--", self.name, shlex.join(command)]
        return argv

    def run(
        self, command: Sequence[str], *, input: bytes | None = None, timeout: float = 300
    ) -> bytes:
        """Run ``command`` there and return its stdout; CloudUnreachableError with ssh's reason."""
        try:
            done = run_until_logged_in(self.argv(command), input=input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise CloudUnreachableError(
                f"ssh {self.name}: {shlex.join(command)} did not finish in {timeout:.0f} s; "
                "check the host and re-run"
            ) from exc
        if done.returncode != 0:
            raise CloudUnreachableError(
                describe_failure(self.name, command, done.returncode, done.stderr)
            )
        return done.stdout


class _SharedConnections:
    """This process's control-socket directory and the hosts that may have a master there."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._directory: str | None = None
        self._hosts: set[SshHost] = set()
        self._disabled = False

    def options(self, host: SshHost) -> tuple[str, ...]:
        with self._lock:
            if self._disabled or os.environ.get(ENV_SHARE, "1") == "0":
                return _UNSHARED
            if self._directory is None:
                directory = tempfile.mkdtemp(prefix="stackhop-ssh-")  # 0700
                if len(directory) + 42 > _SOCKET_PATH_MAX:  # a long TMPDIR: no sharing
                    os.rmdir(directory)
                    self._disabled = True
                    return _UNSHARED
                self._directory = directory
                atexit.register(self.close)
            self._hosts.add(host)
            return (
                "ControlMaster=auto",
                f"ControlPath={self._directory}/%C",
                f"ControlPersist={SHARE_IDLE}",
            )

    def close(self) -> None:
        with self._lock:
            directory, hosts = self._directory, list(self._hosts)
            self._directory, self._hosts = None, set()
        if directory is None:
            return
        for host in hosts:
            argv = ["ssh"] + (["-F", host.config] if host.config else [])
            argv += ["-o", f"ControlPath={directory}/%C", "-O", "exit", host.name]
            try:
                subprocess.run(argv, capture_output=True, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                pass  # no master there, or it is gone: it exits by itself when idle
        shutil.rmtree(directory, ignore_errors=True)


_SHARED = _SharedConnections()


def close_shared() -> None:
    """End this process's shared ssh connections (also run at exit)."""
    _SHARED.close()


#: What ssh says when the server closed or reset the connection before the login was
#: done (its sshd restarted, a session limit such as MaxStartups, a cut): the command
#: never ran there, so trying again is safe.
_CLOSED_BEFORE_LOGIN = re.compile(
    r"(?:kex|ssh)_exchange_identification|Connection (?:closed|reset) by \S+ port \d+"
    r"|during banner exchange"
)
#: Tries of a command whose connection is closed before the login (the first included).
LOGIN_TRIES = 4


def closed_before_login(returncode: int, stderr: bytes) -> bool:
    """Whether ssh failed because the connection was closed before the login completed."""
    return returncode == 255 and bool(_CLOSED_BEFORE_LOGIN.search(stderr.decode(errors="replace")))


def _last_result(state: tenacity.RetryCallState) -> Any:
    assert state.outcome is not None  # called after an attempt
    return state.outcome.result()


def run_until_logged_in(
    argv: Sequence[str], *, input: bytes | None, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """``subprocess.run`` of an ssh command, tried again (jittered waits, up to
    :data:`LOGIN_TRIES` in all) while its connection is closed before the login; the last
    result otherwise. ``subprocess.TimeoutExpired`` passes through."""
    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_result(lambda done: closed_before_login(done.returncode,
                                                                        done.stderr)),
        wait=tenacity.wait_random_exponential(multiplier=0.5, max=4),
        stop=tenacity.stop_after_attempt(LOGIN_TRIES),
        retry_error_callback=_last_result,
    )
    return retrying(subprocess.run, list(argv), input=input, capture_output=True,
                    timeout=timeout, check=False)


def describe_failure(host: str, command: Sequence[str], returncode: int, stderr: bytes) -> str:
    """One line saying why an ssh command failed, with the fix for the usual causes."""
    text = stderr.decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else f"exit status {returncode}"
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (
            f"ssh {host}: host key not known or changed; verify it and add it to the "
            "known_hosts file of your ssh config (stackhop never skips this check)"
        )
    if closed_before_login(returncode, stderr):
        return (
            f"ssh {host}: the connection was closed before the login ({last}), "
            f"{LOGIN_TRIES} times; check that the host's sshd runs and accepts this many "
            "connections at once (MaxStartups), then re-run"
        )
    if returncode == 255:
        return f"ssh {host}: cannot connect ({last}); check the host name in your ssh config"
    return f"ssh {host}: {shlex.join(command)} failed: {last}"
