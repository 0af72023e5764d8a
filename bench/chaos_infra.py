"""Infrastructure faults mid-copy: the journal's SQL server restarted, a Ceph OSD stopped, an
ssh session cut — each while a ``volumes copy`` runs, then counted.

Makes a project of its own on both clouds (``shinfra-<id>``, as
``bench/chaos_volumes.py`` does) with one 1 GiB volume of known content per
method, and per trial:

``sql``
    ``volumes copy --method rbd`` with its journal on the testbed's PostgreSQL
    (a database of its own per trial; the password in ``PGPASSWORD``, never on
    a command line); at a seeded random moment the server is stopped, kept
    down ``--down`` seconds and started again (the testbed's PostgreSQL holds
    no live cloud's database: nothing else notices).
``osd``
    ``volumes copy --method rbd``; the only OSD of the destination's Ceph
    (the source's, every other trial) is stopped, kept down ``--down``
    seconds and started again: every read or write of that cluster waits.
``ssh``
    ``volumes copy --method stream``; every session of the source storage
    host's sshd is killed (``kill -9``): the copy's ssh leg breaks as on a
    network cut.

The run either rides the fault out or stops with one line; then it is re-run
with the same journal until it exits 0 (at most ``--max-runs``). Counted on
dst by marker, independently of stackhop: no second copy, none missing, the
copy's content read back from its backend equal to the source's; then
``volumes cleanup`` of every run (it must succeed) and the copy goes.

    .venv/bin/python bench/chaos_infra.py                     # 3 trials per fault
    .venv/bin/python bench/chaos_infra.py --faults sql --trials 1 --no-save

Results: ``bench/results/chaos-infra-<date>.json`` and ``.md`` (with the
command). Goal (issue 17): every trial completes (directly or after re-runs),
0 duplicates, 0 missing, every digest equal, every stop one line.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from chaos_volumes import (  # noqa: E402, I001  (it puts src/ and the testbed's env in place)
    _check,
    _clear_dst,
    _copy_argv,
    _drop_snapshots,
    _until_zero,
    _volumes,
)
from chaos_common import save_results  # noqa: E402, I001  (after chaos_volumes: paths)
from testbed import layout  # noqa: E402
from testbed.infra import postgresql  # noqa: E402
from testbed.infra.ceph import osd_daemon  # noqa: E402
from tests.functional.volumes_support import Sandbox, src_sshd_sessions  # noqa: E402

METHODS = {"sql": "rbd", "osd": "rbd", "ssh": "stream"}


def _restart_postgresql(down: float, _trial: int, _alive: Callable[[], bool]) -> str | None:
    """A restart as ``systemctl restart`` makes it: PostgreSQL's fast shutdown (SIGINT)
    ends every session at once (SIGTERM's smart one would wait for the copy to end)."""
    server = postgresql.daemon()
    pid = server.pid()
    if pid is None:
        raise RuntimeError("the testbed's PostgreSQL is not running")
    os.kill(pid, signal.SIGINT)  # the postmaster the testbed started
    deadline = time.monotonic() + 30
    while server.running() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(down)
    server.ensure()
    return "postgresql"


def _restart_osd(down: float, trial: int, _alive: Callable[[], bool]) -> str | None:
    side = layout.DST if trial % 2 == 0 else layout.SRC
    osd = osd_daemon(side)
    osd.stop()
    time.sleep(down)
    osd.ensure()
    return f"ceph-{side.name} osd"


def _cut_ssh(_down: float, _trial: int, alive: Callable[[], bool]) -> str | None:
    """Kill the sessions once the copy has one (its ssh legs open after the API calls)."""
    sessions = src_sshd_sessions()
    while not sessions and alive():
        time.sleep(0.1)
        sessions = src_sshd_sessions()
    killed = 0
    for pid in sessions:
        try:
            os.kill(pid, signal.SIGKILL)  # a session of our testbed's sshd
            killed += 1
        except ProcessLookupError:
            continue
    return f"{killed} src-storage ssh session(s)" if killed else None


#: Each fault, given how long to stay down, the trial's number and whether the copy still
#: runs; returns what it hit, or None when the copy ended before it could.
FAULTS: dict[str, Callable[[float, int, Callable[[], bool]], str | None]] = {
    "sql": _restart_postgresql, "osd": _restart_osd, "ssh": _cut_ssh}


def _journal(fault: str, work: Path, n: int) -> Path | str:
    """A fresh journal: a PostgreSQL database for ``sql``, a file otherwise."""
    if fault != "sql":
        return work / f"{fault}-{n}-{time.monotonic_ns()}.sqlite"
    name = f"shinfra_journal_{n}"
    postgresql.drop_database(name)
    postgresql.create_database(name)
    return f"postgresql://{layout.DB_USER}@{layout.HOST}:{layout.POSTGRES_PORT}/{name}"


def _trial(box: Sandbox, env: dict[str, str], fault: str, n: int, sources: dict[str, str],
           names: list[str], work: Path, at: float, down: float,
           max_runs: int) -> dict[str, Any]:
    journal = _journal(fault, work, n)
    argv = _copy_argv(box, journal, METHODS[fault], names)
    row: dict[str, Any] = {"fault": fault, "trial": n, "at_s": round(at, 2)}
    with subprocess.Popen([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        try:
            proc.wait(at)
            row["hit"] = None
        except subprocess.TimeoutExpired:
            row["hit"] = FAULTS[fault](down, n, lambda: proc.poll() is None)
        _, err = proc.communicate(timeout=1800)
    row["first_exit"] = proc.returncode
    if proc.returncode != 0:
        lines = err.strip().splitlines() or ["(no output)"]
        row["first_stop"] = (lines[-1] if "Traceback" not in err
                             else f"NOT ONE LINE: {err[-400:]}")
        row["rerun"] = _until_zero(env, argv, max_runs)
    else:
        row["rerun"] = {"runs": 0, "completed": True, "stops": []}
    row.update(_check(box, sources))
    row["cleanup_failed"] = _clear_dst(box, env, journal)
    row["stale_source_snapshots"] = _drop_snapshots(box, "src") if METHODS[fault] == "rbd" else 0
    if fault == "sql":
        postgresql.drop_database(str(journal).rsplit("/", 1)[-1])
    return row


def _table(rows: list[dict[str, Any]], faults: list[str]) -> list[str]:
    table = ["| fault | trials | hit mid-run | rode it out | re-runs | duplicates | missing "
             "| digests wrong | cleanup failed | first stops |", "|" + "---|" * 10]
    for fault in faults:
        these = [r for r in rows if r["fault"] == fault]
        stops = sorted({r.get("first_stop", "")[:90] for r in these} - {""})
        table.append(
            f"| {fault} | {len(these)} | {sum(r['hit'] is not None for r in these)} "
            f"| {sum(r['first_exit'] == 0 for r in these)} "
            f"| {sum(r['rerun']['runs'] for r in these)} "
            f"| {sum(r['duplicates'] for r in these)} | {sum(r['missing'] for r in these)} "
            f"| {sum(r['digest_mismatches'] for r in these)} "
            f"| {sum(r['cleanup_failed'] for r in these)} "
            f"| {'; '.join(stops) or '-'} |"
        )
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--faults", default="sql,osd,ssh")
    parser.add_argument("--trials", type=int, default=3, help="trials per fault")
    parser.add_argument("--down", type=float, default=5.0,
                        help="seconds a stopped server stays down")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--max-runs", type=int, default=3)
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    faults = args.faults.split(",")
    unknown = set(faults) - set(FAULTS)
    if unknown:
        parser.error(f"unknown faults {sorted(unknown)}; known: {', '.join(FAULTS)}")
    os.environ["PGPASSWORD"] = layout.DB_PASSWORD  # this process reads the journal too
    env = {**os.environ,
           "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    rng = random.Random(args.seed)
    rows: list[dict[str, Any]] = []
    baselines: dict[str, float] = {}
    box = Sandbox.create("shinfra")
    try:
        with tempfile.TemporaryDirectory(prefix="stackhop-infra-") as tmp:
            work = Path(tmp)
            made: dict[str, tuple[dict[str, str], list[str]]] = {}
            for fault in faults:
                method = METHODS[fault]
                if method not in made:
                    made[method] = (_volumes(box, method, 1), [f"{method}-0"])
                sources, names = made[method]
                if method not in baselines:
                    journal = work / f"{method}-baseline.sqlite"
                    first = _until_zero(env, _copy_argv(box, journal, method, names), 1)
                    baselines[method] = first["seconds"]
                    _clear_dst(box, env, journal)
                for n in range(args.trials):
                    # Past the start-up (about 3 s), before the uninterrupted run's end.
                    at = rng.uniform(min(3.0, baselines[method] / 2), baselines[method] * 0.8)
                    rows.append(_trial(box, env, fault, n, sources, names, work, at,
                                       args.down, args.max_runs))
                    print(json.dumps(rows[-1]), flush=True)
    finally:
        _drop_snapshots(box, "src")
        box.close()
    ok = all(
        r["rerun"]["completed"] and r["duplicates"] == 0 and r["missing"] == 0
        and r["digest_mismatches"] == 0 and r["cleanup_failed"] == 0
        and not r.get("first_stop", "").startswith("NOT ONE LINE")
        and not any(s.startswith("NOT ONE LINE") for s in r["rerun"]["stops"])
        for r in rows
    )
    table = _table(rows, faults)
    table += ["", "Uninterrupted run, s: " + ", ".join(f"{m} {s}" for m, s in baselines.items())]
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            f"chaos-infra-{dt.date.today().isoformat()}", "chaos_infra.py", argv,
            {"seed": args.seed, "rows": rows, "baselines": baselines, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
