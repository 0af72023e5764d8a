"""Chaos runs of ``images copy``, ``volumes copy --method image`` and ``import`` through API
faults, once per command and seed.

Made once, before the seeds: ``--images`` images of ``--image-mib`` MiB of random data on
src (owned by ``admin``, as the image tests make them); a project of its own on both clouds
with ``--volumes`` 1 GiB file volumes on src, known pseudo-random MiBs in holes; a project of
its own on both clouds with ``--groups`` security groups (rules, one naming another group)
and quotas on src, exported once from the plain ``src``.

Per command and seed, in one go: the fault-injecting proxy
(:class:`tests.support.faultproxy.FaultProxy`) in front of every API of both clouds, the
command through ``src-faulty``/``dst-faulty``, re-run with the same journal until it exits
0 (at most ``--max-runs``; each stop before must be one line). Faults at ``--rate`` of all
calls, every kind (5xx, 429 with ``Retry-After``, resets, stalls past the client's timeout,
answers lost after the request was applied); with ``--lost-posts`` only lost answers
(``drop``), at ``--rate`` of the POSTs.

Then, on dst directly (openstacksdk and the backends, not through the proxy, not through
stackhop): per source object its copies by the stackhop marker (duplicates, missing), the
data read back (each image copy downloaded and its SHA-512 compared with the source's; each
volume copy's content digest read from its backend and compared with the pieces written);
for ``import``, ``stackhop verify`` through the plain ``dst`` must exit 0. Then
``testbed.undo`` of the journal (through the proxy, faults off), anything of ours still on
dst counted and removed, and dst must list as before the seed.

    .venv/bin/python bench/chaos_api.py                              # all three, seeds 17-21
    .venv/bin/python bench/chaos_api.py --lost-posts --images 30 --image-mib 1 --volumes 6 \\
        --label lost-posts
    .venv/bin/python bench/chaos_api.py --command import --seeds 3 --rate 0.2 --no-save

The proxy draws its seeded random number per eligible request, so with ``--lost-posts`` a
seed loses its first answer only after its first hit in that sequence (seeds 17-21: the
9th, 27th, 18th, 25th and 11th POST): the copies then need some thirty POSTs (30 images; 6
volumes, about 4 POSTs each) for every seed to lose one. ``posts`` and ``lost_answers`` in
each row say what was met.

Needs the testbed's environment (``. /var/lib/stackhop-testbed/env.sh``).
Results: ``bench/results/chaos-api-<date>[-<label>].json`` and ``.md`` (with the command).
Goal (issue 17): every run completes, directly or after one re-run; 0 duplicates, 0
missing, data equal, verify 0, nothing left after the undo, dst as before.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from chaos_common import (  # noqa: E402
    dst_listing,
    faulty_clouds,
    remove_security_group_tenant,
    results_name,
    save_results,
    security_group_tenant,
    undo_through,
    until_zero,
)
from testbed import layout  # noqa: E402
from tests.functional.test_images_support import (  # noqa: E402
    JSON_PATCH,
    MIB,
    ImageFactory,
    download_sha512,
    marked_copies,
)
from tests.functional.test_images_support import connect as image_connect  # noqa: E402
from tests.functional.volumes_support import (  # noqa: E402
    Sandbox,
    digest_of,
    expected_digest,
    file_backend_path,
    write_pattern,
)
from tests.support.faultproxy import Faults  # noqa: E402

from stackhop.clouds import connect  # noqa: E402
from stackhop.kinds.base import Kind  # noqa: E402
from stackhop.kinds.rest import call  # noqa: E402
from stackhop.volumes.cinder_adopt import MARKER  # noqa: E402

COMMANDS = ("images-copy", "volumes-copy", "import")
GIB = 1024**3
#: MiB offsets written into each 1 GiB volume (the rest stays holes).
PIECES = [0, 5, 17, 300, 301, 1023]


class Subject(Protocol):
    """One command under test: what it moves, how it is run, and how dst is counted."""

    def argv(self, journal: Path) -> list[str]: ...
    def snapshot(self) -> Any: ...
    def counted(self, env: dict[str, str]) -> dict[str, Any]: ...
    def clear(self) -> int: ...
    def close(self) -> None: ...


@dataclass
class ImagesCopy:
    """``images copy`` of random images of our own, owned by ``admin``."""

    count: int
    size: int
    factory: ImageFactory = field(
        default_factory=lambda: ImageFactory(image_connect("src"), image_connect("dst"),
                                             prefix=f"shchaosapi-{uuid.uuid4().hex[:6]}-"))
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for n in range(self.count):
            image = self.factory.create(f"img{n}", size=self.size)
            self.sources[image["id"]] = image["os_hash_value"]

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "images", "copy", "--from", "src-faulty", "--to",
                "dst-faulty", "--image", *self.sources]

    def snapshot(self) -> Any:
        dst = self.factory.dst
        return sorted(i["id"] for hidden in ("false", "true") for i in dst.image.get(
            f"/images?member_status=all&os_hidden={hidden}&limit=1000").json()["images"])

    def counted(self, env: dict[str, str]) -> dict[str, Any]:
        dst = self.factory.dst
        copies = {source: marked_copies(dst, source) for source in self.sources}
        wrong = sum(
            1 for source, found in copies.items() for image in found
            if image["status"] != "active" or download_sha512(dst, image["id"])
            != self.sources[source]
        )
        return _tally({s: len(c) for s, c in copies.items()}) | {"data_wrong": wrong}

    def clear(self) -> int:
        dst = self.factory.dst
        left = [c["id"] for source in self.sources for c in marked_copies(dst, source)]
        for image_id in left:
            dst.image.patch(f"/images/{image_id}", headers=JSON_PATCH,
                            json=[{"op": "replace", "path": "/protected", "value": False}])
            dst.image.delete(f"/images/{image_id}")
        return len(left)

    def close(self) -> None:
        self.factory.cleanup()


@dataclass
class VolumesCopy:
    """``volumes copy --method image`` of 1 GiB file volumes of a project of our own."""

    count: int
    box: Sandbox = field(default_factory=lambda: Sandbox.create("shchaosapi"))
    sources: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        try:
            for n in range(self.count):
                volume = self.box.volume(f"vol{n}")
                write_pattern(file_backend_path("src", volume.id), f"chaosapi{n}", PIECES)
                self.sources[volume.id] = expected_digest(GIB, f"chaosapi{n}", PIECES)
        except BaseException:
            self.box.close()
            raise

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "volumes", "copy", "--from", "src-faulty", "--to",
                "dst-faulty", "--project", self.box.name, "--all", "--method", "image"]

    def snapshot(self) -> Any:
        return {"volumes": sorted(v.id for v in self.box.volumes("dst")),
                "images": sorted(i["id"] for side in ("src", "dst")
                                 for i in self.box.images(side))}

    def _copies(self) -> dict[str, list[str]]:
        copies: dict[str, list[str]] = {source: [] for source in self.sources}
        for volume in self.box.volumes("dst"):
            source = (volume.metadata or {}).get(MARKER, "").rsplit(":", 1)[-1]
            if source in copies:
                copies[source].append(volume.id)
        return copies

    def counted(self, env: dict[str, str]) -> dict[str, Any]:
        copies = self._copies()
        wrong = sum(1 for source, ids in copies.items() for copy_id in ids
                    if digest_of("dst", copy_id) != self.sources[source])
        return _tally({s: len(ids) for s, ids in copies.items()}) | {"data_wrong": wrong}

    def clear(self) -> int:
        """Every dst volume of the project and every temporary image still there goes."""
        left = 0
        for side, conn in (("src", self.box.src), ("dst", self.box.dst)):
            for image in self.box.images(side):
                conn.image.delete(f"/images/{image['id']}")
                left += 1
        volumes = self.box.volumes("dst")
        for volume in volumes:
            self.box.dst.block_storage.delete_volume(volume, force=True)
        for volume in volumes:
            self.box.dst.block_storage.wait_for_delete(volume, interval=1, wait=300)
        return left + len(volumes)

    def close(self) -> None:
        self.box.close()


@dataclass
class Import:
    """``import`` of a project's security groups, rules and quotas, exported once."""

    groups: int
    rules: int
    work: Path
    made: dict[str, Any] = field(default_factory=dict)
    archive: Path = field(init=False)

    def __post_init__(self) -> None:
        self.made = security_group_tenant(f"shchaosapi-{uuid.uuid4().hex[:6]}", self.groups,
                                          self.rules)
        self.archive = self.work / "groups.tar.zst"
        export = subprocess.run(
            [sys.executable, "-m", "stackhop.cli.main", "export", "--from", "src", "-o",
             str(self.archive), "--security-groups", "--quotas", "--project", self.made["name"]],
            capture_output=True, text=True, check=False)
        if export.returncode != 0:
            self.close()
            raise RuntimeError(f"export failed: {export.stderr[-400:]}")

    def argv(self, journal: Path) -> list[str]:
        return ["--journal", str(journal), "import", "--to", "dst-faulty", str(self.archive),
                "--security-groups", "--quotas"]

    def snapshot(self) -> Any:
        marks, rules = dst_listing(self.made)
        quota = connect("dst").network.get_quota(self.made["dst_project"])
        return {"groups": sorted(marks.elements()), "rules": sorted(map(str, rules.elements())),
                "quota": quota.to_dict(computed=False)}

    def counted(self, env: dict[str, str]) -> dict[str, Any]:
        marks, rules = dst_listing(self.made)
        row = _tally({gid: marks[gid] for gid in self.made["groups"]})
        row["duplicates"] += sum(n - 1 for n in rules.values() if n > 1)
        verify = subprocess.run(
            [sys.executable, "-m", "stackhop.cli.main", "verify", "--to", "dst",
             str(self.archive), "--security-groups", "--quotas"],
            env=env, capture_output=True, text=True, check=False)
        return row | {"data_wrong": None, "verify_exit": verify.returncode}

    def clear(self) -> int:
        """Every marked group still in the project on dst goes (their rules with them)."""
        dst = connect("dst")
        left = [g for g in dst.network.security_groups(project_id=self.made["dst_project"])
                if Kind.marked_source_id(g.description or "")]
        for group in left:
            call(dst.network, "DELETE", f"/security-groups/{group.id}", missing_ok=True)
        return len(left)

    def close(self) -> None:
        remove_security_group_tenant(self.made)


def _tally(copies: dict[str, int]) -> dict[str, Any]:
    """Duplicates and missing from the number of copies found per source object."""
    return {"sources": len(copies), "duplicates": sum(max(0, n - 1) for n in copies.values()),
            "missing": sum(1 for n in copies.values() if n == 0)}


def _faults(args: argparse.Namespace, seed: int) -> Faults:
    if args.lost_posts:
        return Faults(rate=args.rate, kinds=("drop",), methods=frozenset({"POST"}), seed=seed)
    return Faults(rate=args.rate, seed=seed, stall_seconds=8, retry_after=1)


def _one_seed(command: str, subject: Subject, faults: Faults, work: Path,
              max_runs: int) -> dict[str, Any]:
    here = work / f"{command}-{faults.seed}"
    here.mkdir()
    journal = here / "journal.sqlite"
    row: dict[str, Any] = {"command": command, "seed": faults.seed, "rate": faults.rate,
                           "kinds": list(faults.kinds), "methods": sorted(faults.methods)}
    before = subject.snapshot()
    with faulty_clouds(faults, here) as (proxy, env):
        try:
            row.update(until_zero(env, subject.argv(journal), max_runs))
            row["requests"] = len(proxy.log)
            row["posts"] = sum(d.method == "POST" for d in proxy.log)
            row["faults"] = dict(Counter(d.fault for d in proxy.faulted()))
            # Which applied requests went unanswered (the cases that could make a duplicate).
            row["lost_answers"] = [f"{d.method} {d.path}" for d in proxy.faulted("drop")]
            row.update(subject.counted(env))
        finally:
            row.update(undo_through(proxy, env, journal))
    row["left_after_undo"] = subject.clear()
    row["dst_as_before"] = subject.snapshot() == before
    return row


def _goal(row: dict[str, Any]) -> bool:
    return (
        row["completed"] and row["runs"] <= 2 and row["duplicates"] == 0
        and row["missing"] == 0 and not row["data_wrong"] and row.get("verify_exit", 0) == 0
        and "undo_error" not in row and row["left_after_undo"] == 0 and row["dst_as_before"]
        and not any(s.startswith("NOT ONE LINE") for s in row["stops"])
    )


def _table(rows: list[dict[str, Any]]) -> list[str]:
    table = ["| command | seed | faults | requests | POSTs | faulted | runs | seconds | duplicates "
             "| missing | data wrong | verify | left after undo | dst as before |",
             "|" + "---|" * 14]
    for r in rows:
        kinds = "lost POST answers" if r["kinds"] == ["drop"] else "all kinds"
        faulted = ", ".join(f"{k} {n}" for k, n in sorted(r["faults"].items())) or "0"
        table.append(
            f"| {r['command']} | {r['seed']} | {r['rate']:.0%} {kinds} | {r['requests']} "
            f"| {r['posts']} "
            f"| {faulted} | {r['runs']}{'' if r['completed'] else ' (incomplete)'} "
            f"| {r['seconds']} | {r['duplicates']} | {r['missing']} "
            f"| {'-' if r['data_wrong'] is None else r['data_wrong']} "
            f"| {r.get('verify_exit', '-')} | {r['left_after_undo']} | {r['dst_as_before']} |"
        )
    return table


def _subject(command: str, args: argparse.Namespace, work: Path) -> Subject:
    if command == "images-copy":
        return ImagesCopy(args.images, args.image_mib * MIB)
    if command == "volumes-copy":
        return VolumesCopy(args.volumes)
    return Import(args.groups, args.rules, work)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--command", default=",".join(COMMANDS),
                        help=f"comma list of {', '.join(COMMANDS)}")
    parser.add_argument("--seeds", default="17,18,19,20,21")
    parser.add_argument("--rate", type=float, default=0.1)
    parser.add_argument("--lost-posts", action="store_true",
                        help="only lost answers (drop), on --rate of the POSTs")
    parser.add_argument("--max-runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=5)
    parser.add_argument("--image-mib", type=int, default=4)
    parser.add_argument("--volumes", type=int, default=1)
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--rules", type=int, default=5)
    parser.add_argument("--label", help="results as chaos-api-<date>-LABEL")
    parser.add_argument("--no-save", action="store_true")
    args = parser.parse_args(argv)
    commands = args.command.split(",")
    unknown = set(commands) - set(COMMANDS)
    if unknown:
        parser.error(f"unknown commands {sorted(unknown)}; known: {', '.join(COMMANDS)}")
    os.environ.setdefault("OS_CLIENT_CONFIG_FILE", str(layout.CLOUDS_YAML))
    os.environ.setdefault("STACKHOP_SSH_CONFIG", str(layout.SSH_DIR / "ssh_config"))
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="stackhop-chaos-api-") as tmp:
        for command in commands:
            subject = _subject(command, args, Path(tmp))
            try:
                for seed in seeds:
                    rows.append(_one_seed(command, subject, _faults(args, seed), Path(tmp),
                                          args.max_runs))
                    print(json.dumps(rows[-1]), flush=True)
            finally:
                subject.close()
    ok = bool(rows) and all(_goal(r) for r in rows)
    table = _table(rows)
    print("\n".join(table))
    print("goal met" if ok else "GOAL NOT MET")
    if not args.no_save:
        save_results(
            results_name("chaos-api", args.label), "chaos_api.py", argv,
            {"rate": args.rate, "lost_posts": args.lost_posts, "rows": rows, "goal_met": ok},
            table,
        )
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
