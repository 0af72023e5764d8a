"""Benchmark image copy between the testbed clouds: stackhop vs download-then-upload.

For each size: make a random image on src (store ``fast``), then copy it to
dst twice, each way in its own child process (peak RSS from ``wait4``):

- baseline, the original method: ``openstack image save --file F`` on src,
  then ``openstack image create --file F`` on dst;
- ``stackhop images copy --from src --to dst --image ID`` (streamed, verified).

Then ``stackhop images move-store`` of the same image from ``fast`` to
``slow`` on src (with its read-back verification). Everything made is deleted.

    .venv/bin/python bench/images.py                      # 1 GiB
    .venv/bin/python bench/images.py --sizes 1024,4096    # where disk allows

Results: ``bench/results/images-<date>.json`` and ``.txt`` (with the command).
Goal (issue 5): stackhop at least 1.5x the baseline's MB/s, peak RSS under 200 MB.

``--rbd`` (issue 14) measures instead, per size:

- on the legacy Glance (``src-legacy``), a file-store image moved to rbd by
  ``move-store --method locations``, against the seed script's way (download
  to a file, upload it as a new image that Glance writes to its rbd store:
  ``openstack image save`` + an upload to src's ``rbd`` store), and against
  ``copy-image`` fast -> rbd on src;
- src rbd -> dst rbd by ``images copy --to-store rbd`` through the Glance APIs
  and Ceph to Ceph (``--location-cloud``, a storage map with both pools).

Goals: locations >= 1.5x the seed's way, Ceph to Ceph >= 2x the API stream,
peak RSS < 200 MB. The load average is recorded with the results.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))  # the testbed package (clouds.yaml location)

GOAL_RATIO = 1.5
GOAL_PEAK_RSS_MB = 200
MIB = 1024 * 1024
VENV_BIN = Path(sys.executable).parent
JSON_PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}


def _clouds_yaml() -> str:
    from testbed import layout

    return str(layout.CLOUDS_YAML)


def _connect(name: str) -> Any:
    import openstack.config
    from openstack.connection import Connection

    config = openstack.config.OpenStackConfig(config_files=[_clouds_yaml()])
    return Connection(config=config.get_one(cloud=name))


class _RandomBody:
    """Random bytes as an upload body with a known length (no temporary file).

    Each MiB is the same urandom block behind a fresh 8-byte counter, so every
    block is distinct at urandom's cost of one. ``read`` serves whatever size
    the HTTP client asks (8 KiB at a time, for requests) from the current
    block: the old version built a whole MiB per call and spent most of a
    4 GiB upload's 20 minutes doing so.
    """

    def __init__(self, size: int) -> None:
        self.len = size
        self._left = size
        self._block = os.urandom(MIB)
        self._n = 0
        self._current = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        parts = []
        while n > 0:
            if not self._current:
                self._n += 1
                self._current = memoryview(self._n.to_bytes(8, "big") + self._block[8:])
            take = min(n, len(self._current))
            parts.append(self._current[:take])
            self._current = self._current[take:]
            self._left -= take
            n -= take
        return b"".join(parts)


def make_image(conn: Any, name: str, size: int, store: str | None = "fast") -> dict[str, Any]:
    body = {"name": name, "disk_format": "raw", "container_format": "bare"}
    image = conn.image.post("/images", json=body).json()
    headers = {"Content-Type": "application/octet-stream"}
    if store:
        headers["X-Image-Meta-Store"] = store
    conn.image.put(f"/images/{image['id']}/file", data=_RandomBody(size),
                   headers=headers).raise_for_status()
    result: dict[str, Any] = conn.image.get(f"/images/{image['id']}").json()
    return result


def delete_images(conn: Any, **query: str) -> None:
    q = "&".join(f"{k}={v}" for k, v in query.items())
    for image in conn.image.get(f"/images?{q}").json()["images"]:
        conn.image.patch(f"/images/{image['id']}", headers=JSON_PATCH,
                         json=[{"op": "replace", "path": "/protected", "value": False}])
        conn.image.delete(f"/images/{image['id']}")


def timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``cmd``; its wall time, CPU time and peak RSS (its own, via wait4)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}): {err.decode()[-800:]}")
    result: dict[str, Any] = {
        "seconds": round(elapsed, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}
    if "--log-json" in cmd:
        result["phases"] = _phases(err.decode(), time.time() - elapsed)
    return result


def _phases(log: str, started: float) -> dict[str, float]:
    """Where a ``stackhop --log-json`` run spent its time, from its events' timestamps.

    ``startup``: process start to the first operation (imports, tokens, listing
    and planning: mostly waiting for the clouds' APIs); ``data``: the first to
    the last progress event (bytes moving); ``after_data``: the last progress
    event to the end of the operation (Glance's own work: hashing an attached
    location, activating, members).
    """
    first_op = first_progress = last_progress = op_end = None
    for line in log.splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        kind, at = event.get("type"), event.get("timestamp")
        if not isinstance(at, (int, float)):
            continue
        if kind == "operation_started" and first_op is None:
            first_op = at
        elif kind == "progress":
            first_progress = first_progress or at
            last_progress = at
        elif kind == "operation_finished":
            op_end = at
    phases: dict[str, float] = {}
    if first_op is not None:
        phases["startup"] = round(first_op - started, 2)
    if first_progress is not None and last_progress is not None:
        phases["data"] = round(last_progress - first_progress, 2)
        if op_end is not None:
            phases["after_data"] = round(op_end - last_progress, 2)
    return phases


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def rbd_floor(image_id: str, size_mib: int) -> dict[str, Any]:
    """What Ceph to Ceph cannot beat on this machine: Ceph's own C++ tools, no Python.

    ``rbd export src/images/<id>@snap - | rbd import - dst/images/<tmp>``, then
    ``rbd export dst/images/<tmp> -`` hashed with sha512 and md5 (what the
    destination Glance does to an attached location before it goes active).
    """
    from testbed import layout

    def rbd(c: Any) -> str:
        return f"rbd -c {c.ceph_conf} --keyring {c.ceph_keyring} --id admin"

    tmp = f"bench14-floor-{uuid.uuid4().hex[:8]}"
    hash_code = ("import hashlib, sys\nh, m = hashlib.sha512(), hashlib.md5()\n"
                 "while b := sys.stdin.buffer.read(8 << 20):\n    h.update(b); m.update(b)\n")
    steps = {
        "rbd_export_import": f"{rbd(layout.SRC)} export images/{image_id}@snap - | "
                             f"{rbd(layout.DST)} import - images/{tmp}",
        "read_back_hash": f"{rbd(layout.DST)} export images/{tmp} - | "
                          f"{shlex.quote(sys.executable)} -c {shlex.quote(hash_code)}",
    }
    out: dict[str, Any] = {}
    try:
        for label, command in steps.items():
            start = time.monotonic()
            subprocess.run(command, shell=True, check=True, stderr=subprocess.DEVNULL)
            out[label] = round(time.monotonic() - start, 2)
    finally:
        subprocess.run(f"{rbd(layout.DST)} rm images/{tmp}", shell=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    total = out["rbd_export_import"] + out["read_back_hash"]
    out["seconds"] = round(total, 2)
    out["mb_per_s"] = round(size_mib * MIB / 1e6 / total, 1)
    return out


def bench_size(size_mib: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    src, dst = _connect("src"), _connect("dst")
    name = f"bench-{uuid.uuid4().hex[:8]}-{size_mib}m"
    image = make_image(src, name, size_mib * MIB)
    openstack = str(VENV_BIN / "openstack")
    stackhop = str(VENV_BIN / "stackhop")
    file = workdir / f"{name}.raw"
    try:
        save = timed([openstack, "--os-cloud", "src", "image", "save", "--file", str(file),
                      image["id"]], env)
        create = timed([openstack, "--os-cloud", "dst", "image", "create", "--file", str(file),
                        "--disk-format", "raw", "--container-format", "bare",
                        f"{name}-baseline"], env)
        file.unlink()
        baseline_s = save["seconds"] + create["seconds"]
        ours = timed([stackhop, "--journal", str(workdir / f"{name}.sqlite"), "images", "copy",
                      "--from", "src", "--to", "dst", "--image", image["id"]], env)
        move = timed([stackhop, "--journal", str(workdir / f"{name}.sqlite"), "images",
                      "move-store", "--cloud", "src", "--from-store", "fast", "--to-store",
                      "slow", "--image", image["id"]], env)
        size_mb = size_mib * MIB / 1e6
        return {
            "size_mib": size_mib,
            "baseline": {"save": save, "create": create, "seconds": round(baseline_s, 2),
                         "mb_per_s": round(size_mb / baseline_s, 1),
                         "peak_rss_mb": max(save["peak_rss_mb"], create["peak_rss_mb"])},
            "stackhop": {**ours, "mb_per_s": round(size_mb / ours["seconds"], 1)},
            "ratio": round(baseline_s / ours["seconds"], 2),
            "move_store": {**move, "mb_per_s": round(size_mb / move["seconds"], 1)},
        }
    finally:
        file.unlink(missing_ok=True)
        delete_images(dst, name=f"{name}-baseline")
        delete_images(dst, stackhop_source=image["id"])
        delete_images(src, name=name)


def _upload_to_store(cloud: str, name: str, path: Path, store: str) -> list[str]:
    """A child process uploading ``path`` as a new image into ``store`` (the seed's upload)."""
    code = (
        "import sys, openstack\n"
        "c = openstack.connect(cloud=sys.argv[1])\n"
        "i = c.image.post('/images', json={'name': sys.argv[2], 'disk_format': 'raw',"
        " 'container_format': 'bare'}).json()\n"
        "with open(sys.argv[3], 'rb') as f:\n"
        "    c.image.put(f\"/images/{i['id']}/file\", data=f, headers={"
        "'Content-Type': 'application/octet-stream', 'X-Image-Meta-Store': sys.argv[4]}"
        ").raise_for_status()\n"
    )
    return [sys.executable, "-c", code, cloud, name, str(path), store]


def _rbd_setup(workdir: Path, env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """A clouds.yaml with dst's Glance service user and a storage map of both Glance pools."""
    import yaml
    from testbed import layout

    clouds = yaml.safe_load(layout.CLOUDS_YAML.read_text())
    c = layout.DST
    clouds["clouds"]["dst-glance-service"] = {
        "auth": {"auth_url": c.keystone_url, "username": "glance",
                 "password": layout.SERVICE_PASSWORD, "project_name": "service",
                 "user_domain_name": "Default", "project_domain_name": "Default"},
        "region_name": layout.REGION, "identity_api_version": 3}
    config = workdir / "clouds.yaml"
    config.write_text(yaml.safe_dump(clouds))
    config.chmod(0o600)
    storage = yaml.safe_load(layout.STORAGE_MAP.read_text())
    for cl in layout.CLOUDS:
        storage.setdefault(cl.name, {})["glance-rbd"] = {
            "driver": "rbd", "pool": "images", "ceph_conf": str(cl.ceph_conf),
            "keyring": str(cl.ceph_keyring), "user": "admin"}
    storage_map = workdir / "storage.yaml"
    storage_map.write_text(yaml.safe_dump(storage))
    storage_map.chmod(0o600)
    return {**env, "OS_CLIENT_CONFIG_FILE": str(config)}, storage_map


def bench_rbd(size_mib: int, workdir: Path, env: dict[str, str]) -> dict[str, Any]:
    env, storage_map = _rbd_setup(workdir, env)
    src, dst, legacy = _connect("src"), _connect("dst"), _connect("src-legacy")
    name = f"bench14-{uuid.uuid4().hex[:8]}-{size_mib}m"
    openstack, stackhop = str(VENV_BIN / "openstack"), str(VENV_BIN / "stackhop")
    journal = str(workdir / f"{name}.sqlite")
    size_mb = size_mib * MIB / 1e6
    file = workdir / f"{name}.raw"
    on_src: dict[str, Any] | None = None

    def rate(run: dict[str, Any]) -> dict[str, Any]:
        return {**run, "mb_per_s": round(size_mb / run["seconds"], 1)}

    load_start = _uptime()
    try:
        on_legacy = make_image(legacy, f"{name}-legacy", size_mib * MIB, store=None)
        locations = timed([stackhop, "--log-json", "--journal", journal, "images", "move-store",
                           "--cloud", "src-legacy", "--from-store", "file", "--to-store", "rbd",
                           "--method", "locations", "--storage-map", str(storage_map),
                           "--image", on_legacy["id"]], env)
        save = timed([openstack, "--os-cloud", "src-legacy", "image", "save", "--file",
                      str(file), on_legacy["id"]], env)
        # Each copy leaves its pool as soon as it is measured: the testbed's Ceph
        # clusters are 20 GiB each and shared with the other tests.
        delete_images(legacy, name=f"{name}-legacy")
        upload = timed(_upload_to_store("src", f"{name}-seedway", file, "rbd"), env)
        file.unlink()
        delete_images(src, name=f"{name}-seedway")
        seed_s = save["seconds"] + upload["seconds"]
        on_src = make_image(src, f"{name}-src", size_mib * MIB)
        copy_image = timed([stackhop, "--log-json", "--journal", journal, "images",
                            "move-store", "--cloud", "src", "--from-store", "fast",
                            "--to-store", "rbd", "--image", on_src["id"]], env)
        api = timed([stackhop, "--log-json", "--journal", journal, "images", "copy", "--from",
                     "src", "--to", "dst", "--to-store", "rbd", "--image", on_src["id"]], env)
        delete_images(dst, stackhop_source=on_src["id"])
        ceph = timed([stackhop, "--log-json", "--journal", str(workdir / f"{name}-ceph.sqlite"),
                      "images", "copy", "--from", "src", "--to", "dst", "--to-store", "rbd",
                      "--location-cloud", "dst-glance-service", "--storage-map",
                      str(storage_map), "--image", on_src["id"]], env)
        delete_images(dst, stackhop_source=on_src["id"])
        floor = rbd_floor(on_src["id"], size_mib)
        return {
            "size_mib": size_mib,
            "load": {"start": load_start, "end": _uptime()},
            "move": {
                "locations": rate(locations),
                "seed_way": {"save": save, "upload": upload, "seconds": round(seed_s, 2),
                             "mb_per_s": round(size_mb / seed_s, 1),
                             "peak_rss_mb": max(save["peak_rss_mb"], upload["peak_rss_mb"])},
                "copy_image": rate(copy_image),
                "ratio_locations_vs_seed": round(seed_s / locations["seconds"], 2),
            },
            "cross_cloud": {
                "api_stream": rate(api), "ceph_to_ceph": rate(ceph),
                "ratio": round(api["seconds"] / ceph["seconds"], 2),
                "floor_rbd_tools": floor,
            },
        }
    finally:
        file.unlink(missing_ok=True)
        if on_src is not None:
            delete_images(dst, stackhop_source=on_src["id"])
        for conn in (src, legacy):
            for suffix in ("legacy", "src", "seedway"):
                delete_images(conn, name=f"{name}-{suffix}")


def report_rbd(rows: list[dict[str, Any]]) -> tuple[str, bool]:
    lines = [f"{'size':>6} {'locations MB/s':>15} {'seed way MB/s':>14} {'ratio':>6} "
             f"{'copy-image MB/s':>16} {'API MB/s':>9} {'Ceph MB/s':>10} {'ratio':>6} "
             f"{'RSS max':>8}"]
    ok = bool(rows)
    for r in rows:
        m, x = r["move"], r["cross_cloud"]
        rss = max(m["locations"]["peak_rss_mb"], x["api_stream"]["peak_rss_mb"],
                  x["ceph_to_ceph"]["peak_rss_mb"])
        lines.append(
            f"{r['size_mib']:>5}M {m['locations']['mb_per_s']:>15} {m['seed_way']['mb_per_s']:>14}"
            f" {m['ratio_locations_vs_seed']:>6} {m['copy_image']['mb_per_s']:>16}"
            f" {x['api_stream']['mb_per_s']:>9} {x['ceph_to_ceph']['mb_per_s']:>10}"
            f" {x['ratio']:>6} {rss:>7}M")
        ok = ok and m["ratio_locations_vs_seed"] >= GOAL_RATIO and x["ratio"] >= 2 and \
            rss < GOAL_PEAK_RSS_MB
    for r in rows:
        x = r["cross_cloud"]
        lines.append(f"{r['size_mib']}M phases (s): " + "; ".join(
            f"{label} {run['seconds']} = " + " + ".join(
                f"{k} {v}" for k, v in run.get("phases", {}).items())
            for label, run in (("locations", r["move"]["locations"]),
                               ("copy-image", r["move"]["copy_image"]),
                               ("API", x["api_stream"]), ("Ceph", x["ceph_to_ceph"]))))
        floor = x.get("floor_rbd_tools")
        if floor:
            lines.append(f"{r['size_mib']}M floor, rbd tools: export|import "
                         f"{floor['rbd_export_import']} s + read back and hash "
                         f"{floor['read_back_hash']} s = {floor['seconds']} s "
                         f"({floor['mb_per_s']} MB/s)")
        if "load" in r:
            lines.append(f"{r['size_mib']}M load at start: {r['load']['start']}")
            lines.append(f"{r['size_mib']}M load at end:   {r['load']['end']}")
    return "\n".join(lines), ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024", help="MiB, comma-separated (default 1024)")
    parser.add_argument("--workdir", default=None, help="where the baseline's file goes")
    parser.add_argument("--no-save", action="store_true", help="print only")
    parser.add_argument("--rbd", action="store_true",
                        help="issue 14: locations vs the seed's way vs copy-image; Ceph to Ceph "
                        "vs the API stream")
    args = parser.parse_args()
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env["OS_CLIENT_CONFIG_FILE"] = _clouds_yaml()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="stackhop-bench-") as tmp:
        for size in (int(s) for s in args.sizes.split(",")):
            free = shutil.disk_usage(tmp).free
            if free < 4 * size * MIB:
                print(f"skipping {size} MiB: only {free // MIB} MiB free", file=sys.stderr)
                continue
            rows.append((bench_rbd if args.rbd else bench_size)(size, Path(tmp), env))
    if args.rbd:
        return _save_rbd(rows, args.no_save)
    lines = [f"{'size':>6} {'baseline MB/s':>14} {'stackhop MB/s':>14} {'ratio':>6} "
             f"{'RSS base':>9} {'RSS ours':>9} {'move-store s':>13}"]
    ok = bool(rows)
    for r in rows:
        base, ours = r["baseline"], r["stackhop"]
        lines.append(
            f"{r['size_mib']:>5}M {base['mb_per_s']:>14} {ours['mb_per_s']:>14} "
            f"{r['ratio']:>6} {base['peak_rss_mb']:>8}M {ours['peak_rss_mb']:>8}M "
            f"{r['move_store']['seconds']:>13}")
        ok = ok and r["ratio"] >= GOAL_RATIO and r["stackhop"]["peak_rss_mb"] < GOAL_PEAK_RSS_MB
    table = "\n".join(lines)
    print(table)
    if not args.no_save:
        day = dt.date.today().isoformat()
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        command = shlex.join([".venv/bin/python", "bench/images.py", *sys.argv[1:]])
        (out / f"images-{day}.json").write_text(json.dumps({
            "command": command, "host": platform.node(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(),
            "goal": {"ratio": GOAL_RATIO, "peak_rss_mb": GOAL_PEAK_RSS_MB}, "rows": rows,
        }, indent=2) + "\n")
        (out / f"images-{day}.txt").write_text(f"$ {command}\n{table}\n")
    return 0 if ok else 1


def _save_rbd(rows: list[dict[str, Any]], no_save: bool) -> int:
    table, ok = report_rbd(rows)
    load = os.getloadavg()
    table += f"\nload average at the end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    print(table)
    if not no_save:
        day = dt.date.today().isoformat()
        out = ROOT / "bench" / "results"
        out.mkdir(parents=True, exist_ok=True)
        command = shlex.join([".venv/bin/python", "bench/images.py", *sys.argv[1:]])
        # One file per day and size list: a 4 GiB run does not overwrite the 1 GiB one.
        stem = f"images-rbd-{day}-" + "-".join(f"{r['size_mib']}m" for r in rows)
        (out / f"{stem}.json").write_text(json.dumps({
            "command": command, "host": platform.node(), "cpus": os.cpu_count(),
            "load_average": load, "rows": rows,
            "goal": {"locations_vs_seed": GOAL_RATIO, "ceph_vs_api": 2,
                     "peak_rss_mb": GOAL_PEAK_RSS_MB},
        }, indent=2) + "\n")
        (out / f"{stem}.txt").write_text(f"$ {command}\n{table}\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
