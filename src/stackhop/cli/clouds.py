"""``stackhop clouds [--check] [NAME ...]``: the configured clouds; can stackhop use them?"""

from __future__ import annotations

import argparse
import sys
import traceback
from typing import Any

from stackhop.cli.output import add_format_options, dump, render_one, render_table, report_error
from stackhop.clouds import CloudConfig, CloudReport, check, cloud_config, list_clouds
from stackhop.errors import StackhopError, UsageError

LIST_COLUMNS = ("Name", "Auth URL", "Region", "User", "Project", "Source")
STATUS_STYLES = {"present": "green", "MISSING": "bold red"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``clouds`` command."""
    p = subparsers.add_parser(
        "clouds",
        help="list the configured clouds; --check tests what stackhop needs of each",
        description=(
            "List the clouds of clouds.yaml, OS_CLOUD and OS_* variables (the "
            "'envvars' cloud) as the openstack client reads them; never a password. "
            "With --check, authenticate to each (or to the named ones), list the "
            "service catalog, the API versions and microversions, and mark what "
            "stackhop needs that is missing. Exits non-zero when a cloud fails."
        ),
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="only these clouds")
    p.add_argument(
        "--check",
        action="store_true",
        help="authenticate and report services, versions and missing capabilities",
    )
    add_format_options(p)
    p.set_defaults(func=run)


def _selected(names: list[str]) -> list[CloudConfig]:
    if not names:
        return list_clouds()
    # One lookup per name so that an unknown one fails with the list of known ones.
    return [cloud_config(n) for n in names]


def _listing_row(c: CloudConfig) -> dict[str, Any]:
    return dict(
        zip(LIST_COLUMNS, (c.name, c.auth_url, c.region, c.user, c.project, c.source), strict=True)
    )


def run(args: argparse.Namespace) -> int:
    clouds = _selected(args.names)
    if not args.check:
        render_table(
            [_listing_row(c) for c in clouds], LIST_COLUMNS, args.format, selected=args.columns
        )
        return 0
    if args.columns:
        raise UsageError("-c selects columns of the listing; with --check use -f json or -f yaml")
    if not clouds:
        raise UsageError("no clouds configured (see clouds.yaml, OS_CLOUD, OS_* variables)")

    reports: list[dict[str, Any]] = []
    exit_code = 0
    for c in clouds:
        try:
            report = check(c.name, events=args.events)
        except StackhopError as exc:
            # Report every cloud, then fail with the first failure's code.
            if args.verbose:
                traceback.print_exception(exc)
            report_error(exc)
            exit_code = exit_code or exc.exit_code
            reports.append({"cloud": c.name, "ok": False, "error": exc.message})
            continue
        reports.append(_report_document(report))
        if args.format == "table":
            _print_report(report)
    if args.format != "table":
        dump(reports, args.format, sys.stdout)
    return exit_code


def _report_document(r: CloudReport) -> dict[str, Any]:
    """The JSON/YAML shape of a report: stable keys for scripts."""
    return {
        "cloud": r.cloud,
        "ok": True,
        "error": None,
        "auth_url": r.auth_url,
        "region": r.region,
        "user": r.user,
        "project": r.project,
        "roles": r.roles,
        "services": r.services,
        "endpoints": r.endpoints,
        "apis": r.apis,
        "image_stores": r.image_stores,
        "image_import_methods": r.image_import_methods,
        "capabilities": r.capabilities,
        "missing": [c.name for c in r.missing],
    }


def _print_report(r: CloudReport) -> None:
    render_one(
        {
            "Cloud": r.cloud,
            "Auth URL": r.auth_url,
            "Region": r.region,
            "User": r.user,
            "Project": r.project,
            "Roles": ", ".join(r.roles),
            "Missing": ", ".join(c.name for c in r.missing) or "nothing",
        },
        "table",
        title=f"Cloud {r.cloud}",
    )
    render_table(
        [
            {
                "Service": e.service_type,
                "Name": e.service_name,
                "Interface": e.interface,
                "Region": e.region,
                "URL": e.url,
            }
            for e in r.endpoints
        ],
        ("Service", "Name", "Interface", "Region", "URL"),
        "table",
        title="Endpoints",
    )
    render_table(
        [
            {
                "Service": a.service_type,
                "Version": a.version,
                "Status": a.status,
                "Min microversion": a.min_microversion,
                "Max microversion": a.max_microversion,
                "All versions": ", ".join(a.versions),
            }
            for a in r.apis
        ],
        ("Service", "Version", "Status", "Min microversion", "Max microversion", "All versions"),
        "table",
        title="API versions",
    )
    render_table(
        [
            {
                "Capability": c.name,
                "Status": "present" if c.present else "MISSING",
                "Detail": c.detail,
                "Needed for": c.needed_for,
            }
            for c in r.capabilities
        ],
        ("Capability", "Status", "Detail", "Needed for"),
        "table",
        title="What stackhop needs",
        styles=STATUS_STYLES,
    )
