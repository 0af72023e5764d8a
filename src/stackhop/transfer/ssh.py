"""Running commands on storage hosts with the system OpenSSH client, host keys verified.

Hosts are names of the ssh config (``$STACKHOP_SSH_CONFIG`` or ``--ssh-config``,
else the user's ``~/.ssh/config``). stackhop never turns host key checking
off: an unknown or changed host key is an error that names the host, and
``BatchMode`` keeps ssh from ever prompting. The remote side needs nothing
but a shell (and Python 3 for the stream method's agent).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from stackhop.errors import CloudUnreachableError

ENV_CONFIG = "STACKHOP_SSH_CONFIG"

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

    @classmethod
    def named(cls, name: str, config: str | None = None) -> SshHost:
        """``name`` with ``config``, else ``$STACKHOP_SSH_CONFIG``, else ssh's own default."""
        return cls(name=name, config=config or os.environ.get(ENV_CONFIG) or None)

    def argv(self, command: Sequence[str], *, extra_options: Sequence[str] = ()) -> list[str]:
        """The ssh command line running ``command`` (quoted for the remote shell) on this host."""
        argv = ["ssh"]
        if self.config:
            argv += ["-F", self.config]
        for option in (*FORCED_OPTIONS, *extra_options):
            argv += ["-o", option]
        argv += ["-T", self.name, "--", shlex.join(command)]
        return argv

    def run(
        self, command: Sequence[str], *, input: bytes | None = None, timeout: float = 300
    ) -> bytes:
        """Run ``command`` there and return its stdout; CloudUnreachableError with ssh's reason."""
        try:
            done = subprocess.run(
                self.argv(command),
                input=input,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
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


def describe_failure(host: str, command: Sequence[str], returncode: int, stderr: bytes) -> str:
    """One line saying why an ssh command failed, with the fix for the usual causes."""
    text = stderr.decode(errors="replace").strip()
    last = text.splitlines()[-1] if text else f"exit status {returncode}"
    if "Host key verification failed" in text or "REMOTE HOST IDENTIFICATION HAS CHANGED" in text:
        return (
            f"ssh {host}: host key not known or changed; verify it and add it to the "
            "known_hosts file of your ssh config (stackhop never skips this check)"
        )
    if returncode == 255:
        return f"ssh {host}: cannot connect ({last}); check the host name in your ssh config"
    return f"ssh {host}: {shlex.join(command)} failed: {last}"
