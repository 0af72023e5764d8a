"""What the chaos benchmarks share: the fault proxy over both clouds, re-runs, the undo,
and the security-group tenant the ``import`` runs move.

:func:`faulty_clouds` puts :class:`tests.support.faultproxy.FaultProxy` in front of every
API of src and dst (from their catalogs) and gives the environment that names them
``src-faulty``/``dst-faulty`` (clouds.yaml and storage map); :func:`undo_through` removes
what a journal's runs made on ``dst-faulty`` with the faults off; :func:`until_zero`
re-runs a stackhop command until it exits 0, keeping each stop's last line.
:func:`security_group_tenant` makes a project of its own on both clouds with groups,
rules and quotas on src; :func:`dst_listing` counts them on dst by marker.

The scripts put ``src/`` and the repository root on ``sys.path`` before importing this.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import json
import os
import shlex
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml
from testbed import layout
from testbed.undo import undo_migration
from tests.support.faultproxy import FaultProxy, Faults, catalog_upstreams, write_clouds_yaml

from stackhop.clouds import connect
from stackhop.kinds.base import Kind
from stackhop.kinds.rest import call, paged

ROOT = Path(__file__).resolve().parent.parent


def faulty_storage_map(work: Path) -> Path:
    """The testbed's storage map with ``src-faulty``/``dst-faulty`` beside ``src``/``dst``."""
    source = Path(os.environ.get("STACKHOP_STORAGE_MAP") or layout.STORAGE_MAP)
    data = yaml.safe_load(source.read_text())
    for name in ("src", "dst"):
        data[f"{name}-faulty"] = copy.deepcopy(data[name])  # no YAML alias: refused
    out = work / "storage.yaml"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(data, handle)
    return out


@contextlib.contextmanager
def faulty_clouds(faults: Faults, work: Path) -> Iterator[tuple[FaultProxy, dict[str, str]]]:
    """The proxy over both clouds, and a child environment naming ``src-faulty``/``dst-faulty``
    (clouds.yaml and storage map written into ``work``)."""
    upstreams = catalog_upstreams(connect("src")) | catalog_upstreams(connect("dst"))
    with FaultProxy(sorted(upstreams), faults) as proxy:
        clouds = write_clouds_yaml(proxy, Path(os.environ["OS_CLIENT_CONFIG_FILE"]),
                                   work / "clouds.yaml", ["src", "dst"], timeout=4)
        env = {**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds),
               "STACKHOP_STORAGE_MAP": str(faulty_storage_map(work)),
               "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
        yield proxy, env


def undo_through(proxy: FaultProxy, env: dict[str, str], journal: Path) -> dict[str, Any]:
    """``testbed.undo`` of the journal's runs into ``dst-faulty``, through ``proxy`` with its
    faults off: ``{"undone": n}``, or ``{"undo_error": ...}`` when a stackhop call failed."""
    proxy.enabled = False
    names = ("OS_CLIENT_CONFIG_FILE", "STACKHOP_STORAGE_MAP")
    plain = {name: os.environ.get(name) for name in names}
    os.environ.update({name: env[name] for name in names})
    try:
        return {"undone": len(undo_migration(journal, destination="dst-faulty"))}
    except subprocess.CalledProcessError as exc:
        return {"undo_error": f"{' '.join(map(str, exc.cmd[5:7]))} exited {exc.returncode}"}
    finally:
        for name, value in plain.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def until_zero(env: dict[str, str], argv: list[str], max_runs: int) -> dict[str, Any]:
    """``stackhop argv`` re-run until it exits 0 (at most ``max_runs``); each stop's last line
    (``NOT ONE LINE: ...`` when it was not one ``stackhop`` line)."""
    started = time.monotonic()
    stops: list[str] = []
    for _ in range(max_runs):
        proc = subprocess.run([sys.executable, "-m", "stackhop.cli.main", *argv], env=env,
                              capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return {"runs": len(stops) + 1, "seconds": round(time.monotonic() - started, 2),
                    "stops": stops, "completed": True}
        lines = proc.stderr.strip().splitlines()
        one_line = bool(lines) and lines[-1].startswith("stackhop")
        one_line = one_line and "Traceback" not in proc.stderr
        stops.append(lines[-1] if one_line else f"NOT ONE LINE: {proc.stderr[-400:]}")
    return {"runs": max_runs, "seconds": round(time.monotonic() - started, 2), "stops": stops,
            "completed": False}


def security_group_tenant(name: str, groups: int, rules: int) -> dict[str, Any]:
    """Project ``name`` on both clouds; on src ``groups`` groups of ``rules`` rules each (one
    naming the previous group) and quotas; dst's quotas differ (an import updates them)."""
    src, dst = connect("src"), connect("dst")
    made: dict[str, Any] = {"name": name, "groups": []}
    for side, conn in (("src", src), ("dst", dst)):
        body = {"project": {"name": name, "domain_id": "default", "description": "bench/chaos"}}
        answer = call(conn.identity, "POST", "/projects", json=body)
        made[f"{side}_project"] = answer["project"]["id"]
    for side, conn, spare in (("src", src, 5), ("dst", dst, 10)):
        quota = {"security_group": groups + spare, "security_group_rule": groups * (rules + 3)}
        call(conn.network, "PUT", f"/quotas/{made[f'{side}_project']}", json={"quota": quota})
    project = made["src_project"]
    for i in range(groups):
        body = {"name": f"{name}-{i}", "description": f"chaos {i}", "project_id": project}
        gid = call(src.network, "POST", "/security-groups", json={"security_group": body})
        made["groups"].append(gid["security_group"]["id"])
        items: list[dict[str, Any]] = [
            {"security_group_id": made["groups"][-1], "direction": "ingress", "ethertype": "IPv4",
             "protocol": "tcp", "port_range_min": 1000 + j, "port_range_max": 1000 + j,
             "remote_ip_prefix": f"10.{i % 250}.{j}.0/24", "project_id": project}
            for j in range(rules - (1 if i else 0))
        ]
        if i:
            items.append({"security_group_id": made["groups"][-1], "direction": "ingress",
                          "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 22,
                          "port_range_max": 22, "remote_group_id": made["groups"][-2],
                          "project_id": project})
        call(src.network, "POST", "/security-group-rules", json={"security_group_rules": items})
    return made


def remove_security_group_tenant(made: dict[str, Any]) -> None:
    """Everything :func:`security_group_tenant` made, and what was imported into it, goes."""
    src, dst = connect("src"), connect("dst")
    for gid in made["groups"]:
        call(src.network, "DELETE", f"/security-groups/{gid}", missing_ok=True)
    for side, conn in (("src", src), ("dst", dst)):
        project = made[f"{side}_project"]
        for group in paged(conn.network, f"/security-groups?project_id={project}",
                           "security_groups"):
            call(conn.network, "DELETE", f"/security-groups/{group['id']}", missing_ok=True)
        call(conn.network, "DELETE", f"/quotas/{project}", missing_ok=True)
        call(conn.identity, "DELETE", f"/projects/{project}", missing_ok=True)


def dst_listing(made: dict[str, Any]) -> tuple[Counter[str], Counter[tuple[Any, ...]]]:
    """The tenant's groups on dst by source marker, and its rules by content."""
    dst = connect("dst")
    project = made["dst_project"]
    groups = paged(dst.network, f"/security-groups?project_id={project}", "security_groups")
    marks = Counter(m for g in groups if (m := Kind.marked_source_id(g.get("description") or "")))
    ids = {g["id"] for g in groups if g["name"] != "default"}
    rules = Counter(
        (r["security_group_id"], r["direction"], r["ethertype"], r["protocol"],
         r["port_range_min"], r["remote_ip_prefix"], r["remote_group_id"])
        for r in paged(dst.network, f"/security-group-rules?project_id={project}",
                       "security_group_rules")
        if r["security_group_id"] in ids
    )
    return marks, rules


def kill_trials(kills: int, journal: str, rng: Any, window: float,
                trial: Callable[[float, bool], dict[str, Any]]) -> list[dict[str, Any]]:
    """Trials until ``kills`` of them killed the command before its end (``--kills``).

    ``trial(at, keep)`` kills the command ``at`` seconds in, keeping its journal or not,
    and returns its row (``finished_before_kill`` true when the command was done by then).
    With ``journal`` ``both``, half the kills keep the journal and half delete it. A trial
    that came too late is kept in the rows but does not count, and the window (seconds
    drawn from, at first the uninterrupted run's) shrinks to 80 % of that moment; at most
    ``3 * kills`` trials.
    """
    wanted = {"kept": 0, "deleted": 0}
    if journal == "both":
        wanted["kept"], wanted["deleted"] = kills - kills // 2, kills // 2
    else:
        wanted[journal] = kills
    done = {"kept": 0, "deleted": 0}
    rows: list[dict[str, Any]] = []
    while done != wanted and len(rows) < 3 * kills:
        keep = wanted["kept"] - done["kept"] >= wanted["deleted"] - done["deleted"]
        at = rng.uniform(0.5, max(1.0, window))
        rows.append(trial(at=at, keep=keep))
        print(json.dumps(rows[-1]), flush=True)
        if rows[-1]["finished_before_kill"]:
            window = max(1.0, 0.8 * at)
        else:
            done["kept" if keep else "deleted"] += 1
    return rows


def results_name(stem: str, label: str | None) -> str:
    """``<stem>-<today>[-<label>]``: a results file's name, one per labelled run."""
    return f"{stem}-{dt.date.today().isoformat()}" + (f"-{label}" if label else "")


def save_results(name: str, script: str, argv: list[str] | None, payload: dict[str, Any],
                 table: list[str], results: Path | None = None) -> Path:
    """Write ``bench/results/<name>.json`` (``payload`` with the command and the load) and
    ``.md`` (the command, then ``table``); the command is how ``script`` was run."""
    command = " ".join([".venv/bin/python", f"bench/{script}",
                        *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    out = (results or Path(__file__).resolve().parent / "results") / name
    out.with_suffix(".json").write_text(json.dumps(
        {"command": command, **payload, "load": os.getloadavg()}, indent=1))
    out.with_suffix(".md").write_text(f"```\n{command}\n```\n\n" + "\n".join(table) + "\n")
    return out
