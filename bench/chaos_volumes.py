"""Kill trials of ``volumes copy``: ``kill -9`` at a random moment, re-run, count copies.

Makes a project of its own on both clouds (``shvolchaos-<id>``) holding, per
method, ``--volumes`` 1 GiB volumes with known pseudo-random MiBs (``file``
volumes for the ``stream`` and ``image`` methods, ``ceph`` volumes for
``rbd``). Then, per method, one uninterrupted copy measures how long a run
takes, and ``--kills`` trials each:

1. start ``stackhop volumes copy --all --method M`` with a fresh journal and
   ``kill -9`` it after a random delay (up to the uninterrupted run's time);
2. half the kills delete the journal (the re-run knows nothing), or every
   one (``--journal deleted``), or none (``--journal kept``); a trial whose copy was done
   before its kill does not count, trials go on until ``--kills`` killed it
   (``chaos_common.kill_trials``);
3. re-run until it exits 0 (at most ``--max-runs``), then count, per source
   volume, the destination volumes carrying its marker (a duplicate is a
   failure) and read each back from its backend: its content digest must be
   the source's;
4. ``volumes cleanup`` of every run of the journal (a kept journal must know
   every temporary: none may be left), then the destination volumes go, so
   the next trial starts from nothing.

Everything it made is removed at the end.

    .venv/bin/python bench/chaos_volumes.py                        # 4 trials per method
    .venv/bin/python bench/chaos_volumes.py --methods rbd --kills 20 --seed 3
    .venv/bin/python bench/chaos_volumes.py --kills 1 --volumes 1 --journal deleted --no-save

Results: ``bench/results/chaos-volumes-<date>.json`` and ``.md`` (with the
command). Goal (issue 17): 0 duplicates, 0 missing, every digest equal,
with the journal kept and deleted.
"""

from __future__ import annotations

import argparse
import functools
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from chaos_common import kill_trials, results_name, save_results  # noqa: E402
from testbed import outputs  # noqa: E402

for _line in outputs.env_lines():  # the testbed's environment, as `source env.sh` gives it
    if _line.startswith("export "):
        _key, _, _value = _line[len("export ") :].partition("=")
        os.environ.setdefault(_key, _value)

from tests.functional.rbd_support import expected_digest as rbd_expected  # noqa: E402
from tests.functional.rbd_support import write_image  # noqa: E402
from tests.functional.volumes_support import (  # noqa: E402
    Sandbox,
    digest_of,
    expected_digest,
    file_backend_path,
    write_pattern,
)

from stackhop.journal import Journal  # noqa: E402
from stackhop.volumes.cinder_adopt import MARKER  # noqa: E402
from stackhop.volumes.rbd import cluster_of  # noqa: E402
from stackhop.volumes.storage import load_storage_map  # noqa: E402

GIB = 1024**3
MIB = 1024**2
PIECES = [0, 3, 4, 9, 200, 201, 511, 1023] + list(range(600, 640))
RBD_WRITES = [(0, 2 * MIB, 1), (300 * MIB + 4096, 24 * MIB, 2), (1020 * MIB, 4 * MIB, 3)]
TYPES = {"stream": "file", "image": "file", "rbd": "ceph"}


def _volumes(box: Sandbox, method: str, count: int) -> dict[str, str]:
    """``count`` source volumes for ``method`` with known content: {id: expected digest}."""
    made: dict[str, str] = {}
    for n in range(count):
        volume = box.volume(f"{method}-{n}", volume_type=TYPES[method])
        if method == "rbd":
            backend = load_storage_map().backend("src", "ceph")
            writes = [(o, n_bytes, seed + 10 * n) for o, n_bytes, seed in RBD_WRITES]
            write_image(backend, f"volume-{volume.id}", writes)
            made[volume.id] = rbd_expected(GIB, writes)
        else:
            write_pattern(file_backend_path("src", volume.id), f"{method}{n}", PIECES)
            made[volume.id] = expected_digest(GIB, f"{method}{n}", PIECES)
    return made


def _cli(env: dict[str, str], argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                          capture_output=True, text=True, check=False)


def _until_zero(env: dict[str, str], argv: list[str], max_runs: int) -> dict[str, Any]:
    started, stops = time.monotonic(), list[str]()
    for _ in range(max_runs):
        proc = _cli(env, argv)
        if proc.returncode == 0:
            return {"runs": len(stops) + 1, "seconds": round(time.monotonic() - started, 2),
                    "stops": stops, "completed": True}
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        stops.append(lines[-1] if "Traceback" not in proc.stderr else
                     f"NOT ONE LINE: {proc.stderr[-400:]}")
    return {"runs": max_runs, "seconds": round(time.monotonic() - started, 2), "stops": stops,
            "completed": False}


def _copy_argv(box: Sandbox, journal: Path | str, method: str, names: list[str]) -> list[str]:
    selection = [a for name in names for a in ("--volume", name)]
    return ["--journal", str(journal), "volumes", "copy", "--from", "src", "--to", "dst",
            "--project", box.name, "--method", method, *selection]


def _check(box: Sandbox, sources: dict[str, str]) -> dict[str, Any]:
    """Duplicates, missing copies and digest mismatches on dst, by marker."""
    copies: dict[str, list[str]] = {source: [] for source in sources}
    for volume in box.volumes("dst"):
        marked = (volume.metadata or {}).get(MARKER, "")
        source = marked.rsplit(":", 1)[-1]  # the stream method's marker is <cloud>:<id>
        if source in copies:
            copies[source].append(volume.id)
    wrong = [s for s, ids in copies.items() if len(ids) == 1 and digest_of("dst", ids[0])
             != sources[s]]
    return {"duplicates": sum(max(0, len(ids) - 1) for ids in copies.values()),
            "missing": sum(1 for ids in copies.values() if not ids),
            "digest_mismatches": len(wrong)}


def _clear_dst(box: Sandbox, env: dict[str, str], journal: Path | str) -> int:
    """``volumes cleanup`` of the journal's runs (temporaries left: counted), then every dst
    volume of the box (and its stackhop snapshots) goes. ``journal``: a file or a URL."""
    failed = 0
    if not isinstance(journal, Path) or journal.exists():
        with Journal(journal) as j:
            runs = [r.id for r in j.runs()]
        for run in runs:
            proc = _cli(env, ["--journal", str(journal), "volumes", "cleanup", "--run", run,
                              "--end-chains", "-f", "json"])
            failed += proc.returncode != 0
    _drop_snapshots(box, "dst")
    for volume in box.volumes("dst"):
        box.dst.block_storage.delete_volume(volume, force=True)
    for volume in box.volumes("dst"):
        box.dst.block_storage.wait_for_delete(volume, interval=1, wait=300)
    return failed


def _drop_snapshots(box: Sandbox, side: str) -> int:
    """Remove the ``stackhop-*`` RBD snapshots of the box's ceph volumes on ``side`` (a
    killed run's, when its journal was deleted: nothing else knows them)."""
    backend = load_storage_map().backend(side, "ceph")
    cluster = cluster_of(backend)
    dropped = 0
    for volume in box.volumes(side):
        if volume.volume_type != "ceph":
            continue
        image = f"volume-{volume.id}"
        for snap in cluster.snapshots(image):
            if snap.startswith("stackhop-"):
                cluster.remove_snapshot(image, snap)
                dropped += 1
    return dropped


def _trial(box: Sandbox, env: dict[str, str], method: str, sources: dict[str, str],
           names: list[str], work: Path, at: float, keep: bool, max_runs: int) -> dict[str, Any]:
    journal = work / f"{method}-{time.monotonic_ns()}.sqlite"
    argv = _copy_argv(box, journal, method, names)
    with subprocess.Popen([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            proc.wait(at)
            finished = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # our own child, by its handle
            proc.wait()
            finished = False
    if not keep:
        journal.unlink(missing_ok=True)
    row: dict[str, Any] = {"method": method, "journal": "kept" if keep else "deleted",
                           "killed_at_s": round(at, 2), "finished_before_kill": finished}
    row["rerun"] = _until_zero(env, argv, max_runs)
    row.update(_check(box, sources))
    row["cleanup_failed"] = _clear_dst(box, env, journal)
    # Temporary images (image method) no cleanup found: a killed run's, its journal lost.
    row["stale_images"] = 0
    for side, conn in (("src", box.src), ("dst", box.dst)):
        for image in box.images(side):
            conn.image.delete(f"/images/{image['id']}")
            row["stale_images"] += 1
    row["stale_source_snapshots"] = _drop_snapshots(box, "src") if method == "rbd" else 0
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--methods", default="stream,rbd,image")
    parser.add_argument("--volumes", type=int, default=2)
    parser.add_argument("--kills", type=int, default=4, help="trials per method (half with "
                        "the journal deleted)")
    parser.add_argument("--journal", choices=("both", "kept", "deleted"), default="both",
                        help="what happens to the killed run's journal (both: alternately)")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-runs", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--label", help="results as chaos-volumes-<date>-LABEL")
    args = parser.parse_args(argv)
    env = {**os.environ,
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    box = Sandbox.create("shvolchaos")
    try:
        with tempfile.TemporaryDirectory(prefix="stackhop-volchaos-") as tmp:
            work = Path(tmp)
            for method in args.methods.split(","):
                sources = _volumes(box, method, args.volumes)
                names = [f"{method}-{n}" for n in range(args.volumes)]
                journal = work / f"{method}-baseline.sqlite"
                first = _until_zero(env, _copy_argv(box, journal, method, names), 1)
                baselines[method] = first["seconds"]
                _clear_dst(box, env, journal)
                rows += kill_trials(
                    args.kills, args.journal, rng, first["seconds"],
                    functools.partial(_trial, box, env, method, sources, names, work,
                                      max_runs=args.max_runs))
    finally:
        _drop_snapshots(box, "src")
        box.close()
    ok = all(
        r["rerun"]["completed"] and r["duplicates"] == 0 and r["missing"] == 0
        and r["digest_mismatches"] == 0 and r["cleanup_failed"] == 0
        and r["stale_source_snapshots"] == 0
        and not any(s.startswith("NOT ONE LINE") for s in r["rerun"]["stops"])
        for r in rows
    )
    table = ["| method | journal | trials | killed before the end | re-runs | duplicates | missing "
             "| digests wrong | cleanup failed | stale source snapshots | stale images |",
             "|" + "---|" * 11]
    for method in args.methods.split(","):
        for kept in ("kept", "deleted"):
            these = [r for r in rows if r["method"] == method and r["journal"] == kept]
            if not these:
                continue
            table.append(
                f"| {method} | {kept} | {len(these)} "
                f"| {sum(not r['finished_before_kill'] for r in these)} "
                f"| {sum(r['rerun']['runs'] for r in these)} "
                f"| {sum(r['duplicates'] for r in these)} | {sum(r['missing'] for r in these)} "
                f"| {sum(r['digest_mismatches'] for r in these)} "
                f"| {sum(r['cleanup_failed'] for r in these)} "
                f"| {sum(r['stale_source_snapshots'] for r in these)} "
                f"| {sum(r['stale_images'] for r in these)} |"
            )
    table.append("")
    table.append("Uninterrupted run, s: " + ", ".join(f"{m} {s}" for m, s in baselines.items()))
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            results_name("chaos-volumes", args.label), "chaos_volumes.py", argv,
            {"seed": args.seed, "rows": rows, "baselines": baselines, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
