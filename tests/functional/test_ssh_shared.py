"""Short ssh commands to one storage host share one connection; bulk streams do not."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from testbed import layout

from stackhop.transfer import ssh
from stackhop.transfer.ssh import SshHost, close_shared

SSH_CONFIG = str(layout.SSH_DIR / "ssh_config")


def _master_answers(directory: str, host: str) -> bool:
    check = subprocess.run(
        ["ssh", "-F", SSH_CONFIG, "-o", f"ControlPath={directory}/%C", "-O", "check", host],
        capture_output=True,
        timeout=10,
        check=False,
    )
    return check.returncode == 0


def test_short_calls_share_a_master_that_ends_with_close(testbed: object) -> None:
    close_shared()
    host = SshHost.named("src-storage")
    assert host.run(["echo", "one"]) == b"one\n"
    directory = ssh._SHARED._directory
    assert directory is not None
    assert stat.S_IMODE(Path(directory).stat().st_mode) == 0o700
    assert len(list(Path(directory).iterdir())) == 1  # one control socket, for this host
    assert _master_answers(directory, "src-storage")
    assert host.run(["echo", "two"]) == b"two\n"
    assert len(list(Path(directory).iterdir())) == 1  # the second call reused it

    close_shared()
    assert not Path(directory).exists()
    assert not _master_answers(directory, "src-storage")


def test_bulk_streams_and_the_switch_opt_out(
    testbed: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = SshHost.named("dst-storage")
    assert "ControlPath=none" in host.argv(["true"], shared=False)
    close_shared()
    monkeypatch.setenv(ssh.ENV_SHARE, "0")
    assert host.run(["echo", "alone"]) == b"alone\n"
    assert ssh._SHARED._directory is None
    assert "ControlPath=none" in host.argv(["true"])
