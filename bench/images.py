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
    """Random bytes as an upload body with a known length (no temporary file)."""

    def __init__(self, size: int) -> None:
        self.len = size
        self._left = size
        self._block = os.urandom(MIB)
        self._n = 0

    def read(self, n: int = -1) -> bytes:
        n = self._left if n is None or n < 0 else min(n, self._left)
        if n == 0:
            return b""
        # A fresh 8-byte counter per MiB keeps every block distinct at urandom's cost of one.
        out = bytearray()
        while len(out) < n:
            self._n += 1
            out += self._n.to_bytes(8, "big") + self._block[8:]
        self._left -= n
        return bytes(out[:n])


def make_image(conn: Any, name: str, size: int) -> dict[str, Any]:
    body = {"name": name, "disk_format": "raw", "container_format": "bare"}
    image = conn.image.post("/images", json=body).json()
    conn.image.put(f"/images/{image['id']}/file", data=_RandomBody(size), headers={
        "Content-Type": "application/octet-stream", "X-Image-Meta-Store": "fast",
    }).raise_for_status()
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
    return {"seconds": round(elapsed, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1)}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024", help="MiB, comma-separated (default 1024)")
    parser.add_argument("--workdir", default=None, help="where the baseline's file goes")
    parser.add_argument("--no-save", action="store_true", help="print only")
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
            rows.append(bench_size(size, Path(tmp), env))
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


if __name__ == "__main__":
    sys.exit(main())
