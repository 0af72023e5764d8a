"""``switch-endpoints`` and ``switch-endpoints --revert``: journaled runs of :mod:`.endpoints`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from stackhop.errors import ConfigError
from stackhop.events import EventSink, NullSink
from stackhop.journal import Journal
from stackhop.sdn import backup_file, endpoints
from stackhop.sdn.errors import RollbackIncompleteError
from stackhop.sdn.steps import StepRunner, run_hook


@dataclass
class SwitchResult:
    """Per file, what happened."""

    config_root: str
    port: int | None
    files: dict[str, str] = field(default_factory=dict)
    dry_run: bool = False


def switch(
    root: Path,
    port: int,
    journal: Journal,
    *,
    backup: Path | None = None,
    midonetrc: Path | None = None,
    dry_run: bool = False,
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> SwitchResult:
    """Back up then rewrite every endpoint file under ``root`` (and ``midonetrc``) to ``port``.

    With ``backup``, that ZooKeeper backup must be intact before any file is
    touched: the switch is the point after which a rollback may be needed.
    ``dry_run``: every check, then what each file would become; nothing written.
    """
    sink = events or NullSink()
    if backup is not None:
        backup_file.read(backup)
    # every file parsed before any is written
    manifest = endpoints.plan_switch(root, port, midonetrc)
    if dry_run:
        return SwitchResult(str(root), port, {
            relative: _would_switch(root, relative, entry, port)
            for relative, entry in manifest["files"].items()
        }, dry_run=True)
    run_hook(pre_hook, which="pre", step="switch-endpoints", changed=False, events=sink)
    runner = StepRunner(journal, "switch-endpoints", f"{root.resolve()}:{manifest['cycle']}",
                        {"port": port}, sink)
    result = SwitchResult(str(root), port)
    try:
        runner.step("backup originals", lambda: endpoints.save_backups(root, manifest))
        for relative, entry in manifest["files"].items():
            result.files[relative] = runner.step(
                f"switch {relative}", partial(endpoints.switch_file, root, relative, entry, port)
            )
        runner.complete()
    except BaseException:
        runner.finish("failed")
        raise
    runner.finish("succeeded")
    run_hook(post_hook, which="post", step="switch-endpoints", changed=True, events=sink)
    return result


def _would_switch(root: Path, relative: str, entry: dict[str, Any], port: int) -> str:
    digest = endpoints.sha256((root / relative).read_bytes())
    if digest == entry["switched_sha256"]:
        return "already switched"
    if digest != entry["original_sha256"]:
        return "edited since the switch began: would stop (exit 10)"
    return (f"would set the port of [{entry['section']}] {entry['key']} to {port}, "
            f"after copying the file to {endpoints.BACKUP_DIR}")


def would_revert(root: Path, force: bool = False) -> dict[str, str]:
    """What a revert of ``root`` would do to each file (nothing is written)."""
    manifest = endpoints.read_manifest(root)
    if manifest is None:
        return {"endpoints": "not switched: nothing to revert"}
    endpoints.check_revertible(root, manifest, force)
    out = {}
    for relative, entry in manifest["files"].items():
        path = root / relative
        digest = endpoints.sha256(path.read_bytes()) if path.is_file() else None
        out[relative] = ("already original" if digest == entry["original_sha256"]
                         else "would write back the original bytes, mode, owner and group")
    return out


def revert_steps(root: Path, runner: StepRunner, *, force: bool) -> dict[str, str]:
    """The revert's steps inside ``runner``: each file back, verified, then backups dropped."""
    manifest = endpoints.read_manifest(root)
    if manifest is None:
        # Either never switched, or an earlier attempt of this cycle finished the revert.
        return {"endpoints": runner.previous("verify endpoints") or "not switched"}
    files: dict[str, str] = {}
    for relative, entry in manifest["files"].items():
        files[relative] = runner.step(
            f"revert {relative}", partial(endpoints.revert_file, root, relative, entry, force)
        )

    def verify() -> str:
        wrong = endpoints.reverted_correctly(root, manifest)
        if wrong:
            raise RollbackIncompleteError(detail="config files not restored: " + ", ".join(wrong))
        endpoints.drop_backups(root)
        return "byte-exact"

    files["verified"] = runner.step("verify endpoints", verify)
    return files


def revert(
    root: Path,
    journal: Journal,
    *,
    force: bool = False,
    dry_run: bool = False,
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> SwitchResult:
    """Restore every switched file under ``root`` from its byte-exact backup."""
    sink = events or NullSink()
    if not root.is_dir():
        raise ConfigError(f"--config-root {root} is not a directory")
    if dry_run:
        return SwitchResult(str(root), None, would_revert(root, force), dry_run=True)
    manifest = endpoints.read_manifest(root)
    if manifest is not None:
        endpoints.check_revertible(root, manifest, force)  # before any file is written
    cycle = manifest["cycle"] if manifest else "none"
    run_hook(pre_hook, which="pre", step="switch-endpoints --revert", changed=False, events=sink)
    runner = StepRunner(journal, "revert-endpoints", f"{root.resolve()}:{cycle}", {}, sink)
    try:
        files = revert_steps(root, runner, force=force)
        runner.complete()
    except BaseException:
        runner.finish("failed")
        raise
    runner.finish("succeeded")
    run_hook(post_hook, which="post", step="switch-endpoints --revert", changed=True, events=sink)
    return SwitchResult(str(root), None, files)
