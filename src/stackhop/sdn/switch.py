"""``switch-endpoints`` and ``switch-endpoints --revert``: journaled runs of :mod:`.endpoints`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

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


def switch(
    root: Path,
    port: int,
    journal: Journal,
    *,
    backup: Path | None = None,
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> SwitchResult:
    """Back up then rewrite every endpoint file under ``root`` to ``port``.

    With ``backup``, that ZooKeeper backup must be intact before any file is
    touched: the switch is the point after which a rollback may be needed.
    """
    sink = events or NullSink()
    if backup is not None:
        backup_file.read(backup)
    manifest = endpoints.plan_switch(root, port)  # every file parsed before any is written
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
    pre_hook: str | None = None,
    post_hook: str | None = None,
    events: EventSink | None = None,
) -> SwitchResult:
    """Restore every switched file under ``root`` from its byte-exact backup."""
    sink = events or NullSink()
    if not root.is_dir():
        raise ConfigError(f"--config-root {root} is not a directory")
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
