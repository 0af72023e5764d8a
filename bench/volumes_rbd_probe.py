"""Probe of the rbd volume method on the testbed: full pass, incremental pass, plain rbd pipe.

Run: ``source /var/lib/stackhop-testbed/env.sh && .venv/bin/python bench/volumes_rbd_probe.py
[--size-gib 1] [--changed-percent 1]``. It creates a dense random volume on
src (ceph), copies it to dst project ``alpha`` with :class:`RbdMethod`
(``--incremental``), twice changes ``--changed-percent`` of its 1 MiB blocks
at random and runs an incremental pass, then times ``rbd export - | rbd import -``
of the same image between the two clusters; it prints one JSON object and
deletes everything it created. The orchestration's benchmark is
``bench/volumes.py``; this is the method alone.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.functional.rbd_support import Recorder, make_context, volume_ref, write_image  # noqa: E402

from stackhop.clouds import connect  # noqa: E402
from stackhop.transfer.rbd import RbdCluster  # noqa: E402
from stackhop.volumes.cinder_adopt import previous_copies  # noqa: E402
from stackhop.volumes.rbd import RbdMethod, cluster_of  # noqa: E402
from stackhop.volumes.storage import Backend, load_storage_map  # noqa: E402

MIB = 1024 * 1024


def _mbs(nbytes: int, seconds: float) -> float:
    return round(nbytes / MIB / seconds, 1) if seconds else 0.0


class TimedRecorder(Recorder):
    """Records when each stage was reached, to show where a pass spends its time."""

    def __init__(self) -> None:
        super().__init__()
        self.started = time.perf_counter()
        self.at: dict[str, float] = {}

    def stage(self, name: str, facts: Any) -> None:
        super().stage(name, facts)
        self.at[name] = round(time.perf_counter() - self.started, 2)


def _pass(args: dict[str, Any]) -> tuple[Any, float, dict[str, float]]:
    recorder = TimedRecorder()
    result = RbdMethod().copy_pass(make_context(**args, recorder=recorder))
    return result, time.perf_counter() - recorder.started, recorder.at


def _cli(backend: Backend) -> RbdCluster:
    return RbdCluster(
        backend.cloud, backend.pool or "", backend.ceph_conf, backend.keyring, backend.user
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gib", type=int, default=1)
    parser.add_argument("--changed-percent", type=float, default=1.0)
    opts = parser.parse_args()
    size = opts.size_gib * 1024 * MIB
    src, dst = connect("src"), connect("dst")
    storage = load_storage_map()
    src_backend, dst_backend = storage.backend("src", "ceph"), storage.backend("dst", "ceph")
    alpha = dst.identity.find_project("alpha", ignore_missing=False).id
    volume = src.block_storage.create_volume(
        size=opts.size_gib, name=f"bench-rbd-{uuid.uuid4().hex[:6]}", volume_type="ceph"
    )
    report: dict[str, Any] = {"size_bytes": size}
    destination: str | None = None
    plain = f"stackhop-bench-plain-{volume.id[:8]}"
    state: dict[str, Any] = {}
    try:
        volume = src.block_storage.wait_for_status(volume, "available", failures=["error"])
        image = f"volume-{volume.id}"
        write_image(src_backend, image, [(i, 64 * MIB, i // MIB) for i in range(0, size, 64 * MIB)])
        with TemporaryDirectory() as tmp:
            common = {
                "run_id": uuid.uuid4().hex,
                "destination_project_id": alpha,
                "source_conn": src,
                "destination_conn": dst,
                "storage": storage,
                "journal_path": Path(tmp) / "journal.sqlite",
                "incremental": True,
            }
            ref = volume_ref("src", src.block_storage.get_volume(volume.id))
            full, t_full, at_full = _pass({**common, "source": ref})
            destination, state = full.destination_id, full.state
            blocks = size // MIB
            incrementals = []
            for seed in (7, 8):
                # Pass 2 starts the chain; pass 3 is the steady state (it also retires
                # pass 1's snapshots).
                changed = random.Random(seed).sample(
                    range(blocks), int(blocks * opts.changed_percent / 100)
                )
                write_image(src_backend, image, [(b * MIB, MIB, 1000 * seed + b) for b in changed])
                previous_digest = (incrementals[-1][0] if incrementals else full).content_digest
                inc, t_inc, at_inc = _pass(
                    {
                        **common,
                        "source": ref,
                        "previous": state,
                        "destination_id": destination,
                    }
                )
                state = inc.state
                incrementals.append((inc, t_inc, at_inc, len(changed), previous_digest))
        report["full"] = {
            "seconds": round(t_full, 2),
            "MiB_per_s": _mbs(full.bytes_sent, t_full),
            "bytes_sent": full.bytes_sent,
            "stage_reached_at_s": at_full,
        }
        report["incremental"] = [
            {
                "pass": inc.details["pass"],
                "changed_blocks_1MiB": count,
                "seconds": round(t_inc, 2),
                "bytes_sent": inc.bytes_sent,
                "ratio_to_full": round(t_inc / t_full, 3),
                "stage_reached_at_s": at_inc,
                "content_changed": inc.content_digest != before,
            }
            for inc, t_inc, at_inc, count, before in incrementals
        ]
        # The baseline runs the rbd tools whatever stackhop itself uses.
        src_rbd, dst_rbd = _cli(src_backend), _cli(dst_backend)
        started = time.perf_counter()
        exporter = subprocess.Popen(
            src_rbd.command(["export", "--no-progress", src_rbd.spec(image), "-"]),
            stdout=subprocess.PIPE,
        )
        subprocess.run(
            dst_rbd.command(["import", "--no-progress", "-", dst_rbd.spec(plain)]),
            stdin=exporter.stdout,
            check=True,
        )
        exporter.wait()
        t_plain = time.perf_counter() - started
        report["rbd_export_import"] = {
            "seconds": round(t_plain, 2),
            "MiB_per_s": _mbs(size, t_plain),
        }
        report["full_vs_plain"] = round(t_plain / t_full, 2)
        report["access"] = {
            "source": type(cluster_of(src_backend)).__name__,
            "destination": type(cluster_of(dst_backend)).__name__,
        }
        report["peak_rss_MiB"] = {
            # stackhop with librbd in-process; children: the rbd tools and the test-data writer.
            "stackhop": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "largest_child": round(
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1
            ),
        }
    finally:
        if state:
            RbdMethod().forget_incremental(state, src, dst, storage)
        dst_rbd = _cli(dst_backend)
        dst_rbd.remove_image(plain)
        # By marker too: a pass that failed after Cinder created its volume never returned it.
        for copy in previous_copies(dst, volume.id, destination):
            for snap in dst_rbd.snapshots(f"volume-{copy.id}"):
                if snap.startswith("stackhop-"):
                    dst_rbd.remove_snapshot(f"volume-{copy.id}", snap)
            dst.block_storage.delete_volume(copy, ignore_missing=True)
        src.block_storage.delete_volume(volume, ignore_missing=True)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
