"""Fixtures of the functional tests: the real testbed clouds, and the CLI run in-process.

``testbed`` reuses the running testbed when ``python -m testbed status``
says every service answers, and boots it (``python -m testbed up``, output
streamed to the test log) only when it does not. ``seeded`` adds the sample
tenant data once per session. ``cli`` runs ``stackhop`` in-process.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from testbed import layout

from stackhop.cli.main import main

log = logging.getLogger("testbed")

#: Booting both clouds from nothing takes minutes; a hung boot must still end.
UP_TIMEOUT = 1800
SEED_TIMEOUT = 1200


@dataclass(frozen=True)
class Testbed:
    """The running testbed as the tests see it."""

    clouds_yaml: Path
    source: str = layout.SRC.name
    destination: str = layout.DST.name


def _testbed_command(*args: str, timeout: float) -> int:
    """Run ``python -m testbed ARGS`` from the repository, each output line to the test log."""
    cmd = [sys.executable, "-m", "testbed", *args]
    log.info("running %s", " ".join(cmd))
    with subprocess.Popen(
        cmd,
        cwd=layout.REPO_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    ) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            log.info("testbed %s: %s", args[0], line.rstrip())
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()  # our own child, by its handle
            proc.wait()
            pytest.fail(f"`python -m testbed {' '.join(args)}` did not finish in {timeout} s")


def _testbed_answers() -> bool:
    status = subprocess.run(
        [sys.executable, "-m", "testbed", "status"],
        cwd=layout.REPO_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log.info("testbed status (exit %d):\n%s%s", status.returncode, status.stdout, status.stderr)
    return status.returncode == 0


@pytest.fixture(scope="session")
def testbed() -> Iterator[Testbed]:
    """The two testbed clouds, ``src`` and ``dst``: reused when up, booted when not.

    For the whole session ``OS_CLIENT_CONFIG_FILE`` points at the testbed's
    clouds.yaml and no other ``OS_*`` variable of the caller's shell applies;
    ``STACKHOP_STORAGE_MAP``, ``STACKHOP_SSH_CONFIG`` and the file backends' directories
    (``STACKHOP_{SRC,DST}_FILE_BACKEND_DIR``) are the testbed's.
    """
    if not _testbed_answers():
        if os.environ.get("STACKHOP_TESTBED_NO_BOOT"):
            # Several checkouts share one testbed: a boot from this one would rewrite
            # every component's configuration from this tree's code.
            pytest.fail("the testbed does not answer; STACKHOP_TESTBED_NO_BOOT is set: not booting")
        code = _testbed_command("up", timeout=UP_TIMEOUT)
        if code != 0:
            pytest.fail(f"`python -m testbed up` failed with exit code {code}; see the test log")
        if not _testbed_answers():
            pytest.fail("the testbed was booted but `python -m testbed status` still fails")
    if not layout.CLOUDS_YAML.exists():
        pytest.fail(f"the testbed answers but wrote no {layout.CLOUDS_YAML}")

    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith("OS_"):
                mp.delenv(key)
        mp.setenv("OS_CLIENT_CONFIG_FILE", str(layout.CLOUDS_YAML))
        # What env.sh gives a shell: how volume backends and storage hosts are reached.
        mp.setenv("STACKHOP_STORAGE_MAP", str(layout.STORAGE_MAP))
        mp.setenv("STACKHOP_SSH_CONFIG", str(layout.SSH_DIR / "ssh_config"))
        mp.setenv("STACKHOP_SRC_FILE_BACKEND_DIR", str(layout.SRC.file_backend_dir))
        mp.setenv("STACKHOP_DST_FILE_BACKEND_DIR", str(layout.DST.file_backend_dir))
        yield Testbed(clouds_yaml=layout.CLOUDS_YAML)


@pytest.fixture(scope="session")
def seeded(testbed: Testbed) -> Testbed:
    """The testbed with its sample tenant data (``python -m testbed seed``, once per session)."""
    code = _testbed_command("seed", timeout=SEED_TIMEOUT)
    if code != 0:
        pytest.fail(f"`python -m testbed seed` failed with exit code {code}; see the test log")
    return testbed


@dataclass(frozen=True)
class CliResult:
    """What one in-process ``stackhop`` run printed and returned."""

    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """Run ``stackhop ARGS`` in-process: ``cli("clouds", "--check")`` -> :class:`CliResult`."""

    def run(*argv: str) -> CliResult:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
        return CliResult(code, out.getvalue(), err.getvalue())

    return run
