"""Benchmark volume copy between the testbed clouds: the stream and rbd methods vs shell pipelines.

Everything happens in a project of its own (``voltest-bench-*``, same name
on both clouds), deleted at the end with everything in it. Two source
volumes of each backend:

- ``sparse``: 4 GiB, 25 % filled (in 16 MiB stripes, 4 MiB written in each,
  at a 4 MiB-aligned place: random, zeros and text in turn), the rest holes;
- ``dense``: 1 GiB of random data.

Measured, in one run:

- raw ssh throughput: ``ssh src cat FILE > /dev/null`` (one hop) and
  ``ssh src cat | ssh dst 'cat > /dev/null'`` (two hops through this host,
  the path the stream method's data takes);
- the original guide's pipeline, run on the destination host with the
  ``gunzip`` it forgot: ``ssh src "dd if=X bs=4M | gzip -1 -" | gunzip |
  dd of=Y bs=4M``; and, for reference, the same with ``zstd -1 -T0``;
- ``StreamMethod.copy_pass`` (a child process each, for its peak RSS): the
  whole pass (create the Cinder volume, stream, verify) and its transfer
  alone, with the hosts' ``python3`` (no zstandard module there: chunks go
  raw, zeros and holes skipped) and with the project's venv Python on the
  hosts (zstd per chunk);
- a stream incremental pass after 1 % of the sparse volume changed (41
  random 1 MiB-aligned 1 MiB writes) vs the full pass;
- ``RbdMethod.copy_pass`` vs ``rbd export - | rbd import -`` between the two
  clusters, and an rbd incremental pass after the same 1 % change.

    .venv/bin/python bench/volumes.py            # writes bench/results/volumes-<date>.{json,md}
    .venv/bin/python bench/volumes.py --no-rbd   # stream only

Goals (issue 6): stream >= 10x the pipeline on sparse, >= 5x on dense; dense
throughput >= 70 % of the raw ssh stream; rbd incremental <= 5 % of its full
copy, stream incremental <= 25 %; peak RSS < 256 MB.
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
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

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

        method = RbdMethod()
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
    ctx.on_stage = lambda name, facts: marks.setdefault(name, time.perf_counter())
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
    parser.add_argument("--no-rbd", action="store_true", help="bench the stream method only")
    parser.add_argument("--no-save", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child_pass(json.loads(args.child))))
        return 0
    os.environ["OS_CLIENT_CONFIG_FILE"] = str(layout.CLOUDS_YAML)
    os.environ["STACKHOP_SSH_CONFIG"] = SSH_CONFIG
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg(),
        "command": "python bench/volumes.py" + (" --no-rbd" if args.no_rbd else ""),
    }
    gen = support.project_pair()
    project = next(gen)
    scratch = Path(f"/tmp/stackhop-bench-{uuid.uuid4().hex[:8]}")
    scratch.mkdir()
    try:
        results["stream"] = bench_stream(project, scratch, results)
        if not args.no_rbd:
            try:
                results["rbd"] = bench_rbd(project, scratch)
            except Exception as exc:  # reported, the stream results still count
                results["rbd"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        subprocess.run(["rm", "-rf", str(scratch)], check=False)
        gen.close()
    results["load_after"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if not args.no_save:
        day = dt.date.today().isoformat()
        out = ROOT / "bench" / "results" / f"volumes-{day}.json"
        out.write_text(json.dumps(results, indent=2) + "\n")
        out.with_suffix(".md").write_text(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    """The results as a Markdown page (the command first)."""
    lines = [
        f"# Volume copy benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}` (host {results['host']}, {results['cpus']} CPUs, "
        f"load average before {results['load_before'][0]:.1f}, after "
        f"{results['load_after'][0]:.1f}; the machine is shared, so wall times are noisy).",
        "",
    ]
    stream = results.get("stream", {})
    if stream:
        raw = stream["raw_ssh"]
        lines += [
            "## stream",
            "",
            f"Raw ssh (aes128-gcm): one hop {raw['one_hop_mbps']} MiB/s, two hops through this "
            f"host {raw['two_hops_mbps']} MiB/s. Allocated bytes: {stream['allocated_bytes']}.",
            "",
            "| volume | gzip pipeline | zstd pipe | stream pass (hosts' python3) | transfer only "
            "| data MiB/s | speedup (pass / transfer) | stream pass (zstd) | peak RSS MB "
            "(stackhop / read agent / write agent) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for label in ("sparse", "dense"):
            row = stream[label]
            base, zstd = row["hosts_python3"], row["venv_python_zstd"]
            rss = base["details"].get("agent_peak_rss_kb", {})
            lines.append(
                f"| {label} {row['size'] // GIB} GiB | {row['pipeline_gzip_s']} s | "
                f"{row['pipeline_zstd_s']} s | {base['seconds']} s | {row['stream_transfer_s']} s "
                f"| {row['stream_transfer_mbps_data']} | {row['speedup_pass_vs_gzip']}x / "
                f"{row['speedup_transfer_vs_gzip']}x | {zstd['seconds']} s "
                f"(wire {zstd['bytes_wire'] // MIB} MiB) | {base['peak_rss_mb']} / "
                f"{(rss.get('read') or 0) // 1024} / {(rss.get('write') or 0) // 1024} |"
            )
        inc = stream["sparse"].get("incremental", {})
        if inc:
            lines += [
                "",
                f"Incremental after 1 % changed ({inc['changed_extents']} x 1 MiB): "
                f"{inc['seconds']} s vs full {stream['sparse']['hosts_python3']['seconds']} s "
                f"= {inc['ratio_to_full']:.0%}; {inc['bytes_sent'] // MIB} MiB sent "
                f"({inc['details'].get('changed_chunks')} chunks of 4 MiB).",
            ]
        lines += [
            "",
            "Goals: "
            + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in stream["goals"].items()),
            "",
        ]
    rbd = results.get("rbd")
    if rbd:
        lines += ["## rbd", ""]
        if "error" in rbd:
            lines.append(f"Not measured: {rbd['error']}")
        else:
            lines += [
                "| volume | export - \\| import - | rbd method pass | speedup | peak RSS MB |",
                "|---|---|---|---|---|",
            ]
            for label in ("sparse", "dense"):
                row = rbd[label]
                lines.append(
                    f"| {label} {row['size'] // GIB} GiB | {row['export_import_s']} s | "
                    f"{row['full']['seconds']} s | {row['speedup_vs_export_import']}x | "
                    f"{row['full']['peak_rss_mb']} |"
                )
            inc = rbd["sparse"].get("incremental")
            if inc:
                lines += [
                    "",
                    f"rbd incremental after 1 % changed: {inc['seconds']} s "
                    f"= {inc['ratio_to_full']:.0%} of the full pass.",
                ]
        lines.append("")
    return "\n".join(lines)


def bench_stream(project: support.Project, scratch: Path, results: dict[str, Any]) -> Any:
    rows: dict[str, Any] = {}
    sparse = project.create_source_volume("voltest-bench-sparse", 4)
    dense = project.create_source_volume("voltest-bench-dense", 1)
    sparse_file = layout.SRC.file_backend_dir / f"volume-{sparse.id}"
    dense_file = layout.SRC.file_backend_dir / f"volume-{dense.id}"
    fill_sparse(sparse_file, 4 * GIB, 1)
    fill_dense(dense_file, GIB)
    rows["allocated_bytes"] = {
        "sparse": sum(n for _, n in extents(sparse_file)),
        "dense": sum(n for _, n in extents(dense_file)),
    }
    hop1 = sh(
        f"ssh -F {SSH_CONFIG} -o Ciphers=aes128-gcm@openssh.com src-storage "
        f"cat {dense_file} > /dev/null"
    )
    hop2 = sh(
        f"{shlex.join(SSH)} src-storage cat {dense_file} | "
        f"{shlex.join(SSH)} dst-storage 'cat > /dev/null'"
    )
    rows["raw_ssh"] = {"one_hop_mbps": mbps(GIB, hop1), "two_hops_mbps": mbps(GIB, hop2)}
    journal = str(scratch / "journal.db")
    common = {
        "project": project.name,
        "src_id": project.src_id,
        "dst_id": project.dst_id,
        "journal": journal,
        "method": "stream",
        "type": "file",
    }
    for label, volume, file, size in (
        ("sparse", sparse, sparse_file, 4 * GIB),
        ("dense", dense, dense_file, GIB),
    ):
        target = scratch / f"{label}.img"
        src_cmd = shlex.quote(f"dd if={file} bs=4M status=none | gzip -1 -")
        gzip_s = sh(
            f"ssh -F {SSH_CONFIG} src-storage {src_cmd} | gunzip | "
            f"dd of={target} bs=4M status=none",
            on="dst-storage",
        )
        zcmd = shlex.quote(f"zstd -1 -T0 -q -c {file}")
        zstd_s = sh(
            f"ssh -F {SSH_CONFIG} src-storage {zcmd} | zstd -d -q -c | "
            f"dd of={target} bs=4M status=none",
            on="dst-storage",
        )
        target.unlink()
        row: dict[str, Any] = {
            "size": size,
            "pipeline_gzip_s": round(gzip_s, 2),
            "pipeline_gzip_mbps": mbps(size, gzip_s),
            "pipeline_zstd_s": round(zstd_s, 2),
        }
        for variant, python in (("hosts_python3", None), ("venv_python_zstd", sys.executable)):
            # incremental=True: the pass keeps what a next incremental pass needs, as
            # `volumes copy --incremental` does for each pass of a chain.
            spec = {**common, "volume_id": volume.id, "incremental": True, "python": python}
            full = run_child(spec)
            row[variant] = full
            if label == "sparse" and variant == "hosts_python3":
                changes = change_one_percent(file, size, 2)
                inc = run_child(
                    {
                        **spec,
                        "incremental": True,
                        "destination_id": full["destination_id"],
                        "previous": full["state"],
                    }
                )
                row["incremental"] = {
                    **inc,
                    "changed_extents": len(changes),
                    "ratio_to_full": round(inc["seconds"] / full["seconds"], 3),
                }
            delete_volume(project.dst_admin, full["destination_id"])
        base = row["hosts_python3"]
        transfer = base["stages"]["imported"] - base["stages"]["exported"]
        row["stream_transfer_s"] = round(transfer, 2)
        row["speedup_pass_vs_gzip"] = round(gzip_s / base["seconds"], 2)
        row["speedup_transfer_vs_gzip"] = round(gzip_s / transfer, 2)
        row["stream_transfer_mbps_logical"] = mbps(size, transfer)
        row["stream_transfer_mbps_data"] = mbps(base["bytes_sent"], transfer)
        rows[label] = row
    dense_row = rows["dense"]
    rows["goals"] = {
        "sparse_10x_pipeline": rows["sparse"]["speedup_pass_vs_gzip"] >= 10,
        "dense_5x_pipeline": dense_row["speedup_pass_vs_gzip"] >= 5,
        "dense_70pct_raw_ssh": dense_row["stream_transfer_mbps_data"]
        >= 0.7 * rows["raw_ssh"]["one_hop_mbps"],
        "incremental_25pct": rows["sparse"]["incremental"]["ratio_to_full"] <= 0.25,
        "peak_rss_256mb": all(
            r[v]["peak_rss_mb"] < 256
            for r in (rows["sparse"], dense_row)
            for v in ("hosts_python3", "venv_python_zstd")
        ),
    }
    return rows


def bench_rbd(project: support.Project, scratch: Path) -> Any:
    from stackhop.volumes.rbd import RbdMethod  # noqa: F401  (absent: reported, not fatal)

    rows: dict[str, Any] = {}
    src = support.storage_map().backend("src", "ceph")
    dst = support.storage_map().backend("dst", "ceph")
    journal = str(scratch / "rbd-journal.db")
    common = {
        "project": project.name,
        "src_id": project.src_id,
        "dst_id": project.dst_id,
        "journal": journal,
        "method": "rbd",
        "type": "ceph",
    }
    for label, size_gib in (("sparse", 4), ("dense", 1)):
        size = size_gib * GIB
        volume = project.create_source_volume(f"voltest-bench-rbd-{label}", size_gib, "ceph")
        local = scratch / f"rbd-{label}.img"
        local.write_bytes(b"")
        os.truncate(local, size)
        if label == "sparse":
            fill_sparse(local, size, 3)
        else:
            fill_dense(local, size)
        write_rbd(volume.id, local)
        image = f"{src.pool}/volume-{volume.id}"
        target = f"{dst.pool}/stackhop-bench-{uuid.uuid4().hex[:8]}"
        base_s = sh(
            f"rbd -c {src.ceph_conf} --keyring {src.keyring} export {image} - | "
            f"rbd -c {dst.ceph_conf} --keyring {dst.keyring} import - {target}"
        )
        sh(f"rbd -c {dst.ceph_conf} --keyring {dst.keyring} rm --no-progress {target}")
        spec = {**common, "volume_id": volume.id, "incremental": True}
        full = run_child(spec)
        row: dict[str, Any] = {
            "size": size,
            "export_import_s": round(base_s, 2),
            "export_import_mbps": mbps(size, base_s),
            "full": full,
            "speedup_vs_export_import": round(base_s / full["seconds"], 2),
        }
        if label == "sparse":
            changes = change_one_percent(local, size, 4)
            write_rbd(volume.id, local, changes)
            inc = run_child(
                {**spec, "destination_id": full["destination_id"], "previous": full["state"]}
            )
            row["incremental"] = {
                **inc,
                "ratio_to_full": round(inc["seconds"] / full["seconds"], 3),
            }
            state = inc["state"]
        else:
            state = full["state"]
        RbdMethod().forget_incremental(
            state, support.connect("src"), support.connect("dst"), support.storage_map()
        )
        delete_volume(project.dst_admin, full["destination_id"])
        local.unlink()
        rows[label] = row
    if "incremental" in rows.get("sparse", {}):
        rows["goals"] = {"incremental_5pct": rows["sparse"]["incremental"]["ratio_to_full"] <= 0.05}
    return rows


if __name__ == "__main__":
    sys.exit(main())
