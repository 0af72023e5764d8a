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


def test_an_encrypted_source_is_refused_before_the_storage_map_is_read() -> None:
    # The key lives in the source cloud's key manager: a copy of the bytes could not be
    # opened on the destination. (No cluster or cloud needed: check() refuses first.)
    from stackhop.errors import CapabilityError
    from stackhop.volumes.model import VolumeRef

    source = VolumeRef(cloud="src", id="v1", name="secret", size_gib=1, project_id="p",
                       status="available", encrypted=True)
    with pytest.raises(CapabilityError, match="is encrypted .* which stackhop does not move"):
        RbdMethod().check(source, storage=None, destination_cloud="dst",  # type: ignore[arg-type]
                          destination_type=None)
