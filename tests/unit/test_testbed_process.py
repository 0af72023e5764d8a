"""``testbed.process.run``: a setup command that fails or hangs is one line, never a traceback
(``testbed status`` used to die with ``TimeoutExpired`` while Ceph's monitor was down)."""

from __future__ import annotations

import pytest
from testbed.process import TestbedError, run


def test_a_command_past_its_timeout_is_one_testbed_error() -> None:
    with pytest.raises(TestbedError, match=r"^sleep 30 did not answer within 1s$"):
        run(["sleep", "30"], timeout=1)


def test_a_failing_command_says_its_exit_and_last_lines() -> None:
    with pytest.raises(TestbedError, match=r"exit 3\): no such thing"):
        run(["sh", "-c", "echo no such thing >&2; exit 3"])
