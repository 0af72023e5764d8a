"""An ssh connection the server closes before the login is tried again; other failures are not.

The server here is a loopback listener that accepts each connection and closes it at
once — what a restarting sshd, a MaxStartups limit or a cut during the handshake looks
like to the client. The client is the real OpenSSH ``ssh``; no OpenStack service is
involved, so this needs no testbed.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from stackhop.transfer import ssh
from stackhop.transfer.ssh import closed_before_login, describe_failure, run_until_logged_in


@pytest.fixture
def closing_server() -> Iterator[tuple[int, list[int]]]:
    """A port whose every connection is closed at once, and the count of connections."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[int] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield listener.getsockname()[1], accepted
    finally:
        listener.close()


def _argv(port: int) -> list[str]:
    return ["ssh", "-F", "/dev/null", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", "UserKnownHostsFile=/dev/null", "-p", str(port), "--", "127.0.0.1", "true"]


def test_connection_closed_before_login_is_tried_again_then_reported_in_one_line(
    closing_server: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    port, accepted = closing_server
    monkeypatch.setattr(ssh, "LOGIN_TRIES", 3)
    done = run_until_logged_in(_argv(port), input=None, timeout=30)
    assert closed_before_login(done.returncode, done.stderr), done.stderr
    assert len(accepted) == 3  # tried three times, no more
    message = describe_failure("storage-a", ["true"], done.returncode, done.stderr)
    assert "\n" not in message and "closed before the login" in message
    assert "check the host name" not in message


def test_a_refused_connection_is_not_tried_again_and_names_the_host() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed again below: nothing listens there
    done = run_until_logged_in(_argv(port), input=None, timeout=30)
    assert done.returncode == 255 and not closed_before_login(done.returncode, done.stderr)
    assert "check the host name" in describe_failure("storage-a", ["true"], 255, done.stderr)
