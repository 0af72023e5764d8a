"""Benchmark the portable archive: write then read N small records, per compression.

Each phase runs in its own child process so that its peak RSS
(``ru_maxrss``) is its own. The write phase generates records on the fly
(the generation cost is included, so the rate is conservative); the read
phase opens the archive (which verifies every member) and streams every
record of every kind.

    .venv/bin/python bench/archive.py                       # 1,000,000 records, zstd and bz2
    .venv/bin/python bench/archive.py --records 100000,1000000 --compression zstd

Results: ``bench/results/archive-<date>.json`` and ``.txt`` (the .txt holds
the exact command). Goal: over 100,000 records/s each way and peak RSS under
150 MB, independent of the record count.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

GOAL_RECORDS_PER_S = 100_000
GOAL_PEAK_RSS_MB = 150
KINDS = ("nova.keypair", "neutron.security_group_rule", "nova.quota")


USERS = [f"{n:032x}" for n in range(5000)]
PROJECTS = [f"{n:032x}" for n in range(97)]


def make_record(i: int) -> tuple[str, dict[str, Any]]:
    """A small record like a real export's, ~240 bytes of JSON; kinds interleave."""
    kind = KINDS[0] if i % 10 < 8 else KINDS[1 + i % 2]
    return kind, {
        "id": f"{i:08x}-5e1f-4c2a-9d3b-{i * 2654435761 % 16**12:012x}",
        "name": f"key-{i}",
        "user_id": USERS[i % 5000],
        "project_id": PROJECTS[i % 97],
        "type": "ssh",
        "fingerprint": f"{i * 40503 % 2**64:016x}",
        "created_at": "2026-01-01T00:00:00Z",
    }


def generation_cpu_us(records: int) -> float:
    """CPU microseconds per record spent making records (counted in the write rate)."""
    sample = min(records, 100_000)
    before = cpu_seconds()
    for i in range(sample):
        make_record(i)
    return (cpu_seconds() - before) / sample * 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timings(
    records: int, seconds: float, cpu_before: float, thread_before: float
) -> dict[str, Any]:
    """Wall-clock rate (the goal) and CPU rates (what a shared, loaded host cannot blur).

    ``records_per_cpu_s`` counts the CPU of every thread (compression threads
    included); ``records_per_main_thread_cpu_s`` only the caller's thread, the
    bound on the wall-clock rate of an otherwise idle host with a core to
    spare for compression.
    """
    cpu = cpu_seconds() - cpu_before
    main = time.thread_time() - thread_before
    return {
        "seconds": seconds,
        "records_per_s": records / seconds,
        "cpu_seconds": cpu,
        "records_per_cpu_s": records / cpu,
        "main_thread_cpu_seconds": main,
        "records_per_main_thread_cpu_s": records / main,
        "peak_rss_mb": peak_rss_mb(),
    }


def child_write(path: Path, records: int, compression: str) -> dict[str, Any]:
    from stackhop.archive import ArchiveWriter

    cpu_before, thread_before = cpu_seconds(), time.thread_time()
    start = time.perf_counter()
    with ArchiveWriter(
        path,
        source_cloud="bench",
        source_auth_url="http://127.0.0.1:5000/v3",
        compression=compression,  # type: ignore[arg-type]
    ) as writer:
        write = writer.write
        for i in range(records):
            kind, record = make_record(i)
            write(kind, record)
    result = timings(records, time.perf_counter() - start, cpu_before, thread_before)
    result["generation_cpu_us_per_record"] = generation_cpu_us(records)
    return result


def child_read(path: Path, records: int) -> dict[str, Any]:
    from stackhop.archive import ArchiveReader

    cpu_before, thread_before = cpu_seconds(), time.thread_time()
    start = time.perf_counter()
    with ArchiveReader(path) as reader:
        verified = time.perf_counter()
        seen = 0
        for kind in reader.kinds():
            for _record in reader.records(kind):
                seen += 1
    result = timings(records, time.perf_counter() - start, cpu_before, thread_before)
    if seen != records:
        raise SystemExit(f"read {seen} records, expected {records}")
    return {**result, "verify_seconds": verified - start}


def child_baseline() -> dict[str, Any]:
    """Peak RSS of an interpreter that merely imported the archive module."""
    import stackhop.archive  # noqa: F401

    return {"peak_rss_mb": peak_rss_mb()}


def run_child(*args: str) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", *args], check=True, capture_output=True, text=True
    ).stdout
    result: dict[str, Any] = json.loads(output)
    return result


def measure(records: int, compression: str, workdir: Path) -> dict[str, Any]:
    path = workdir / f"bench-{records}.{compression}.shop"
    write = run_child("write", str(path), str(records), compression)
    size = path.stat().st_size
    read = run_child("read", str(path), str(records))
    path.unlink()
    ok = all(
        phase["records_per_s"] > GOAL_RECORDS_PER_S and phase["peak_rss_mb"] < GOAL_PEAK_RSS_MB
        for phase in (write, read)
    )
    return {
        "records": records,
        "compression": compression,
        "archive_bytes": size,
        "write": write,
        "read": read,
        "meets_goal": ok,
    }


def render(results: list[dict[str, Any]], baseline_mb: float) -> str:
    lines = [
        f"{'records':>9} {'comp':>4} {'size MB':>8} {'write rec/s':>11} {'(per CPU s)':>11} "
        f"{'(main thr)':>11} "
        f"{'write RSS':>10} {'read rec/s':>11} {'(per CPU s)':>11} {'(verify s)':>10} "
        f"{'read RSS':>9}  goal",
    ]
    for r in results:
        w, rd = r["write"], r["read"]
        lines.append(
            f"{r['records']:>9} {r['compression']:>4} {r['archive_bytes'] / 1e6:>8.1f} "
            f"{w['records_per_s']:>11,.0f} {w['records_per_cpu_s']:>11,.0f} "
            f"{w['records_per_main_thread_cpu_s']:>11,.0f} "
            f"{w['peak_rss_mb']:>7.1f} MB "
            f"{rd['records_per_s']:>11,.0f} {rd['records_per_cpu_s']:>11,.0f} "
            f"{rd['verify_seconds']:>10.2f} "
            f"{rd['peak_rss_mb']:>6.1f} MB  {'met' if r['meets_goal'] else 'MISSED'}"
        )
    lines.append(f"interpreter + imports alone: {baseline_mb:.1f} MB peak RSS")
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    lines.append(f"host load average (1, 5, 15 min) at the end: {load}")
    lines.append(
        f"goal: > {GOAL_RECORDS_PER_S:,} records/s each way, peak RSS < {GOAL_PEAK_RSS_MB} MB"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--records", default="1000000", help="record counts, comma separated (1000000)"
    )
    parser.add_argument("--compression", default="zstd,bz2", help="zstd,bz2 (both)")
    parser.add_argument("--workdir", type=Path, help="where the archives go (a temp dir)")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        phase, *rest = args.child
        if phase == "write":
            result = child_write(Path(rest[0]), int(rest[1]), rest[2])
        elif phase == "read":
            result = child_read(Path(rest[0]), int(rest[1]))
        else:
            result = child_baseline()
        print(json.dumps(result))
        return 0

    counts = [int(n) for n in args.records.split(",")]
    compressions = args.compression.split(",")
    baseline = run_child("baseline")["peak_rss_mb"]
    results = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="stackhop-bench-") as tmp:
        for compression in compressions:
            for count in counts:
                result = measure(count, compression, Path(tmp))
                results.append(result)
                print(render([result], baseline).splitlines()[1], flush=True)
    table = render(results, baseline)
    print(table)
    if not args.no_save:
        today = dt.date.today().isoformat()
        args.results.mkdir(parents=True, exist_ok=True)
        command = " ".join(
            shlex.quote(a) for a in [".venv/bin/python", "bench/archive.py", *sys.argv[1:]]
        )
        report = {
            "benchmark": "archive",
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "command": command,
            "host": {
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "machine": platform.machine(),
            },
            "load_average_at_end": os.getloadavg(),
            "goal": {"records_per_s": GOAL_RECORDS_PER_S, "peak_rss_mb": GOAL_PEAK_RSS_MB},
            "baseline_peak_rss_mb": baseline,
            "results": results,
        }
        (args.results / f"archive-{today}.json").write_text(json.dumps(report, indent=2) + "\n")
        (args.results / f"archive-{today}.txt").write_text(f"$ {command}\n{table}\n")
    return 0 if all(r["meets_goal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
