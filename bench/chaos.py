"""Chaos run: import and roll back a tenant through a fault-injecting proxy, at several fault rates.

Creates a project of its own (``shchaos-<id>``, on both clouds, so it maps by
name) holding ``--groups`` security groups on src with ``--rules`` rules each
(one naming another group), and sets its quotas on src. Then, per fault rate,
in one go so the rates compare on a noisy machine:

1. ``stackhop export`` from ``src-faulty``, ``stackhop import`` into
   ``dst-faulty`` (both through :class:`tests.support.faultproxy.FaultProxy`,
   every API of both clouds, faults at that rate: 5xx, 429, resets, stalls past
   the client's timeout, answers lost after the request was applied), re-run
   until it exits 0 (at most ``--max-runs``);
2. an independent listing of dst counts duplicates (a group or a rule twice)
   and what is missing; ``stackhop verify`` through the plain ``dst``;
3. ``stackhop rollback`` through the proxy, re-run until 0; the listing again
   counts what is left.

With ``--kills N``, then trials of ``kill -9`` of a plain import at a random
moment (up to the longest import seen) until N of them killed it before its end
(``chaos_common.kill_trials``: half with the journal kept, half with it deleted),
each re-run until it exits 0; duplicates, missing groups and verify
are checked, then the rollback. With the journal lost, the re-run finds what
the killed run made by its marker and keeps it without a journal row of its
own, so the rollback of the re-run leaves it (reported, not a failure: the
lost run's record is gone); the trial clears it before the next.

Everything it made is removed at the end.

    .venv/bin/python bench/chaos.py                                # rates 0, 0.05, 0.1, 0.2
    .venv/bin/python bench/chaos.py --rates 0,0.3 --groups 40 --seed 3
    .venv/bin/python bench/chaos.py --rates 0 --kills 20              # kill -9 trials

Results: ``bench/results/chaos-<date>.json`` and ``.md`` (with the command).
Goal (issue 17): no duplicate, nothing missing, nothing left after the
rollback, at every rate; each run completes or stops with one line and a
re-run completes.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from chaos_common import (  # noqa: E402
    dst_listing,
    kill_trials,
    remove_security_group_tenant,
    results_name,
    save_results,
    security_group_tenant,
    until_zero,
)
from tests.support.faultproxy import (  # noqa: E402
    FaultProxy,
    Faults,
    catalog_upstreams,
    write_clouds_yaml,
)

from stackhop.clouds import connect  # noqa: E402
from stackhop.kinds.base import Kind  # noqa: E402
from stackhop.kinds.rest import call, paged  # noqa: E402


def _one_rate(rate: float, seed: int, made: dict[str, Any], work: Path,
              max_runs: int) -> dict[str, Any]:
    upstreams = catalog_upstreams(connect("src")) | catalog_upstreams(connect("dst"))
    faults = Faults(rate=rate, seed=seed, stall_seconds=8)
    row: dict[str, Any] = {"rate": rate}
    with FaultProxy(sorted(upstreams), faults) as proxy:
        path = write_clouds_yaml(proxy, Path(os.environ["OS_CLIENT_CONFIG_FILE"]),
                                 work / f"clouds-{rate}.yaml", ["src", "dst"], timeout=4)
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(path),
               "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        archive, journal = work / f"a-{rate}.tar.zst", work / f"j-{rate}.sqlite"
        selection = ["--security-groups", "--quotas", "--project", made["name"]]
        row["export"] = until_zero(env, ["export", "--from", "src-faulty", "-o", str(archive),
                                          *selection], max_runs)
        row["import"] = until_zero(env, ["--journal", str(journal), "import", "--to",
                                          "dst-faulty", str(archive), *selection[:2]], max_runs)
        marks, rules = dst_listing(made)
        row["groups_on_dst"] = sum(marks.values())
        row["duplicate_groups"] = sum(n - 1 for n in marks.values() if n > 1)
        row["duplicate_rules"] = sum(n - 1 for n in rules.values() if n > 1)
        row["missing_groups"] = len(set(made["groups"]) - set(marks))
        verify = subprocess.run([sys.executable, "-m", "stackhop.cli.main", "verify", "--to",
                                 "dst", str(archive), *selection[:2]], env=env,
                                capture_output=True, text=True, check=False)
        row["verify_exit"] = verify.returncode
        from stackhop.journal import Journal

        with Journal(journal) as j:
            runs = [a for r in j.runs() for a in ("--run", r.id)]
        row["rollback"] = until_zero(env, ["--journal", str(journal), "rollback", "--to",
                                            "dst-faulty", *runs], max_runs)
        marks_after, rules_after = dst_listing(made)
        row["left_after_rollback"] = sum(marks_after.values()) + sum(rules_after.values())
        row["faults"] = dict(Counter(d.fault for d in proxy.faulted()))
        row["requests"] = len(proxy.log)
    return row


def _kill_trial(
    made: dict[str, Any], work: Path, *, at: float, keep: bool, max_runs: int,
) -> dict[str, Any]:
    """``kill -9`` of an import at a random moment, then re-runs (the journal kept or deleted)."""
    env = {**os.environ,
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    archive, journal = work / "kill.tar.zst", work / f"kill-{time.monotonic_ns()}.sqlite"
    selection = ["--security-groups", "--quotas"]
    if not archive.exists():
        subprocess.run([sys.executable, "-m", "stackhop.cli.main", "export", "--from", "src",
                        "-o", str(archive), *selection, "--project", made["name"]],
                       env=env, check=True, capture_output=True)
    argv = ["--journal", str(journal), "import", "--to", "dst", str(archive), *selection]
    with subprocess.Popen([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        try:
            proc.wait(at)
            finished_first = True
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)  # our own child, by its handle
            proc.wait()
            finished_first = False
    if not keep:
        journal.unlink(missing_ok=True)
    row: dict[str, Any] = {"journal": "kept" if keep else "deleted",
                           "killed_at_s": round(at, 2), "finished_before_kill": finished_first}
    row["rerun"] = until_zero(env, argv, max_runs)
    marks, rules = dst_listing(made)
    row["duplicate_groups"] = sum(n - 1 for n in marks.values() if n > 1)
    row["duplicate_rules"] = sum(n - 1 for n in rules.values() if n > 1)
    row["missing_groups"] = len(set(made["groups"]) - set(marks))
    row["verify_exit"] = subprocess.run(
        [sys.executable, "-m", "stackhop.cli.main", "verify", "--to", "dst", str(archive),
         *selection], env=env, capture_output=True, check=False).returncode
    from stackhop.journal import Journal

    with Journal(journal) as j:
        runs = [a for r in j.runs() for a in ("--run", r.id)]
    row["rollback"] = until_zero(env, ["--journal", str(journal), "rollback", "--to", "dst",
                                        *runs], max_runs)
    marks_after, rules_after = dst_listing(made)
    row["left_after_rollback"] = sum(marks_after.values()) + sum(rules_after.values())
    # With the journal lost, the re-run finds what the killed run made by its marker and
    # leaves it be (it cannot know that run made it): a rollback of the re-run keeps it.
    # Cleared here, so the next trial starts from an empty project.
    dst = connect("dst")
    for group in paged(dst.network, f"/security-groups?project_id={made['dst_project']}",
                       "security_groups"):
        if Kind.marked_source_id(group.get("description") or ""):
            call(dst.network, "DELETE", f"/security-groups/{group['id']}", missing_ok=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rates", default="0,0.05,0.1,0.2")
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--rules", type=int, default=5)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-runs", type=int, default=4)
    parser.add_argument("--kills", type=int, default=0,
                        help="kill -9 trials of the import (half with the journal deleted)")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--label", help="results as chaos-<date>-LABEL")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",")]
    made = security_group_tenant(f"shchaos-{uuid.uuid4().hex[:6]}", args.groups, args.rules)
    rows: list[dict[str, Any]] = []
    kills: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    try:
        with tempfile.TemporaryDirectory(prefix="stackhop-chaos-") as tmp:
            for rate in rates:
                rows.append(_one_rate(rate, args.seed, made, Path(tmp), args.max_runs))
                print(json.dumps(rows[-1]), flush=True)
            longest = max([r["import"]["seconds"] for r in rows] or [20.0])
            kills += kill_trials(args.kills, "both", rng, longest, functools.partial(
                _kill_trial, made, Path(tmp), max_runs=args.max_runs))
    finally:
        remove_security_group_tenant(made)
    ok = all(
        r["import"]["completed"] and r["rollback"]["completed"] and r["duplicate_groups"] == 0
        and r["duplicate_rules"] == 0 and r["missing_groups"] == 0 and r["verify_exit"] == 0
        and r["left_after_rollback"] == 0
        and not any(s.startswith("NOT ONE LINE") for p in ("export", "import", "rollback")
                    for s in r[p]["stops"])
        for r in rows
    ) and all(
        k["rerun"]["completed"] and k["rollback"]["completed"] and k["duplicate_groups"] == 0
        and k["duplicate_rules"] == 0 and k["missing_groups"] == 0 and k["verify_exit"] == 0
        and (k["left_after_rollback"] == 0 or k["journal"] == "deleted")
        for k in kills
    )
    table = ["| rate | requests | faults | import runs | import s | dup groups | dup rules "
             "| missing | verify | rollback runs | left |", "|" + "---|" * 11]
    for r in rows:
        table.append(
            f"| {r['rate']} | {r['requests']} | {sum(r['faults'].values())} "
            f"| {r['import']['runs']} | {r['import']['seconds']} | {r['duplicate_groups']} "
            f"| {r['duplicate_rules']} | {r['missing_groups']} | {r['verify_exit']} "
            f"| {r['rollback']['runs']} | {r['left_after_rollback']} |"
        )
    if kills:
        table += ["", "| kill -9 trials | journal | killed before the end | re-runs | dup groups "
                  "| dup rules | missing | verify 0 | left after rollback |", "|" + "---|" * 9]
        for journal in ("kept", "deleted"):
            these = [k for k in kills if k["journal"] == journal]
            table.append(
                f"| {len(these)} | {journal} | {sum(not k['finished_before_kill'] for k in these)} "
                f"| {sum(k['rerun']['runs'] for k in these)} "
                f"| {sum(k['duplicate_groups'] for k in these)} "
                f"| {sum(k['duplicate_rules'] for k in these)} "
                f"| {sum(k['missing_groups'] for k in these)} "
                f"| {sum(k['verify_exit'] == 0 for k in these)} "
                f"| {sum(k['left_after_rollback'] for k in these)} |"
            )
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            results_name("chaos", args.label), "chaos.py", argv,
            {"groups": args.groups, "rules": args.rules, "seed": args.seed, "rows": rows,
             "kills": kills, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
