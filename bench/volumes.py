"""Benchmark volume copy between the testbed clouds: the stream and rbd methods vs shell pipelines.

Everything happens in a project of its own (``voltest-bench-*``, same name
on both clouds), deleted at the end with everything in it. Each shape is
measured at two sizes (``--sparse-gib SMALL LARGE``, default 4 and 32;
``--dense-gib SMALL LARGE``, default 1 and 8; ``--quick``: 1 and 2 of each,
since Cinder sizes are whole GiB), on each backend:

- ``sparse``: 25 % filled (in 16 MiB stripes, 4 MiB written in each, at a
  4 MiB-aligned place: random, zeros and text in turn), the rest holes;
- ``dense``: random data throughout.

Per size point: ``StreamMethod.copy_pass`` (hosts' ``python3``) and raw
one-hop ssh (``ssh src cat FILE > /dev/null``, dense), ``RbdMethod.copy_pass``
(on dense volumes also with ``--trust-writes``, for reference)
and ``rbd export - | rbd import -`` between the two clusters, and on the
sparse volumes an incremental pass of each method after 1 % changed (1 MiB
writes at random 1 MiB-aligned places). Every pass runs in a child process
(its own peak RSS). ``bench/volumes_report.py`` fits a line through the two
points of each contender (fixed cost s, cost per GiB s) and judges issue 18's
goals; issue 6's single-size ratios come from the small-size points, which
also measure what the old runs did: the original guide's ``ssh src "dd |
gzip -1 -" | gunzip | dd`` pipeline, a ``zstd -1 -T0`` pipe, two-hop ssh and
the stream pass with the venv's Python on the hosts (zstd per chunk).

    .venv/bin/python bench/volumes.py           # writes bench/results/volumes-<date>.{json,md}
    .venv/bin/python bench/volumes.py --quick   # smoke run: volumes-<date>-quick.{json,md}
    .venv/bin/python bench/volumes.py --no-rbd  # stream only (--no-stream: rbd only)

It refuses (exit 2, one line) when the volumes would not fit on the disk of
the testbed state dir and /tmp.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import resource
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Generator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench import volumes_report as report  # noqa: E402
from testbed import layout  # noqa: E402
from tests.functional import stream_support as support  # noqa: E402

MIB = 1024 * 1024
GIB = 1024 * MIB
SSH_CONFIG = str(layout.SSH_DIR / "ssh_config")
SSH = ["ssh", "-F", SSH_CONFIG, "-o", "Ciphers=aes128-gcm@openssh.com"]

_RBD_WRITER = r"""
import json, os, sys, rados, rbd
spec = json.load(sys.stdin)
cluster = rados.Rados(conffile=spec["conf"], conf={"keyring": spec["keyring"]})
cluster.connect()
ioctx = cluster.open_ioctx(spec["pool"])
fd = os.open(spec["file"], os.O_RDONLY)
with rbd.Image(ioctx, spec["image"]) as image:
    for offset, length in spec["extents"]:
        image.write(os.pread(fd, length, offset), offset)
ioctx.close()
cluster.shutdown()
"""


def sh(command: str, *, on: str | None = None) -> float:
    """Run ``command`` (on a storage host if ``on``), return wall seconds; raise on failure."""
    argv = [*SSH, on, command] if on else ["bash", "-o", "pipefail", "-c", command]
    start = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def fill_sparse(path: Path, size: int, seed: int) -> None:
    rng = random.Random(seed)
    kinds = ("random", "zeros", "text")
    for index, offset in enumerate(range(0, size, 16 * MIB)):
        kind = kinds[index % 3]
        data = (
            rng.randbytes(4 * MIB)
            if kind == "random"
            else bytes(4 * MIB)
            if kind == "zeros"
            else support.text_block(4 * MIB, index)
        )
        support.write_at(path, offset + (index % 4) * 4 * MIB, data)


def fill_dense(path: Path, size: int) -> None:
    with open(path, "r+b") as handle:
        for offset in range(0, size, 64 * MIB):
            handle.seek(offset)
            handle.write(os.urandom(64 * MIB))
        handle.flush()
        os.fsync(handle.fileno())


def change_one_percent(path: Path, size: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    blocks = size // MIB
    chosen = sorted(rng.sample(range(blocks), max(1, blocks // 100)))
    for block in chosen:
        support.write_at(path, block * MIB, rng.randbytes(MIB))
    return [(b * MIB, MIB) for b in chosen]


def extents(path: Path) -> list[tuple[int, int]]:
    found = []
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        offset = 0
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError:
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            for piece in range(start, end, 64 * MIB):
                found.append((piece, min(64 * MIB, end - piece)))
            offset = end
    finally:
        os.close(fd)
    return found


def write_rbd(volume_id: str, file: Path, only: list[tuple[int, int]] | None = None) -> None:
    backend = support.storage_map().backend("src", "ceph")
    spec = {
        "conf": backend.ceph_conf,
        "keyring": backend.keyring,
        "pool": backend.pool,
        "image": f"volume-{volume_id}",
        "file": str(file),
        "extents": only if only is not None else extents(file),
    }
    subprocess.run(
        ["/usr/bin/python3", "-c", _RBD_WRITER], input=json.dumps(spec).encode(), check=True
    )


# -- a pass in a child process (its own peak RSS) -------------------------------


def child_pass(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one copy_pass as described by ``spec``; report time, bytes and peak RSS."""
    os.environ["STACKHOP_SSH_CONFIG"] = SSH_CONFIG
    project = support.Project(
        spec["project"],
        spec["src_id"],
        spec["dst_id"],
        support.connect("src"),
        support.connect("dst"),
    )
    source = support.volume_ref(
        "src", project.src_admin.block_storage.get_volume(spec["volume_id"])
    )
    if spec["method"] == "stream":
        from stackhop.volumes.stream import StreamMethod

        method: Any = StreamMethod(python=spec.get("python"))
    else:
        from stackhop.volumes.rbd import RbdMethod

        method = RbdMethod(reread=spec.get("reread", True))
    recorder = support.Recorder()
    ctx = support.make_context(
        project=project,
        source=source,
        journal_path=Path(spec["journal"]),
        recorder=recorder,
        incremental=spec["incremental"],
        destination_id=spec.get("destination_id"),
        destination_type=spec["type"],
        previous=spec.get("previous"),
    )
    # What `stackhop volumes copy` does once per run, before any pass: authenticate, check
    # the destination project's quota, scope a connection to it (the passes create volumes
    # with it). The clock measures one pass.
    from stackhop.volumes.inventory import project_connection, quota_room

    quota_room(project.dst_admin, project.dst_id)
    ctx.destination_project_conn = project_connection(project.dst_admin, "dst", project.dst_id)
    marks: dict[str, float] = {}

    def mark(name: str, facts: Any) -> None:
        marks.setdefault(name, time.perf_counter())

    ctx.on_stage = mark
    start = time.perf_counter()
    result = method.copy_pass(ctx)
    seconds = time.perf_counter() - start
    stages = {k: round(v - start, 3) for k, v in marks.items()}
    return {
        "seconds": round(seconds, 3),
        "stages": stages,
        "destination_id": result.destination_id,
        "bytes_read": result.bytes_read,
        "bytes_sent": result.bytes_sent,
        "bytes_wire": result.bytes_wire,
        "state": result.state,
        "details": {k: v for k, v in result.details.items() if not k.endswith("_path")},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child pass failed: {done.stderr.strip().splitlines()[-1:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def delete_volume(admin: Any, volume_id: str) -> None:
    admin.block_storage.delete_volume(volume_id, ignore_missing=True)
    admin.block_storage.wait_for_delete(admin.block_storage.get_volume(volume_id), wait=600)


def mbps(size: int, seconds: float) -> float:
    return round(size / MIB / seconds, 1) if seconds else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sparse-gib",
        type=int,
        nargs=2,
        default=[4, 32],
        metavar=("SMALL", "LARGE"),
        help="the two sparse volume sizes, GiB (default 4 32; 25 %% allocated)",
    )
    parser.add_argument(
        "--dense-gib",
        type=int,
        nargs=2,
        default=[1, 8],
        metavar=("SMALL", "LARGE"),
        help="the two dense volume sizes, GiB (default 1 8)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: sparse 1 and 2 GiB, dense 1 and 2 GiB (Cinder sizes are whole GiB)",
    )
    parser.add_argument("--no-rbd", action="store_true", help="bench the stream method only")
    parser.add_argument("--no-stream", action="store_true", help="bench the rbd method only")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_pass(json.loads(args.child))))
        return 0
    sizes = {"sparse": args.sparse_gib, "dense": args.dense_gib}
    if args.quick:
        sizes = {"sparse": [1, 2], "dense": [1, 2]}
    for shape, (small, large) in sizes.items():
        if not 0 < small < large:
            parser.error(f"--{shape}-gib: give two sizes, the smaller first, both above 0")
    short = report.disk_shortfall(
        {k: [float(x) for x in v] for k, v in sizes.items()},
        {"sparse": SPARSE_FILL, "dense": 1.0},
        layout.STATE_DIR,
        Path("/tmp"),
    )
    if short:
        print(f"bench/volumes.py: {short}", file=sys.stderr)
        return 2
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(layout.CLOUDS_YAML)
    os.environ["STACKHOP_SSH_CONFIG"] = SSH_CONFIG
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "command": shlex.join([".venv/bin/python", "bench/volumes.py", *sys.argv[1:]]),
        "sizes": sizes,
        "sparse_fill": SPARSE_FILL,
    }
    gen = support.project_pair()
    project = next(gen)
    assert isinstance(gen, Generator)
    scratch = Path(f"/tmp/stackhop-bench-{uuid.uuid4().hex[:8]}")
    scratch.mkdir()
    try:
        if not args.no_stream:
            results["stream"] = bench_stream(project, scratch, sizes)
        if not args.no_rbd:
            try:
                results["rbd"] = bench_rbd(project, scratch, sizes)
            except Exception as exc:  # reported, the stream results still count
                results["rbd"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
        gen.close()
    results["load_after"] = os.getloadavg()
    results["fits"] = report.fits(results)
    results["goals"] = report.goals(results, results["fits"])
    results["continuity"] = report.continuity(results)
    print(json.dumps(results, indent=2))
    if not args.no_save:
        day = dt.date.today().isoformat()
        name = f"volumes-{day}-quick" if args.quick else f"volumes-{day}"
        name += "-rbd" if args.no_stream else "-stream" if args.no_rbd else ""
        out = ROOT / "bench" / "results" / f"{name}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(report.render(results))
    return 0


SPARSE_FILL = 0.25  # fill_sparse writes 4 MiB in every 16 MiB


def pipelines(file: Path, target: Path, size: int) -> dict[str, Any]:
    """The original guide's gzip pipeline and a zstd pipe, run on the destination host."""
    src_cmd = shlex.quote(f"dd if={file} bs=4M status=none | gzip -1 -")
    gzip_s = sh(
        f"ssh -F {SSH_CONFIG} src-storage {src_cmd} | gunzip | dd of={target} bs=4M status=none",
        on="dst-storage",
    )
    zcmd = shlex.quote(f"zstd -1 -T0 -q -c {file}")
    zstd_s = sh(
        f"ssh -F {SSH_CONFIG} src-storage {zcmd} | zstd -d -q -c | "
        f"dd of={target} bs=4M status=none",
        on="dst-storage",
    )
    target.unlink()
    return {
        "pipeline_gzip_s": round(gzip_s, 2),
        "pipeline_gzip_mbps": mbps(size, gzip_s),
        "pipeline_zstd_s": round(zstd_s, 2),
    }


def _pass_row(full: dict[str, Any]) -> dict[str, Any]:
    return {
        "pass_s": full["seconds"],
        "bytes_sent": full["bytes_sent"],
        "peak_rss_mb": full["peak_rss_mb"],
        "full": full,
    }


def _incremental(
    spec: dict[str, Any], full: dict[str, Any], changes: list[tuple[int, int]]
) -> dict[str, Any]:
    inc = run_child({**spec, "destination_id": full["destination_id"], "previous": full["state"]})
    return {
        **inc,
        "changed_extents": len(changes),
        "changed_bytes": sum(n for _, n in changes),
        "ratio_to_full": round(inc["seconds"] / full["seconds"], 3),
    }


def bench_stream(
    project: support.Project, scratch: Path, sizes: dict[str, list[int]]
) -> dict[str, Any]:
    """Per shape, a point per size: the stream pass (and at the small size the old extras)."""
    common = {
        "project": project.name,
        "src_id": project.src_id,
        "dst_id": project.dst_id,
        "journal": str(scratch / "journal.db"),
        "method": "stream",
        "type": "file",
    }
    rows: dict[str, Any] = {"sparse": [], "dense": []}
    for shape in ("sparse", "dense"):
        for index, size_gib in enumerate(sizes[shape]):
            size = size_gib * GIB
            small = index == 0
            volume = project.create_source_volume(f"voltest-bench-{shape}-{size_gib}", size_gib)
            file = layout.SRC.file_backend_dir / f"volume-{volume.id}"
            if shape == "sparse":
                fill_sparse(file, size, 1)
            else:
                fill_dense(file, size)
            point: dict[str, Any] = {
                "size": size,
                "allocated_bytes": sum(n for _, n in extents(file)),
            }
            if shape == "dense":
                hop1 = sh(f"{shlex.join(SSH)} src-storage cat {file} > /dev/null")
                point["raw_one_hop_s"] = round(hop1, 3)
                point["raw_one_hop_mbps"] = mbps(size, hop1)
                if small:
                    hop2 = sh(
                        f"{shlex.join(SSH)} src-storage cat {file} | "
                        f"{shlex.join(SSH)} dst-storage 'cat > /dev/null'"
                    )
                    point["raw_two_hops_mbps"] = mbps(size, hop2)
            if small:
                point.update(pipelines(file, scratch / f"{shape}.img", size))
            # incremental=True: the pass keeps what a next incremental pass needs, as
            # `volumes copy --incremental` does for each pass of a chain.
            spec = {**common, "volume_id": volume.id, "incremental": True, "python": None}
            full = run_child(spec)
            point.update(_pass_row(full))
            if shape == "sparse":
                changes = change_one_percent(file, size, 2)
                point["incremental"] = _incremental(spec, full, changes)
            delete_volume(project.dst_admin, full["destination_id"])
            if small:
                zstd = run_child({**spec, "python": sys.executable})
                point["venv_python_zstd"] = zstd
                delete_volume(project.dst_admin, zstd["destination_id"])
                transfer = full["stages"]["imported"] - full["stages"]["exported"]
                point["stream_transfer_s"] = round(transfer, 2)
                point["speedup_pass_vs_gzip"] = round(point["pipeline_gzip_s"] / full["seconds"], 2)
                point["speedup_transfer_vs_gzip"] = round(point["pipeline_gzip_s"] / transfer, 2)
                point["stream_transfer_mbps_data"] = mbps(full["bytes_sent"], transfer)
            delete_volume(project.src_admin, volume.id)
            rows[shape].append(point)
    return rows


def bench_rbd(
    project: support.Project, scratch: Path, sizes: dict[str, list[int]]
) -> dict[str, Any]:
    """Per shape, a point per size: ``rbd export - | rbd import -`` and the rbd method's pass."""
    from stackhop.volumes.rbd import RbdMethod

    src = support.storage_map().backend("src", "ceph")
    dst = support.storage_map().backend("dst", "ceph")
    common = {
        "project": project.name,
        "src_id": project.src_id,
        "dst_id": project.dst_id,
        "journal": str(scratch / "rbd-journal.db"),
        "method": "rbd",
        "type": "ceph",
    }
    rows: dict[str, Any] = {"sparse": [], "dense": []}
    for shape in ("sparse", "dense"):
        for size_gib in sizes[shape]:
            size = size_gib * GIB
            volume = project.create_source_volume(
                f"voltest-bench-rbd-{shape}-{size_gib}", size_gib, "ceph"
            )
            local = scratch / f"rbd-{shape}.img"
            local.write_bytes(b"")
            os.truncate(local, size)
            if shape == "sparse":
                fill_sparse(local, size, 3)
            else:
                fill_dense(local, size)
            write_rbd(volume.id, local)
            image = f"{src.pool}/volume-{volume.id}"
            target = f"{dst.pool}/stackhop-bench-{uuid.uuid4().hex[:8]}"
            base_s = sh(
                f"rbd -c {src.ceph_conf} --keyring {src.keyring} export --no-progress "
                f"{image} - | rbd -c {dst.ceph_conf} --keyring {dst.keyring} import "
                f"--no-progress - {target}"
            )
            sh(f"rbd -c {dst.ceph_conf} --keyring {dst.keyring} rm --no-progress {target}")
            spec = {**common, "volume_id": volume.id, "incremental": True}
            full = run_child(spec)
            point: dict[str, Any] = {
                "size": size,
                "export_import_s": round(base_s, 3),
                "export_import_mbps": mbps(size, base_s),
                **_pass_row(full),
            }
            state = full["state"]
            if shape == "sparse":
                changes = change_one_percent(local, size, 4)
                write_rbd(volume.id, local, changes)
                point["incremental"] = _incremental(spec, full, changes)
                state = point["incremental"]["state"]
            RbdMethod().forget_incremental(
                state, support.connect("src"), support.connect("dst"), support.storage_map()
            )
            delete_volume(project.dst_admin, full["destination_id"])
            if shape == "dense":
                # The same copy with --trust-writes (verified by librbd's acknowledgements,
                # nothing read back), into a fresh volume again (the first copy is gone, or
                # the pass would only compare and keep it): what the read-back costs.
                trusting = run_child({**spec, "incremental": False, "reread": False})
                point["trust_writes_s"] = trusting["seconds"]
                delete_volume(project.dst_admin, trusting["destination_id"])
            delete_volume(project.src_admin, volume.id)
            local.unlink()
            rows[shape].append(point)
    return rows


if __name__ == "__main__":
    sys.exit(main())
