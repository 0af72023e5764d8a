"""``python -m testbed up|down|status|seed|env`` — see docs/testbed.md."""

from __future__ import annotations

import argparse
import shutil
import sys
import time

from testbed import layout
from testbed.component import bring_up, stop_all
from testbed.process import TestbedError
from testbed.registry import all_components


def cmd_up(args: argparse.Namespace) -> int:
    from testbed import outputs

    t0 = time.monotonic()
    layout.make_dirs()
    bring_up(all_components(), only=set(args.only) if args.only else None)
    outputs.write_all()
    print(f"testbed up in {time.monotonic() - t0:.1f}s; source {layout.ENV_FILE} to use it")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stop_all(all_components())
    if args.purge and layout.STATE_DIR.exists():
        shutil.rmtree(layout.STATE_DIR)
        print(f"removed {layout.STATE_DIR}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    bad = 0
    for c in all_components():
        for d in c.daemons:
            pid = d.pid()
            ok = pid is not None and d.check()
            bad += not ok
            state = "answers" if ok else ("NOT ANSWERING" if pid else "DOWN")
            print(f"{d.name:<30} {state:<14} pid {pid or '-'}")
        for label, check in c.checks.items():
            ok = check()
            bad += not ok
            print(f"{label:<30} {'ok' if ok else 'FAILING':<14}")
    return 1 if bad else 0


def cmd_seed(args: argparse.Namespace) -> int:
    from testbed import seed

    seed.run()
    return 0


def cmd_legacy_dbs(args: argparse.Namespace) -> int:
    from testbed.legacy_db import liberty, pg_mirror

    t0 = time.monotonic()
    pg_mirror.mirror()
    liberty.build()
    print(f"legacy databases ready in {time.monotonic() - t0:.1f}s")
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    if not layout.ENV_FILE.exists():
        print("testbed not set up; run: make testbed-up", file=sys.stderr)
        return 1
    sys.stdout.write(layout.ENV_FILE.read_text())
    return 0


def cmd_undo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from testbed.undo import undo_migration

    removed = undo_migration(Path(args.journal), args.to)
    print(f"undo: removed {len(removed)} thing(s) from {args.to}: " + "; ".join(removed))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m testbed", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="boot everything (idempotent; restarts what died)")
    up.add_argument("--only", nargs="*", help="bring up only these components (and what they need)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop everything the testbed started, by PID")
    down.add_argument("--purge", action="store_true", help="also remove the state directory")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="each service and whether it answers")
    status.set_defaults(func=cmd_status)
    seed = sub.add_parser("seed", help="fill src (and a little of dst) with sample tenant data")
    seed.set_defaults(func=cmd_seed)
    sub.add_parser(
        "legacy-dbs",
        help="after seed: src's databases on PostgreSQL, and Liberty-shaped ones on both servers",
    ).set_defaults(func=cmd_legacy_dbs)
    sub.add_parser("env", help="print the env file (source it to use the clouds)").set_defaults(
        func=cmd_env
    )
    undo = sub.add_parser(
        "undo", help="remove from dst what a migration (demo, test) created, given its journal"
    )
    undo.add_argument("--journal", required=True, help="the migration's journal file")
    undo.add_argument("--to", default="dst", help="the cloud to undo it on (default: dst)")
    undo.set_defaults(func=cmd_undo)
    args = p.parse_args(argv)
    try:
        return int(args.func(args))
    except TestbedError as exc:
        print(f"testbed: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
