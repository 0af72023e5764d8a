"""Chaos run of ``stackhop project migrate``: the seeded project ``beta`` through API faults,
once per seed.

Per seed, in one go: the fault-injecting proxy
(:class:`tests.support.faultproxy.FaultProxy`) in front of every API of both clouds at
``--rate`` (5xx, 429 with ``Retry-After``, resets, stalls past the client's timeout,
answers lost after the request was applied), and ``stackhop project migrate --from
src-faulty --to dst-faulty --project beta --all-volumes`` re-run with the same journal
until every phase is done (at most ``--max-runs``; each stop before must be one line).
The volume data moves over ssh and Ceph as usual (the storage map names the faulty
clouds too); only the API calls cross the proxy. ``beta`` holds a dense 1 GiB Ceph
volume (rbd method), a sparse file-backed one (stream method), two security groups
(one refers to the other), quotas, its members' keypairs (frank's user is not on dst:
one conflict, every run) and an image.

Then, counted on dst by listing it directly, not through stackhop: each of beta's
volumes and groups once (duplicates, missing); ``stackhop verify`` of the run's resource
archive through the plain ``dst`` (frank's keypair the only mismatch). Then what the
runs made is removed (``testbed.undo``) and dst must list as before. (The volumes'
content is checked by the copy itself, against the source's digest, before a volume
counts as moved.)

    .venv/bin/python bench/chaos_project.py                      # seeds 17-21 at 10 %
    .venv/bin/python bench/chaos_project.py --seeds 3 --rate 0.2 --no-save

Results: ``bench/results/chaos-project-<date>.json`` and ``.md`` (with the command).
Goal (issue 17): every seed completes (directly or after re-runs), 0 duplicates,
0 missing, no verify mismatch but frank's keypair, dst as before afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from chaos_common import faulty_clouds, save_results, undo_through  # noqa: E402
from testbed import layout  # noqa: E402
from tests.support.beta import admin_role_in, dst_state  # noqa: E402
from tests.support.faultproxy import Faults  # noqa: E402

from stackhop.clouds import connect  # noqa: E402

PROJECT = "beta"
VOLUMES = ("beta-archive", "beta-logs")
GROUPS = ("ssh", "mgmt")
#: frank's keypair: its user is not on dst, a conflict every run reports (exit 10).
CONFLICT_EXIT = 10
EXPECTED_MISMATCH = "Default/frank/frank-deploy"


def _dst_state(project_id: str) -> dict[str, list[str]]:
    return dst_state(connect("dst"), project_id)


def _phases_done(report: Path) -> bool:
    if not report.exists():
        return False
    phases = json.loads(report.read_text()).get("phases", [])
    return bool(phases) and all(p["status"] in ("done", "done earlier") for p in phases)


def _one_seed(seed: int, rate: float, work: Path, max_runs: int,
              project_id: str, before: dict[str, list[str]]) -> dict[str, Any]:
    row: dict[str, Any] = {"seed": seed, "rate": rate}
    here = work / f"seed-{seed}"
    here.mkdir()
    journal, out = here / "journal.sqlite", here / "out"
    faults = Faults(rate=rate, seed=seed, stall_seconds=8, retry_after=1)
    started = time.monotonic()
    with faulty_clouds(faults, here) as (proxy, env):
        try:
            row.update(_migrate(env, journal, out, max_runs))
            row["seconds"] = round(time.monotonic() - started, 1)
            row["requests"] = len(proxy.log)
            row["faults"] = dict(Counter(d.fault for d in proxy.faulted()))
            row.update(_counted(project_id, before))
            row.update(_verified(env, out / "resources.tar.zst"))
        finally:
            # The runs' destination is dst-faulty: undone through the proxy, faults off.
            row.update(undo_through(proxy, env, journal))
    row["dst_as_before"] = _dst_state(project_id) == before
    return row


def _migrate(env: dict[str, str], journal: Path, out: Path, max_runs: int) -> dict[str, Any]:
    """``project migrate`` through the proxy, re-run until every phase is done."""
    argv = ["--journal", str(journal), "project", "migrate", "--from", "src-faulty",
            "--to", "dst-faulty", "--project", PROJECT, "--all-volumes", "-o", str(out)]
    stops: list[str] = []
    exits: list[int] = []
    for _ in range(max_runs):
        proc = subprocess.run([sys.executable, "-m", "stackhop.cli.main", *argv],
                              env=env, capture_output=True, text=True, check=False)
        exits.append(proc.returncode)
        if _phases_done(out / "report.json") and proc.returncode in (0, CONFLICT_EXIT):
            break
        lines = proc.stderr.strip().splitlines()
        one_line = bool(lines) and lines[-1].startswith("stackhop")
        one_line = one_line and "Traceback" not in proc.stderr
        stops.append(lines[-1] if one_line else f"NOT ONE LINE: {proc.stderr[-600:]}")
    return {"runs": len(exits), "exits": exits, "stops": stops,
            "completed": _phases_done(out / "report.json")}


def _counted(project_id: str, before: dict[str, list[str]]) -> dict[str, int]:
    """Duplicates and missing objects of beta's on dst, by an independent listing."""
    after = _dst_state(project_id)
    row: dict[str, int] = {}
    for what, moved in (("volumes", VOLUMES), ("groups", GROUPS)):
        counts = Counter(after[what])
        row[f"duplicate_{what}"] = sum(max(0, counts[n] - 1 - before[what].count(n))
                                       for n in moved)
        row[f"missing_{what}"] = sum(counts[n] <= before[what].count(n) for n in moved)
    return row


def _verified(env: dict[str, str], archive: Path) -> dict[str, Any]:
    """``stackhop verify`` of the run's resource archive against the plain dst."""
    if not archive.exists():
        return {"verify_exit": None, "mismatches": ["no resource archive written"]}
    verify = subprocess.run(
        [sys.executable, "-m", "stackhop.cli.main", "verify", "--to", "dst", str(archive),
         "-f", "json"],
        env=env, capture_output=True, text=True, check=False)
    try:
        found = json.loads(verify.stdout)["mismatches"]
    except (ValueError, KeyError):
        found = [{"identity": f"unreadable verify output: {verify.stderr[-300:]}"}]
    # frank's keypair is expected: its user is not on dst (the seed's conflict).
    return {"verify_exit": verify.returncode,
            "mismatches": [m["identity"] for m in found if m["identity"] != EXPECTED_MISMATCH]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seeds", default="17,18,19,20,21")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--max-runs", type=int, default=5)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", str(layout.CLOUDS_YAML))
    os.environ.setdefault("STACKHOP_SSH_CONFIG", str(layout.SSH_DIR / "ssh_config"))
    src = connect("src")
    project_id = str(src.identity.find_project(PROJECT, domain_id="default",
                                               ignore_missing=False).id)
    before = _dst_state(project_id)
    rows: list[dict[str, Any]] = []
    with admin_role_in(connect("dst"), PROJECT), tempfile.TemporaryDirectory(
        prefix="stackhop-chaos-project-"
    ) as tmp:
        for seed in (int(s) for s in args.seeds.split(",")):
            rows.append(_one_seed(seed, args.rate, Path(tmp), args.max_runs, project_id, before))
            print(json.dumps(rows[-1]), flush=True)
    ok = all(
        r["completed"] and r["duplicate_volumes"] == 0 and r["duplicate_groups"] == 0
        and r["missing_volumes"] == 0 and r["missing_groups"] == 0
        and not r["mismatches"] and r["dst_as_before"]
        and not any(s.startswith("NOT ONE LINE") for s in r["stops"])
        for r in rows
    )
    table = ["| seed | rate | requests | faults | runs | seconds | dup volumes | dup groups "
             "| missing | verify: other mismatches | dst as before |", "|" + "---|" * 11]
    for r in rows:
        table.append(
            f"| {r['seed']} | {r['rate']} | {r['requests']} | {sum(r['faults'].values())} "
            f"| {r['runs']} | {r['seconds']} | {r['duplicate_volumes']} "
            f"| {r['duplicate_groups']} | {r['missing_volumes'] + r['missing_groups']} "
            f"| {len(r['mismatches'])} | {r['dst_as_before']} |"
        )
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            f"chaos-project-{dt.date.today().isoformat()}", "chaos_project.py", argv,
            {"rate": args.rate, "rows": rows, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
