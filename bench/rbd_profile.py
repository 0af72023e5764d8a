"""Where one rbd-method pass spends its time and CPU, next to ``rbd export - | rbd import -``.

A small profile run for a shared machine (issue 18): one source volume of
``--gib`` GiB (``dense``: random data; ``sparse``: ``bench/volumes.py``'s 25 %
fill), in a project of its own on both clouds (deleted at the end with
everything in it). ``--repeat`` times, in turn: ``rbd export | rbd import``
between the two clusters, then one full pass of ``RbdMethod`` in a child
process (``bench/volumes.py --child``, as the benchmark runs it). For each it
prints the wall time, the stages, and the CPU seconds spent by the process(es)
doing the copy (for the pass: the whole child, Python's start-up and the
Cinder calls included), by each cluster's OSD and by the whole machine: on a machine
where the OSDs share the CPUs with the copy, CPU seconds per GiB decide the
slope, and unlike wall times they hardly move with the neighbours' load.

    .venv/bin/python bench/rbd_profile.py                  # 1 GiB dense, once
    .venv/bin/python bench/rbd_profile.py --gib 1 --shape sparse --repeat 2
    .venv/bin/python bench/rbd_profile.py --code /tmp/old  # the pass of another checkout
    .venv/bin/python bench/rbd_profile.py --cprofile pass.prof  # where the pass's thread waits

``--code DIR``: the pass runs ``DIR/bench/volumes.py --child``, i.e. the
stackhop of that checkout (e.g. ``git archive`` of an older commit), to
compare before and after on the same volume.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench import volumes as bench  # noqa: E402
from testbed import layout  # noqa: E402
from tests.functional import stream_support as support  # noqa: E402

from stackhop.volumes.rbd import RbdMethod  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _osd_pid(cloud: str) -> int:
    return int((layout.STATE_DIR / "run" / f"ceph-{cloud}-osd.pid").read_text().split()[0])


def _proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _machine_cpu() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


def _children_cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def _sample() -> dict[str, float]:
    return {
        "wall": time.perf_counter(),
        "copier": _children_cpu(),
        "osd_src": _proc_cpu(_osd_pid("src")),
        "osd_dst": _proc_cpu(_osd_pid("dst")),
        "machine": _machine_cpu(),
    }


def measured(run: Callable[[], Any]) -> tuple[Any, dict[str, float]]:
    """``run()``'s result and the seconds (wall, CPU by actor) it took."""
    before = _sample()
    result = run()
    after = _sample()
    return result, {k: round(after[k] - before[k], 2) for k in before}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=int, default=1, help="volume size, GiB (default 1)")
    parser.add_argument("--shape", choices=("dense", "sparse"), default="dense")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--code", type=Path, default=ROOT, help="checkout whose pass runs")
    parser.add_argument(
        "--cprofile", type=Path, help="write the pass's cProfile (main thread) to this file"
    )
    args = parser.parse_args()
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(layout.CLOUDS_YAML)
    os.environ["STACKHOP_SSH_CONFIG"] = bench.SSH_CONFIG
    src = support.storage_map().backend("src", "ceph")
    dst = support.storage_map().backend("dst", "ceph")
    size = args.gib * bench.GIB
    gen = support.project_pair()
    project = next(gen)
    assert isinstance(gen, Generator)
    scratch = Path(f"/tmp/stackhop-rbd-profile-{uuid.uuid4().hex[:8]}")
    scratch.mkdir()
    rows: list[dict[str, Any]] = []
    try:
        volume = project.create_source_volume(f"voltest-profile-{args.shape}", args.gib, "ceph")
        local = scratch / "volume.img"
        local.write_bytes(b"")
        os.truncate(local, size)
        if args.shape == "sparse":
            bench.fill_sparse(local, size, 3)
        else:
            bench.fill_dense(local, size)
        bench.write_rbd(volume.id, local)
        local.unlink()
        image = f"{src.pool}/volume-{volume.id}"
        spec = {
            "project": project.name,
            "src_id": project.src_id,
            "dst_id": project.dst_id,
            "journal": str(scratch / "journal.db"),
            "method": "rbd",
            "type": "ceph",
            "volume_id": volume.id,
            # As bench/volumes.py: the pass keeps its snapshots for a next one (removed below).
            "incremental": True,
        }
        child = [sys.executable, str(args.code / "bench" / "volumes.py"), "--child"]
        if args.cprofile:
            child[1:1] = ["-m", "cProfile", "-o", str(args.cprofile.resolve())]
        for _ in range(args.repeat):
            target = f"{dst.pool}/stackhop-profile-{uuid.uuid4().hex[:8]}"
            pipeline = (
                f"rbd -c {src.ceph_conf} --keyring {src.keyring} export --no-progress "
                f"{image} - | rbd -c {dst.ceph_conf} --keyring {dst.keyring} import "
                f"--no-progress - {target}"
            )
            _, cost = measured(functools.partial(bench.sh, pipeline))
            bench.sh(f"rbd -c {dst.ceph_conf} --keyring {dst.keyring} rm --no-progress {target}")
            rows.append({"contender": "rbd export | rbd import", "cpu": cost})
            done, cost = measured(
                lambda: subprocess.run(
                    [*child, json.dumps(spec)], capture_output=True, text=True, check=True
                )
            )
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(
                {
                    "contender": "rbd method pass",
                    "cpu": cost,
                    "stages": result["stages"],
                    "peak_rss_mb": result["peak_rss_mb"],
                    "bytes_sent": result["bytes_sent"],
                    "details": result["details"],
                }
            )
            clouds = (support.connect("src"), support.connect("dst"))
            RbdMethod().forget_incremental(result["state"], *clouds, support.storage_map())
            bench.delete_volume(project.dst_admin, result["destination_id"])
        bench.delete_volume(project.src_admin, volume.id)
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
        gen.close()
    print(f"{args.gib} GiB {args.shape}, code {args.code}, load {os.getloadavg()}")
    for row in rows:
        print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
