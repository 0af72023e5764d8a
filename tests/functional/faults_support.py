"""The fault-injecting proxy over both testbed clouds, for the fault tests.

``faulty(script, directory)`` starts :class:`tests.support.faultproxy.FaultProxy` in
front of every API of src and dst (from their catalogs) and writes a clouds.yaml naming
them ``src-faulty``/``dst-faulty``; ``until_done`` re-runs a stackhop command through it
until it exits 0, asserting that every stop before was one line.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.faultproxy import FaultProxy, Faults, catalog_upstreams, write_clouds_yaml

from stackhop.clouds import connect

#: Random faults at this rate, besides the scripted ones.
RATE = 0.15
#: Re-runs allowed after a run stopped by a fault (each must name it in one line).
RUNS = 4


@contextlib.contextmanager
def faulty(
    script: tuple[tuple[str, str, str], ...], directory: Path, rate: float = RATE
) -> Iterator[FaultProxy]:
    """The proxy over both clouds, and a clouds.yaml naming ``src-faulty``/``dst-faulty``."""
    upstreams = catalog_upstreams(connect("src")) | catalog_upstreams(connect("dst"))
    faults = Faults(rate=rate, seed=17, script=script, stall_seconds=8, retry_after=1)
    with FaultProxy(sorted(upstreams), faults) as px:
        px.clouds_yaml = write_clouds_yaml(  # type: ignore[attr-defined]
            px, Path(os.environ["OS_CLIENT_CONFIG_FILE"]), directory / "clouds.yaml",
            ["src", "dst"], timeout=4,
        )
        yield px


def stackhop_through(proxy: FaultProxy, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(proxy.clouds_yaml)}  # type: ignore[attr-defined]
    return subprocess.run(
        [sys.executable, "-m", "stackhop.cli.main", *argv],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )


def until_done(
    proxy: FaultProxy, *argv: str, runs_allowed: int = RUNS
) -> list[subprocess.CompletedProcess[str]]:
    """Run ``stackhop argv`` until it exits 0; every stop before must be one line on stderr."""
    runs = []
    for _ in range(runs_allowed):
        proc = stackhop_through(proxy, *argv)
        runs.append(proc)
        if proc.returncode == 0:
            return runs
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert last.startswith("stackhop"), f"no one-line error: {proc.stderr[-2000:]}"
    pytest.fail(f"`stackhop {' '.join(argv)}` did not complete in {runs_allowed} runs: "
                f"{runs[-1].stderr[-2000:]}")
