"""The volume benchmark's arithmetic: straight-line fits, the issue-18 goals, disk room, Markdown.

``bench/volumes.py`` measures; this module turns its measurements into the
fixed cost (intercept, seconds) and the cost per GiB (slope, seconds per GiB)
of each contender, from the two sizes measured per shape, and judges the goals
of issue 18 and, for continuity, those of issue 6 (from the small-size points).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
GIB = 1024 * MIB


def fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """The line through two (GiB, seconds) points: ``fixed_s`` + ``per_gib_s`` x GiB."""
    (x1, y1), (x2, y2) = points
    slope = (y2 - y1) / (x2 - x1)
    return {"fixed_s": round(y1 - slope * x1, 3), "per_gib_s": round(slope, 3)}


def ratio(top: float, bottom: float) -> float | None:
    """``top / bottom``, or None when the bottom is not a positive number (a noisy fit)."""
    return round(top / bottom, 3) if bottom > 0 else None


def fits(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every contender's fit, named ``<contender>/<shape>``, from the measured points."""
    found: dict[str, dict[str, Any]] = {}
    for section in ("stream", "rbd"):
        rows = results.get(section)
        if not rows or "error" in rows:
            continue
        for shape in ("sparse", "dense"):
            points = rows.get(shape, [])
            if len(points) != 2:
                continue
            for contender, key in CONTENDERS[section]:
                values = [p.get(key) for p in points]
                if any(v is None for v in values):
                    continue
                sizes = [p["size"] / GIB for p in points]
                line = fit([(sizes[0], float(values[0])), (sizes[1], float(values[1]))])
                found[f"{contender}/{shape}"] = {
                    **line,
                    "points": list(zip(sizes, values, strict=True)),
                }
    return found


# (contender, key of its seconds in a size point), per section.
CONTENDERS = {
    "stream": [("stream_pass", "pass_s"), ("raw_ssh_one_hop", "raw_one_hop_s")],
    "rbd": [
        ("rbd_pass", "pass_s"),
        ("rbd_pass_trust_writes", "trust_writes_s"),
        ("rbd_export_import", "export_import_s"),
    ],
}


def _judge(value: float | None, limit: float) -> dict[str, Any]:
    return {"value": value, "limit": limit, "pass": value is not None and value <= limit}


def goals(results: dict[str, Any], lines: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The issue-18 table's rows, measured: value, limit and pass each."""
    out: dict[str, Any] = {}
    for shape in ("sparse", "dense"):
        rbd, plain = lines.get(f"rbd_pass/{shape}"), lines.get(f"rbd_export_import/{shape}")
        if rbd and plain:
            out[f"rbd_slope_vs_export_import_{shape}"] = _judge(
                ratio(rbd["per_gib_s"], plain["per_gib_s"]), 1.1
            )
        if rbd:
            out[f"rbd_fixed_cost_s_{shape}"] = _judge(rbd["fixed_s"], 3.0)
        trusting = lines.get(f"rbd_pass_trust_writes/{shape}")
        if trusting and plain:  # reference only: not the default verification
            out[f"rbd_trust_writes_slope_vs_export_import_{shape}"] = {
                "value": ratio(trusting["per_gib_s"], plain["per_gib_s"]),
                "limit": 1.1,
                "reference": True,
            }
    stream, raw = lines.get("stream_pass/dense"), lines.get("raw_ssh_one_hop/dense")
    if stream and raw:
        out["stream_slope_vs_raw_ssh_dense"] = _judge(
            ratio(stream["per_gib_s"], raw["per_gib_s"]), 1.25
        )
    for section, limit in (("rbd", 0.05), ("stream", 0.15)):
        points = (results.get(section) or {}).get("sparse") or []
        if len(points) == 2 and "incremental" in points[1]:
            out[f"{section}_incremental_vs_full_large_sparse"] = _judge(
                points[1]["incremental"]["ratio_to_full"], limit
            )
        if len(points) == 2 and all("incremental" in p for p in points):
            small, large = (p["incremental"] for p in points)
            bytes_ratio = large["changed_bytes"] / small["changed_bytes"]
            time_ratio = large["seconds"] / small["seconds"]
            # Upper bound: the time may grow at most 1.5x as fast as the changed bytes.
            out[f"{section}_incremental_growth"] = {
                **_judge(ratio(time_ratio, bytes_ratio), 1.5),
                "time_ratio": round(time_ratio, 3),
                "changed_bytes_ratio": round(bytes_ratio, 3),
            }
    rss = [
        p["peak_rss_mb"]
        for section in ("stream", "rbd")
        for shape in ("sparse", "dense")
        for p in ((results.get(section) or {}).get(shape) or [])
        if "peak_rss_mb" in p
    ]
    if rss:
        out["peak_rss_mb"] = {**_judge(max(rss), 255.999), "limit": 256}
    return out


def continuity(results: dict[str, Any]) -> dict[str, Any]:
    """Issue 6's single-size ratios, from the small-size points (as the old runs reported)."""
    out: dict[str, Any] = {}
    stream = results.get("stream") or {}
    sparse, dense = ((stream.get(s) or [{}])[0] for s in ("sparse", "dense"))
    if "pipeline_gzip_s" in sparse:
        out["sparse_speedup_pass_vs_gzip"] = _judge_min(sparse["speedup_pass_vs_gzip"], 10)
    if "pipeline_gzip_s" in dense:
        out["dense_speedup_pass_vs_gzip"] = _judge_min(dense["speedup_pass_vs_gzip"], 5)
        out["dense_transfer_vs_raw_one_hop"] = _judge_min(
            ratio(dense["stream_transfer_mbps_data"], dense["raw_one_hop_mbps"]), 0.7
        )
    if "incremental" in sparse:
        out["stream_incremental_vs_full_small_sparse"] = _judge(
            sparse["incremental"]["ratio_to_full"], 0.25
        )
    rbd = results.get("rbd") or {}
    if "error" not in rbd:
        for shape in ("sparse", "dense"):
            points = rbd.get(shape) or []
            if points:
                out[f"rbd_speedup_vs_export_import_{shape}"] = {
                    "value": ratio(points[0]["export_import_s"], points[0]["pass_s"])
                }
        points = rbd.get("sparse") or []
        if points and "incremental" in points[0]:
            out["rbd_incremental_vs_full_small_sparse"] = _judge(
                points[0]["incremental"]["ratio_to_full"], 0.05
            )
    return out


def _judge_min(value: float | None, floor: float) -> dict[str, Any]:
    return {"value": value, "floor": floor, "pass": value is not None and value >= floor}


def disk_shortfall(
    sizes: dict[str, list[float]], fill: dict[str, float], state_dir: Path, tmp: Path
) -> str | None:
    """A one-line refusal if the volumes would not fit on disk, else None.

    The testbed state dir holds, at worst, one source volume's data twice over
    (file backend or Ceph, source and destination) plus the plain ``rbd import``
    copy; /tmp holds the rbd bench's local image and the pipelines' written
    copy of a small volume (``dd`` writes zeros too). 2 GiB spare on each.
    """
    allocated = max(max(sizes[s]) * fill[s] for s in sizes) * GIB
    logical_small = max(sizes[s][0] for s in sizes) * GIB
    need = {state_dir: 3 * allocated + 2 * GIB, tmp: max(allocated, logical_small) + 2 * GIB}
    by_device: dict[int, tuple[Path, float]] = {}
    for path, nbytes in need.items():
        device = os.stat(path).st_dev
        seen = by_device.get(device)
        by_device[device] = (path, nbytes + (seen[1] if seen else 0))
    for path, nbytes in by_device.values():
        free = shutil.disk_usage(path).free
        if free < nbytes:
            return (
                f"not enough disk: the volumes need {nbytes / GIB:.1f} GiB free on {path}'s "
                f"file system, {free / GIB:.1f} GiB are free; free some or choose smaller "
                "--sparse-gib/--dense-gib"
            )
    return None


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value}"


def _verdict(row: dict[str, Any] | None) -> str:
    if row is None:
        return "not measured"
    if row.get("reference"):
        return "(reference)"
    return "PASS" if row["pass"] else "FAIL"


def render(results: dict[str, Any]) -> str:
    """The results as a Markdown page: command, load, the issue's table, the fits, the rest."""
    g, lines = results.get("goals", {}), results.get("fits", {})
    sizes = results["sizes"]
    lines_md = [
        f"# Volume copy benchmark, {results['date']}",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Host {results['host']}, {results['cpus']} CPUs; load average (1/5/15 min) before "
        f"{'/'.join(f'{x:.2f}' for x in results['load_before'])}, after "
        f"{'/'.join(f'{x:.2f}' for x in results['load_after'])}. The machine is shared: "
        "wall times are noisy.",
        "",
        f"Sizes: sparse {sizes['sparse'][0]} and {sizes['sparse'][1]} GiB "
        f"({results['sparse_fill']:.0%} allocated), dense {sizes['dense'][0]} and "
        f"{sizes['dense'][1]} GiB.",
        "",
        *(
            [
                "**Smoke run (`--quick`)**: small sizes on a shared machine; the verdicts "
                "below test the bench, not stackhop. The full-size run (sparse 4 and 32 GiB, "
                "dense 1 and 8 GiB) is `.venv/bin/python bench/volumes.py` on a quiet machine.",
                "",
            ]
            if "--quick" in results["command"]
            else []
        ),
        "## Goals (issue 18)",
        "",
        "| | goal | measured | verdict |",
        "|---|---|---|---|",
    ]

    def row(label: str, goal: str, key: str, unit: str = "×") -> None:
        found = g.get(key)
        value = "n/a" if found is None else f"{_fmt(found['value'])}{unit}"
        if found is not None and unit == "%" and found["value"] is not None:
            value = f"{found['value']:.1%}"
        lines_md.append(f"| {label} | {goal} | {value} | {_verdict(found)} |")

    for shape in ("sparse", "dense"):
        row(
            f"rbd method slope vs `rbd export \\| rbd import` slope ({shape})",
            "≤ 1.1×",
            f"rbd_slope_vs_export_import_{shape}",
        )
    if "rbd_trust_writes_slope_vs_export_import_dense" in g:
        row(
            "(reference) the same with `--trust-writes`, nothing read back (dense)",
            "≤ 1.1×",
            "rbd_trust_writes_slope_vs_export_import_dense",
        )
    for shape in ("sparse", "dense"):
        row(f"rbd method fixed cost ({shape})", "≤ 3 s", f"rbd_fixed_cost_s_{shape}", " s")
    row(
        "stream method slope vs raw one-hop ssh (dense)",
        "≤ 1.25×",
        "stream_slope_vs_raw_ssh_dense",
    )
    big = sizes["sparse"][1]
    row(
        f"rbd incremental after 1 % change on the {big} GiB sparse volume, of the full pass",
        "≤ 5 %",
        "rbd_incremental_vs_full_large_sparse",
        "%",
    )
    row(
        f"stream incremental after 1 % change on the {big} GiB sparse volume, of the full pass",
        "≤ 15 %",
        "stream_incremental_vs_full_large_sparse",
        "%",
    )
    for section in ("rbd", "stream"):
        found = g.get(f"{section}_incremental_growth")
        detail = (
            "n/a"
            if found is None
            else f"time ×{found['time_ratio']} for changed bytes ×{found['changed_bytes_ratio']}"
            f" → {_fmt(found['value'])}×"
        )
        lines_md.append(
            f"| {section} incremental time, 1 % of {sizes['sparse'][0]} GiB vs 1 % of {big} GiB"
            f" | ≤ 1.5× the changed-bytes ratio | {detail} | {_verdict(found)} |"
        )
    row("peak RSS of the stackhop process, every pass", "< 256 MB", "peak_rss_mb", " MB")
    lines_md += [
        "",
        "## Fixed cost and cost per GiB (line through the two sizes)",
        "",
        "| contender | fixed cost s | s per GiB | points (GiB, s) |",
        "|---|---|---|---|",
    ]
    for name, line in lines.items():
        points = ", ".join(f"({x:g}, {y})" for x, y in line["points"])
        lines_md.append(f"| {name} | {line['fixed_s']} | {line['per_gib_s']} | {points} |")
    lines_md += ["", "## Passes", "", "| pass | GiB | seconds | sent MiB | peak RSS MB |"]
    lines_md.append("|---|---|---|---|---|")
    for section in ("stream", "rbd"):
        rows = results.get(section) or {}
        if "error" in rows:
            lines_md.append(f"| {section} | not measured: {rows['error']} | | | |")
            continue
        for shape in ("sparse", "dense"):
            for p in rows.get(shape) or []:
                gib = f"{p['size'] / GIB:g}"
                lines_md.append(
                    f"| {section} {shape} full | {gib} | {p['pass_s']} | "
                    f"{p['bytes_sent'] // MIB} | {p['peak_rss_mb']} |"
                )
                inc = p.get("incremental")
                if inc:
                    lines_md.append(
                        f"| {section} {shape} incremental ({inc['changed_bytes'] // MIB} MiB "
                        f"changed) | {gib} | {inc['seconds']} | {inc['bytes_sent'] // MIB} | "
                        f"{inc['peak_rss_mb']} |"
                    )
    lines_md += [
        "",
        "## Issue 6's single-size ratios (small-size points, for continuity)",
        "",
        "| ratio | measured | goal | verdict |",
        "|---|---|---|---|",
    ]
    for name, found in results.get("continuity", {}).items():
        goal = (
            f"≥ {found['floor']}"
            if "floor" in found
            else f"≤ {found['limit']}"
            if "limit" in found
            else "(reference)"
        )
        verdict = "" if "pass" not in found else ("PASS" if found["pass"] else "FAIL")
        lines_md.append(f"| {name} | {_fmt(found['value'])} | {goal} | {verdict} |")
    lines_md.append("")
    return "\n".join(lines_md)
