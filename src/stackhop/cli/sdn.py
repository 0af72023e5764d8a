"""``stackhop sdn midonet ...``: MidoNet controller migration with rollback.

Thin: each handler parses, calls :mod:`stackhop.sdn`, renders the result.
See ``docs/sdn.md`` for the procedure and the backup file format.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from stackhop.cli.output import add_format_options, plain, render_one
from stackhop.errors import ConfigError
from stackhop.journal import Journal
from stackhop.sdn import cluster, endpoints, neutron_db, zk_address
from stackhop.sdn.backup import take_backup
from stackhop.sdn.prepare import prepare
from stackhop.sdn.recreate import recreate
from stackhop.sdn.rollback import rollback
from stackhop.sdn.status import collect_status
from stackhop.sdn.switch import revert, switch

DEFAULT_ROOT = zk_address.DEFAULT_ROOT
ROOT_HELP = ("the topology's ZooKeeper subtree (default: [zookeeper] root_key of "
             f"/etc/midonet/midonet.conf or ~/.midonetrc, else {DEFAULT_ROOT})")

Subparsers = argparse._SubParsersAction  # type: ignore[type-arg]


def _neutron_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=required)
    group.add_argument("--neutron-conf", metavar="FILE",
                       help="neutron.conf whose [database] connection names the Neutron DB")
    group.add_argument("--neutron-db", metavar="URL",
                       help="the Neutron database as a URL (mysql+pymysql://user:pw@host:port/db)")


def _hook_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--pre-hook", metavar="CMD",
                        help="shell command run before the step (e.g. stop a service)")
    parser.add_argument("--post-hook", metavar="CMD",
                        help="shell command run after the step succeeded "
                        "(e.g. restart the cluster)")


def _zk_option(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--zk", metavar="HOST:PORT",
                        help="ZooKeeper of the MidoNet cluster (default: [zookeeper] "
                        "zookeeper_hosts of /etc/midonet/midonet.conf, then ~/.midonetrc)")
    parser.add_argument("--root", metavar="PATH", help=ROOT_HELP)


def _dry_run_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dry-run", action="store_true",
                        help="check everything and show what each step would change; "
                        "change nothing")


def register(subparsers: Subparsers) -> None:
    """Add the ``sdn`` command group (``sdn midonet prepare|backup|switch-endpoints|...``)."""
    sdn = subparsers.add_parser("sdn", help="migrate an SDN controller's state, with rollback",
                                description="SDN controller migration. See docs/sdn.md.")
    controllers = sdn.add_subparsers(title="controllers", dest="controller", metavar="CONTROLLER",
                                     required=True)
    midonet = controllers.add_parser(
        "midonet", help="MidoNet: legacy ZooKeeper topology -> Neutron importer",
        description="Steps, in order: prepare, backup, apply-settings, switch-endpoints, "
        "restart-neutron, (the import), recreate-controller-objects, apply-settings --mode "
        "normal; rollback undoes them. Every step takes --dry-run.",
    )
    steps = midonet.add_subparsers(title="steps", dest="step", metavar="STEP", required=True)

    p = steps.add_parser("prepare", help="queue the Neutron topology as importer tasks",
                         description="Read the Neutron topology, queue one create task per "
                         "object in dependency order, write the importer settings (0600) and "
                         "the controller objects Neutron does not own. Changes no topology.")
    _neutron_options(p, required=True)
    p.add_argument("--data-dir", required=True, type=Path, metavar="DIR",
                   help="where mn-conf.settings and controller-objects/ are written")
    p.add_argument("--zk", metavar="HOST:PORT",
                   help="ZooKeeper, to export controller objects that are not Neutron's")
    p.add_argument("--root", metavar="PATH", help=ROOT_HELP)
    _hook_options(p)
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_prepare)

    p = steps.add_parser("backup", help="dump the ZooKeeper topology to a verified file",
                         description="Dump the subtree with data and ACLs to a checksummed "
                         "file, verified against the live tree. With --neutron-*, the file "
                         "also keeps midonet_data_state for the rollback.")
    _zk_option(p, required=True)
    p.add_argument("-o", "--output", required=True, type=Path, metavar="FILE")
    p.add_argument("--force", action="store_true", help="overwrite an existing backup file")
    _neutron_options(p, required=False)
    _hook_options(p)
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_backup)

    p = steps.add_parser("switch-endpoints", help="point the config files at the new API port",
                         description="Rewrite the MidoNet API URL in etc/neutron/plugin.ini "
                         "and .midonetrc under --config-root and in the operator's "
                         "~/.midonetrc, keeping byte-exact backups (links stay links; owner, "
                         "group and mode kept); --revert restores them.")
    p.add_argument("--config-root", required=True, type=Path, metavar="DIR")
    p.add_argument("--midonetrc", type=Path, metavar="FILE",
                   help="the operator's midonetrc (default: $STACKHOP_MIDONETRC or "
                   "~/.midonetrc; switched when it has [cli] api_url)")
    p.add_argument("--port", type=int, default=endpoints.DEFAULT_PORT,
                   help=f"the new API port (default: {endpoints.DEFAULT_PORT})")
    p.add_argument("--backup", type=Path, metavar="FILE",
                   help="refuse to switch unless this ZooKeeper backup is intact")
    p.add_argument("--revert", action="store_true", help="restore the original files")
    p.add_argument("--force", action="store_true",
                   help="with --revert: overwrite files edited since the switch")
    _hook_options(p)
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_switch)

    p = steps.add_parser("apply-settings", help="apply the importer (or normal-mode) settings",
                         description="Save the cluster configuration (dump command) once, "
                         "then feed DATA_DIR/mn-conf.settings (--mode importer) or "
                         "mn-conf.normal.settings (--mode normal) to the set command; "
                         "--revert restores the saved configuration and checks it byte for "
                         "byte.")
    p.add_argument("--data-dir", required=True, type=Path, metavar="DIR",
                   help="the data directory of prepare")
    p.add_argument("--mode", choices=sorted(cluster.MODES), default="importer")
    p.add_argument("--set-command", default=cluster.SET_COMMAND, metavar="CMD",
                   help=f"reads settings on stdin (default: {cluster.SET_COMMAND!r})")
    p.add_argument("--dump-command", default=cluster.DUMP_COMMAND, metavar="CMD",
                   help=f"prints the configuration (default: {cluster.DUMP_COMMAND!r})")
    p.add_argument("--restore-command", default=cluster.RESTORE_COMMAND, metavar="CMD",
                   help="replaces the configuration with what it reads on stdin "
                   f"(default: {cluster.RESTORE_COMMAND!r})")
    p.add_argument("--revert", action="store_true",
                   help="restore the configuration saved before the first settings")
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_apply_settings)

    p = steps.add_parser("restart-neutron", help="restart neutron-server (journaled)",
                         description="Run the neutron-server restart command as a journaled "
                         "step (after switch-endpoints).")
    p.add_argument("--command", dest="restart_command", default=cluster.RESTART_COMMAND,
                   metavar="CMD", help=f"default: {cluster.RESTART_COMMAND!r}")
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_restart)

    p = steps.add_parser("recreate-controller-objects",
                         help="write back the controller objects prepare saved",
                         description="After the import: write the saved tunnel zones, hosts' "
                         "memberships and operator-made chains back into ZooKeeper; "
                         "idempotent, one multi-op per object.")
    _zk_option(p, required=False)
    p.add_argument("--data-dir", required=True, type=Path, metavar="DIR")
    p.add_argument("--force", action="store_true",
                   help="set the saved data on nodes that exist with other data")
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_recreate)

    p = steps.add_parser("rollback", help="restore ZooKeeper, remove queued tasks, revert config",
                         description="Restore the ZooKeeper subtree exactly, remove the queued "
                         "tasks without resetting the ID sequence, restore midonet_data_state, "
                         "revert the endpoints; then check that all of it holds.")
    p.add_argument("--zk", metavar="HOST:PORT",
                   help="ZooKeeper of the MidoNet cluster (default: as for backup)")
    p.add_argument("--backup", required=True, type=Path, metavar="FILE")
    _neutron_options(p, required=True)
    p.add_argument("--config-root", type=Path, metavar="DIR",
                   help="also revert the endpoints switched under this root")
    p.add_argument("--force", action="store_true",
                   help="revert config files even if edited since the switch")
    p.add_argument("--all-tasks", action="store_true",
                   help="remove every task, not only stackhop's (the counter is kept the same)")
    p.add_argument("--counter-init-file", type=Path, metavar="FILE",
                   help="on MySQL < 8.0 / MariaDB < 10.2.4: the server's init_file, where "
                   "the task ID counter is raised at every start")
    p.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="also restore the cluster configuration apply-settings saved there")
    p.add_argument("--restart-command", metavar="CMD",
                   help="restart neutron-server after the endpoints are reverted")
    _hook_options(p)
    _dry_run_option(p)
    add_format_options(p, columns=False)
    p.set_defaults(func=_rollback)

    p = steps.add_parser("status", help="what is prepared, backed up, switched; task counts")
    _neutron_options(p, required=False)
    p.add_argument("--data-dir", type=Path, metavar="DIR")
    p.add_argument("--backup", type=Path, metavar="FILE")
    p.add_argument("--config-root", type=Path, metavar="DIR")
    add_format_options(p, columns=False)
    p.set_defaults(func=_status)


def _show(args: argparse.Namespace, result: Any, title: str) -> int:
    data = plain(result)
    flat = {k: v for k, v in data.items()} if isinstance(data, dict) else {"result": data}
    render_one(flat, args.format, sys.stdout, title=title if args.format == "table" else None)
    return 0


@contextmanager
def _file_errors() -> Iterator[None]:
    """A file that cannot be read or written is one line, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ConfigError(f"{where}{exc.strerror or exc}; check the path and its permissions") \
            from exc


def _with_journal(args: argparse.Namespace, work: Any) -> Any:
    # Progress events go to args.events, which main() renders on stderr.
    if getattr(args, "dry_run", False):
        # A dry run writes nothing, not even a journal file: the steps never reach it.
        with _file_errors():
            return work(None)
    with _file_errors(), Journal(args.journal) as journal:
        return work(journal)


def _optional_db(args: argparse.Namespace) -> neutron_db.NeutronDatabase | None:
    if args.neutron_conf or args.neutron_db:
        return neutron_db.resolve(args.neutron_conf, args.neutron_db)
    return None


def _prepare(args: argparse.Namespace) -> int:
    db = neutron_db.resolve(args.neutron_conf, args.neutron_db)
    result = _with_journal(args, lambda journal: prepare(
        db, args.data_dir, journal, zk=args.zk, zk_root=zk_address.resolve_root(args.root),
        pre_hook=args.pre_hook, post_hook=args.post_hook, dry_run=args.dry_run,
        events=args.events))
    return _show(args, result, "Prepared")


def _backup(args: argparse.Namespace) -> int:
    db = _optional_db(args)
    result = _with_journal(args, lambda journal: take_backup(
        zk_address.resolve(args.zk), zk_address.resolve_root(args.root), args.output, journal,
        db=db, force=args.force, dry_run=args.dry_run,
        pre_hook=args.pre_hook, post_hook=args.post_hook, events=args.events))
    return _show(args, result, "Backup")


def _switch(args: argparse.Namespace) -> int:
    if args.revert:
        result = _with_journal(args, lambda journal: revert(
            args.config_root, journal, force=args.force, dry_run=args.dry_run,
            pre_hook=args.pre_hook, post_hook=args.post_hook, events=args.events))
    else:
        result = _with_journal(args, lambda journal: switch(
            args.config_root, args.port, journal, backup=args.backup,
            midonetrc=args.midonetrc or endpoints.home_midonetrc(), dry_run=args.dry_run,
            pre_hook=args.pre_hook, post_hook=args.post_hook, events=args.events))
    return _show(args, result, "Endpoints")


def _rollback(args: argparse.Namespace) -> int:
    db = neutron_db.resolve(args.neutron_conf, args.neutron_db)
    result = _with_journal(args, lambda journal: rollback(
        zk_address.resolve(args.zk), args.backup, db, journal, config_root=args.config_root,
        force=args.force,
        all_tasks=args.all_tasks, counter_init_file=args.counter_init_file,
        data_dir=args.data_dir, restart_command=args.restart_command, dry_run=args.dry_run,
        pre_hook=args.pre_hook, post_hook=args.post_hook, events=args.events))
    return _show(args, result, "Rollback")


def _apply_settings(args: argparse.Namespace) -> int:
    if args.revert:
        result = _with_journal(args, lambda journal: cluster.revert_settings(
            args.data_dir, journal, dry_run=args.dry_run, events=args.events))
    else:
        result = _with_journal(args, lambda journal: cluster.apply_settings(
            args.data_dir, args.mode, journal, set_command=args.set_command,
            dump_command=args.dump_command, restore_command=args.restore_command,
            dry_run=args.dry_run, events=args.events))
    return _show(args, result, "Cluster settings")


def _restart(args: argparse.Namespace) -> int:
    result = _with_journal(args, lambda journal: cluster.restart_neutron(
        args.restart_command, journal, dry_run=args.dry_run, events=args.events))
    return _show(args, result, "neutron-server")


def _recreate(args: argparse.Namespace) -> int:
    result = _with_journal(args, lambda journal: recreate(
        zk_address.resolve(args.zk), args.data_dir, journal, root=args.root, force=args.force,
        dry_run=args.dry_run, events=args.events))
    return _show(args, result, "Controller objects")


def _status(args: argparse.Namespace) -> int:
    with _file_errors():
        result = collect_status(
            _optional_db(args), data_dir=args.data_dir, backup=args.backup,
            config_root=args.config_root, journal_location=args.journal,
        )
    return _show(args, result, "MidoNet migration")
