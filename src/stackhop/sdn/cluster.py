"""The seed's steps 3-4 on the cluster side: mn-conf settings and the neutron-server restart.

``apply-settings`` feeds a settings file to ``mn-conf set -t default`` (or
the command the operator names) on its standard input:

* ``--mode importer`` applies ``DATA_DIR/mn-conf.settings`` (written by
  ``prepare``: the importer on, its JDBC URL, user and password);
* ``--mode normal`` applies ``DATA_DIR/mn-conf.normal.settings``
  (``cluster.neutron_importer.enabled : false``): the cluster back to normal
  mode once the import is done.

Backup first: before the first settings are applied, the cluster's current
configuration (``mn-conf dump -t default``, or the operator's dump command)
is saved byte for byte to ``DATA_DIR/cluster/before.conf`` (0600: it may
hold passwords) with its SHA-256 in ``DATA_DIR/cluster/manifest.json``. The
revert (``apply-settings --revert``, and ``rollback --data-dir``) feeds that
dump to the restore command (``mn-conf set -t default -c``: replace, not
merge), dumps again and requires the same bytes; only then are the saved
files removed.

``restart-neutron`` runs the operator's restart command (default
``systemctl restart neutron-server``) as a journaled step; ``rollback
--restart-command`` runs it again after the endpoints are reverted.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stackhop.errors import ConfigError, StackhopError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.sdn.endpoints import sha256
from stackhop.sdn.errors import RollbackIncompleteError
from stackhop.sdn.prepare import (
    NORMAL_SETTINGS_FILE,
    SETTINGS_FILE,
    normal_settings_text,
    write_private,
)
from stackhop.sdn.steps import StepRunner

SET_COMMAND = "mn-conf set -t default"
DUMP_COMMAND = "mn-conf dump -t default"
RESTORE_COMMAND = "mn-conf set -t default -c"
RESTART_COMMAND = "systemctl restart neutron-server"
STATE_DIR = "cluster"
BEFORE = "before.conf"
MANIFEST = "manifest.json"
MODES = {"importer": SETTINGS_FILE, "normal": NORMAL_SETTINGS_FILE}
TIMEOUT = 300


class ClusterCommandError(StackhopError):
    """A site command (mn-conf, the restart) failed."""

    exit_code = 12
    template = "{what} command {command!r} failed ({detail}); {state}"


@dataclass
class ClusterResult:
    """What the step did (or, with ``dry_run``, would do), step by step."""

    target: str  # the data directory, or the restart command
    steps: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


def run_command(command: str, what: str, stdin: bytes | None = None, *, changed: bool) -> bytes:
    """``sh -c command`` with ``stdin``; its stdout, or a one-line error."""
    try:
        proc = subprocess.run(["sh", "-c", command], input=stdin or b"", capture_output=True,
                              timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ClusterCommandError(what=what, command=command, detail=f"no answer in {TIMEOUT}s",
                                  state="check it and re-run (the step resumes)") from exc
    if proc.returncode != 0:
        last = (proc.stderr or proc.stdout).decode(errors="replace").strip().splitlines()
        detail = f"exit code {proc.returncode}" + (f": {last[-1]}" if last else "")
        state = ("its changes may be partly in place; re-run (the step resumes)" if changed
                 else "nothing was changed")
        raise ClusterCommandError(what=what, command=command, detail=detail, state=state)
    return proc.stdout


def state_dir(data_dir: Path) -> Path:
    return data_dir / STATE_DIR


def read_manifest(data_dir: Path) -> dict[str, Any] | None:
    """The saved-configuration manifest; None when no settings were applied."""
    path = state_dir(data_dir) / MANIFEST
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path} is unreadable ({exc}); restore it or remove "
                          f"{path.parent}") from exc
    return data if isinstance(data, dict) else None


def _settings_file(data_dir: Path, mode: str) -> Path:
    if mode not in MODES:
        raise ConfigError(f"--mode {mode!r}: give importer or normal")
    path = data_dir / MODES[mode]
    if mode == "normal" and not path.is_file() and data_dir.is_dir():
        write_private(path, normal_settings_text())
    if not path.is_file():
        raise ConfigError(f"no {path}; run `stackhop sdn midonet prepare --data-dir {data_dir}` "
                          "first")
    return path


def _save_before(data_dir: Path, dump_command: str, restore_command: str) -> str:
    if read_manifest(data_dir) is not None:
        return f"kept in {state_dir(data_dir)}"
    dump = run_command(dump_command, "dump", changed=False)
    directory = state_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o700)
    before = directory / BEFORE
    write_private(before, dump.decode("utf-8", errors="surrogateescape"))
    if before.read_bytes() != dump:
        raise ConfigError(f"{before} does not read back as dumped; check the disk")
    manifest = {"sha256": sha256(dump), "dump_command": dump_command,
                "restore_command": restore_command, "applied": []}
    write_private(directory / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return f"{len(dump)} bytes in {before}"


def _record(data_dir: Path, mode: str) -> None:
    manifest = read_manifest(data_dir) or {}
    manifest["applied"] = [*manifest.get("applied", []), mode]
    write_private(state_dir(data_dir) / MANIFEST, json.dumps(manifest, indent=2) + "\n")


def apply_settings(
    data_dir: Path,
    mode: str,
    journal: Journal,
    *,
    set_command: str = SET_COMMAND,
    dump_command: str = DUMP_COMMAND,
    restore_command: str = RESTORE_COMMAND,
    dry_run: bool = False,
    events: EventSink | None = None,
) -> ClusterResult:
    """Save the cluster configuration (once), then apply the ``mode`` settings file."""
    if dry_run and mode == "normal":
        settings = data_dir / NORMAL_SETTINGS_FILE  # written at apply time when missing
    else:
        settings = _settings_file(data_dir, mode)
    result = ClusterResult(str(data_dir), dry_run=dry_run)
    saved = read_manifest(data_dir) is not None
    if dry_run:
        result.steps["save cluster config"] = (
            f"kept in {state_dir(data_dir)}" if saved else
            f"would run {dump_command!r} and keep its output in {state_dir(data_dir) / BEFORE}")
        result.steps[f"apply {mode} settings"] = f"would run {set_command!r} < {settings}"
        return result
    runner = StepRunner(journal, "apply-settings", f"{data_dir.resolve()}:{mode}",
                        {"set_command": set_command, "dump_command": dump_command},
                        events or NullSink())
    try:
        result.steps["save cluster config"] = runner.step(
            "save cluster config", lambda: _save_before(data_dir, dump_command, restore_command))

        def apply() -> str:
            run_command(set_command, "mn-conf set", settings.read_bytes(), changed=True)
            _record(data_dir, mode)
            return f"{settings.name} applied with {set_command!r}"

        result.steps[f"apply {mode} settings"] = runner.step(f"apply {mode} settings", apply)
        runner.complete()
    except BaseException:
        runner.finish("failed")
        raise
    runner.finish("succeeded")
    return result


def would_revert(data_dir: Path) -> dict[str, str]:
    manifest = read_manifest(data_dir)
    if manifest is None:
        return {"cluster config": "no settings applied: nothing to restore"}
    return {"cluster config": f"would run {manifest['restore_command']!r} < "
                              f"{state_dir(data_dir) / BEFORE}, then check "
                              f"{manifest['dump_command']!r} gives the same bytes"}


def check_saved(data_dir: Path) -> None:
    """The saved configuration is intact (checked before a rollback changes anything)."""
    manifest = read_manifest(data_dir) or {}
    before = state_dir(data_dir) / BEFORE
    if not before.is_file() or sha256(before.read_bytes()) != manifest.get("sha256"):
        raise ConfigError(f"{before} is missing or does not match its manifest; restore it, "
                          "or restore the cluster configuration by hand")


def revert_steps(data_dir: Path, runner: StepRunner) -> dict[str, str]:
    """The revert's steps inside ``runner``: the saved dump back, checked, then dropped."""
    manifest = read_manifest(data_dir)
    if manifest is None:
        return {"cluster config": runner.previous("verify cluster config") or "not applied"}
    before = state_dir(data_dir) / BEFORE
    saved = before.read_bytes()
    if sha256(saved) != manifest["sha256"]:
        raise ConfigError(f"{before} does not match its manifest; it was modified")

    def restore() -> str:
        run_command(manifest["restore_command"], "mn-conf restore", saved, changed=True)
        return f"{before.name} applied with {manifest['restore_command']!r}"

    out = {"restore": runner.step("restore cluster config", restore)}

    def verify() -> str:
        now = run_command(manifest["dump_command"], "dump", changed=False)
        if now != saved:
            raise RollbackIncompleteError(
                detail=f"{manifest['dump_command']!r} differs from {before} after the restore")
        shutil.rmtree(state_dir(data_dir))
        return "cluster configuration byte-exact as saved"

    out["verified"] = runner.step("verify cluster config", verify)
    return out


def revert_settings(data_dir: Path, journal: Journal, *, dry_run: bool = False,
                    events: EventSink | None = None) -> ClusterResult:
    """``apply-settings --revert``: the cluster's configuration as it was before any settings."""
    result = ClusterResult(str(data_dir), dry_run=dry_run)
    if dry_run:
        result.steps = would_revert(data_dir)
        return result
    manifest = read_manifest(data_dir)
    runner = StepRunner(journal, "revert-settings",
                        f"{data_dir.resolve()}:{(manifest or {}).get('sha256', 'none')}",
                        {}, events or NullSink())
    try:
        result.steps = revert_steps(data_dir, runner)
        runner.complete()
    except BaseException:
        runner.finish("failed")
        raise
    runner.finish("succeeded")
    return result


def restart_neutron(command: str, journal: Journal, *, dry_run: bool = False,
                    events: EventSink | None = None) -> ClusterResult:
    """Run the neutron-server restart command as one journaled step."""
    result = ClusterResult(command, dry_run=dry_run)
    if dry_run:
        result.steps["restart neutron-server"] = f"would run {command!r}"
        return result
    runner = StepRunner(journal, "restart-neutron", command, {"command": command},
                        events or NullSink())

    def restart() -> str:
        run_command(command, "restart", changed=True)
        return f"ran {command!r}"

    try:
        result.steps["restart neutron-server"] = runner.step("restart neutron-server", restart)
        runner.complete()
    except BaseException:
        runner.finish("failed")
        raise
    runner.finish("succeeded")
    return result


def status(data_dir: Path) -> str:
    """One line for ``status``: which settings were applied, and whether a revert is pending."""
    manifest = read_manifest(data_dir)
    if manifest is None:
        return "no settings applied (nothing saved)"
    applied = ", ".join(manifest.get("applied", [])) or "none yet"
    return f"applied: {applied}; configuration before saved in {state_dir(data_dir) / BEFORE}"
