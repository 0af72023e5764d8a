"""Benchmark a server's downtime: stackhop's pre-copy cutover vs stop-then-copy (issue 19).

Two servers of the same shape in a project of their own (``srvbench-*``, same name on
both clouds): each boots from an ``--gib`` GiB volume (default 8, ``file`` type), 25 %
of it written (a MiB at the start of every 4 MiB), with one port on a network of the
project's. The project's network and security groups move first (``stackhop migrate``).

- ``precopy`` (stackhop's way): ``servers migrate`` with the default pre-copy; once the
  pre-copy is done, 1 % of the volume is written (1 MiB at random places) before the
  source stops, so that the final pass has that much to send;
- ``stop-then-copy`` (os-migrate's way): ``servers migrate --max-passes 0`` — the source
  stops, then the whole volume is copied, then the server boots.

Downtime is from the source's stop call to the destination ACTIVE, as the journal times
them (``stopped_at`` of the ``stop`` step, ``active_at`` of ``boot``): its parts are the
stop, the final pass, the ports and the boot. Both servers use the same method (``--type
file``: the stream method; ``--type ceph``: rbd, as ``auto`` picks; ``--method`` names
another), in one run, one after the other. Goal:
the pre-copy's downtime at most 15 % of stop-then-copy's. Everything is rolled back and
removed at the end.

    .venv/bin/python bench/servers.py            # bench/results/servers-<date>.{json,md}
    .venv/bin/python bench/servers.py --type ceph --label ceph
    .venv/bin/python bench/servers.py --gib 2 --label quick
    .venv/bin/python bench/servers.py --type ceph --repeat 3 --label ceph  # median of 3
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from bench.chaos_common import results_name, save_results  # noqa: E402
from testbed.undo import undo_migration  # noqa: E402
from tests.functional.rbd_support import write_image  # noqa: E402
from tests.functional.volumes_support import (  # noqa: E402
    Sandbox,
    file_backend_path,
    wait_status,
    write_pattern,
)

from stackhop.cli.main import main as stackhop  # noqa: E402
from stackhop.clouds import connect  # noqa: E402
from stackhop.events import Event  # noqa: E402
from stackhop.journal import Journal  # noqa: E402
from stackhop.resolve import Resolver  # noqa: E402
from stackhop.servers.migrate import STEP_KIND, ServerRequest, migrate_servers  # noqa: E402
from stackhop.volumes.readback import backend_knows  # noqa: E402
from stackhop.volumes.storage import load_storage_map  # noqa: E402

MIB = 1024 * 1024
DOWNTIME = ("stop", "final", "ports", "boot")
GOAL = 0.15


def write_mibs(volume: Any, seed: str, pieces: list[int]) -> None:
    """Pseudo-random MiBs at the given MiB offsets of a source volume: into its file
    (``file`` type), or through librbd in a process of its own (``ceph`` type)."""
    if volume.volume_type == "file":
        write_pattern(file_backend_path("src", volume.id), seed, pieces)
        return
    backend = backend_knows(load_storage_map(), "src", volume.host)
    assert backend is not None, f"the storage map does not know {volume.host}"
    base = random.Random(seed).randrange(2**32)
    write_image(backend, f"volume-{volume.id}", [(p * MIB, MIB, base + p) for p in pieces])


class OnePercentAfterPrecopy:
    """Writes 1 % of the volume (1 MiB pieces at random places) once the pre-copy is done."""

    def __init__(self, volume: Any, gib: int, seed: int) -> None:
        self.volume, self.gib, self.seed = volume, gib, seed
        self.written = 0

    def emit(self, event: Event) -> None:
        if (event.kind == STEP_KIND and event.identity == "precopy"
                and event.outcome == "done" and not self.written):
            rng = random.Random(self.seed)
            mibs = self.gib * 1024
            pieces = sorted(rng.sample(range(mibs), max(1, mibs // 100)))
            write_mibs(self.volume, f"late-{self.seed}", pieces)
            self.written = len(pieces) * MIB


def build(box: Sandbox, name: str, gib: int, net: Any, volume_type: str) -> tuple[Any, Any]:
    c = box.scoped("src")
    root = box.volume(f"{name}-root", size=gib, volume_type=volume_type)
    box.src.block_storage.set_volume_bootable_status(root, True)
    root = box.src.block_storage.get_volume(root.id)  # its host, for the storage map
    write_mibs(root, name, list(range(0, gib * 1024, 4)))
    port = c.network.create_port(network_id=net.id, name=f"{name}-port")
    box.undo.append(lambda: box.src.network.delete_port(port, ignore_missing=True))
    server = c.compute.create_server(
        name=name, flavor_id=box.src.compute.find_flavor("m1.tiny").id,
        networks=[{"port": port.id}],
        block_device_mapping=[{"uuid": root.id, "source_type": "volume",
                               "destination_type": "volume", "boot_index": 0,
                               "delete_on_termination": False}],
    )

    def delete_server() -> None:
        box.src.compute.delete_server(server, ignore_missing=True)
        box.src.compute.wait_for_delete(server, interval=1, wait=300)

    box.undo.append(delete_server)
    server = box.src.compute.wait_for_server(server, status="ACTIVE", failures=["ERROR"],
                                             interval=1, wait=300)
    wait_status(box.src, root.id, ("in-use",))
    return server, root


def migrate(journal: Path, box: Sandbox, name: str, max_passes: int, method: str,
            sink: Any = None) -> dict[str, Any]:
    request = ServerRequest("src", "dst", box.name, servers=(name,), method=method,
                            max_passes=max_passes)
    started = time.perf_counter()
    with Journal(journal) as jr:
        result = migrate_servers(request, connect("src"), connect("dst"), jr,
                                 load_storage_map(), Resolver("dst", journal=jr), events=sink)
    total = time.perf_counter() - started
    (outcome,) = result.outcomes
    steps = {s.name: round(s.elapsed, 2) for s in outcome.steps}
    assert all(s.status == "done" for s in outcome.steps), outcome.steps
    downtime = outcome.downtime
    assert downtime is not None, "the journal has no stop and boot times"
    # The stop step also prepares the final pass before it stops the source: its part of
    # the downtime is what the others leave (the stop call, the wait, the journal writes).
    steps["stop"] = round(downtime - sum(steps[s] for s in DOWNTIME if s != "stop"), 2)
    return {"steps": steps, "downtime_s": downtime, "method": outcome.steps[0].summary,
            "total_s": round(total, 2), "summaries": {s.name: s.summary for s in outcome.steps}}


def once(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One trial: both ways on fresh servers of a project of their own, then undone."""
    work = Path(tempfile.mkdtemp(prefix="stackhop-bench-servers-"))
    journal = work / "journal.sqlite"
    with Sandbox.create("srvbench") as box:
        c = box.scoped("src")
        net = c.network.create_network(name="bench-net")
        box.undo.append(lambda: box.src.network.delete_network(net))
        subnet = c.network.create_subnet(network_id=net.id, cidr="10.78.0.0/24",
                                         ip_version=4, name="bench-v4")
        box.undo.append(lambda: box.src.network.delete_subnet(subnet))
        baseline_server, _ = build(box, "stop-then-copy", args.gib, net, args.type)
        precopy_server, root = build(box, "precopy", args.gib, net, args.type)
        # After the servers' own undo steps in the list: run before them (reverse order).
        box.undo.append(lambda: undo_migration(journal))
        code = stackhop(["--journal", str(journal), "migrate", "--from", "src", "--to", "dst",
                         "--project", box.name, "--networks", "--security-groups"])
        assert code == 0, "moving the project's network failed"
        baseline = migrate(journal, box, "stop-then-copy", 0, args.method)
        sink = OnePercentAfterPrecopy(root, args.gib, seed)
        precopy = migrate(journal, box, "precopy", 4, args.method, sink=sink)
        del baseline_server, precopy_server
    return {"stop_then_copy": baseline, "precopy": precopy,
            "written_during_precopy_mib": sink.written // MIB,
            "downtime_ratio": round(precopy["downtime_s"] / baseline["downtime_s"], 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gib", type=int, default=8)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument("--type", default="file", choices=("file", "ceph"),
                        help="the volume type (file: the stream method; ceph: rbd)")
    parser.add_argument("--method", default="auto", help="servers migrate --method")
    parser.add_argument("--repeat", type=int, default=1,
                        help="trials, each on fresh servers (the ratio reported is the median)")
    parser.add_argument("--label")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    trials = [once(args, args.seed + n) for n in range(args.repeat)]
    ratio = statistics.median(t["downtime_ratio"] for t in trials)
    payload = {"gib": args.gib, "volume_type": args.type, "method": args.method,
               "trials": trials, "downtime_ratio": ratio, "goal": GOAL,
               "goal_met": ratio <= GOAL}
    table = [
        f"Server booted from a {args.gib} GiB `{args.type}` volume (25 % written), "
        f"`--method {args.method}`; {trials[0]['written_during_precopy_mib']} MiB written "
        f"after the pre-copy; {len(trials)} trial(s), each on fresh servers. Downtime: from "
        "the source's stop call to the destination ACTIVE, as the journal times them.",
        "",
        "| trial | way | downtime s | " + " | ".join(f"{s} s" for s in DOWNTIME)
        + " | pre-copy s | ratio |",
        "|---|---|---|" + "---|" * len(DOWNTIME) + "---|---|",
    ]
    for n, trial in enumerate(trials, 1):
        for label, key in (("stop-then-copy", "stop_then_copy"),
                           ("stackhop pre-copy", "precopy")):
            got = trial[key]
            table.append(f"| {n} | {label} | {got['downtime_s']} | "
                         + " | ".join(str(got["steps"][s]) for s in DOWNTIME)
                         + f" | {got['steps']['precopy']} | "
                         + (f"{trial['downtime_ratio']} |" if key == "precopy" else " |"))
    last = trials[-1]["precopy"]["summaries"]
    table += ["", f"Downtime ratio, median of the trials: {ratio:.3f} (goal <= {GOAL}): "
              f"{'met' if ratio <= GOAL else 'not met'}.",
              f"Pre-copy (last trial): {last['precopy']}; final: {last['final']}."]
    print("\n".join(table))
    if not args.no_save:
        out = save_results(results_name("servers", args.label), "servers.py", argv, payload,
                           table)
        print(f"results: {out}.json, {out}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
