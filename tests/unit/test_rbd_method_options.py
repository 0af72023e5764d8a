"""The rbd method's ``reread`` option: from the command line to the method (no cluster)."""

from __future__ import annotations

import pytest

from stackhop.cli import main as cli_main
from stackhop.errors import UsageError
from stackhop.volumes.methods import get_method
from stackhop.volumes.rbd import RbdMethod


def test_reread_is_an_option_of_the_rbd_method_only(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["volumes", "copy", "--from", "a", "--to", "b", "--project", "p", "--trust-writes"]
    code = cli_main.main([*argv, "--method", "stream"])
    err = capsys.readouterr().err
    assert code == UsageError.exit_code
    assert err == "stackhop: --trust-writes is an option of the rbd method, not of stream\n"


def test_the_method_registry_hands_reread_to_the_rbd_method() -> None:
    method = get_method("rbd", reread=False)
    assert isinstance(method, RbdMethod) and not method.reread
    assert get_method("rbd").reread  # by default a pass reads the destination back
