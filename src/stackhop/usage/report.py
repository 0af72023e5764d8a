"""The usage report: one chart per project (PNG) and one self-contained HTML file.

The HTML file embeds every chart as a base64 PNG and its style inline: it
refers to no other file and no URL, so it survives being mailed or archived
alone after the cloud is gone. Charts are drawn with matplotlib's Agg
backend (no display, no fonts fetched).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from stackhop.usage.months import Breakdown, Figures

#: Pixel size of a chart (width, height) at :data:`DPI`; the HTML shows it at this size.
CHART_SIZE = (960, 600)
DPI = 100
_METRICS = (
    ("vcpu_hours", "vCPU-hours", "#3b6ea8"),
    ("ram_gb_hours", "RAM GB-hours", "#d17a22"),
    ("disk_gb_hours", "Disk GB-hours", "#4a9a5b"),
    ("servers", "Servers", "#8a4f9e"),
)
_COLUMNS = ("Month", "vCPU-hours", "RAM GB-hours", "Disk GB-hours", "Servers")


@dataclass(frozen=True)
class ProjectReport:
    """What the report shows of one project."""

    project_id: str
    name: str | None
    breakdown: Breakdown
    chart_file: str  # the PNG's name in charts/

    @property
    def label(self) -> str:
        return self.name or self.project_id


def chart_png(project: ProjectReport) -> bytes:
    """The project's monthly usage as a PNG: one bar panel per figure."""
    # Imported here, not at the top: the CLI imports this module for every
    # command, and matplotlib with numpy costs about 55 MB and 1 s.
    import matplotlib

    matplotlib.use("Agg")  # before pyplot: never look for a display
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    months = project.breakdown.months
    labels = [m.month for m in months]
    width, height = CHART_SIZE
    fig, axes = plt.subplots(2, 2, figsize=(width / DPI, height / DPI), dpi=DPI, sharex=True)
    try:
        fig.suptitle(f"Monthly usage of {project.label}", fontsize=13)
        step = max(1, len(labels) // 12)  # at most about 12 labels on an axis
        for ax, (attr, title, colour) in zip(axes.flat, _METRICS, strict=True):
            values = [float(getattr(m, attr)) for m in months]
            ax.bar(range(len(values)), values, color=colour, width=0.8)
            ax.set_title(title, fontsize=10)
            ax.grid(axis="y", alpha=0.3)
            if attr == "servers":
                ax.yaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xticks(range(0, len(labels), step))
            ax.set_xticklabels(labels[::step], rotation=45, ha="right", fontsize=8)
            if not values or not any(values):
                ax.text(0.5, 0.5, "no usage", ha="center", va="center", transform=ax.transAxes)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buffer.getvalue()


def _row(f: Figures) -> str:
    cells = (f.month, f.vcpu_hours, f.ram_gb_hours, f.disk_gb_hours, f.servers)
    tag = "th" if f.month == "total" else "td"
    return "<tr>" + "".join(f"<{tag}>{html.escape(str(c))}</{tag}>" for c in cells) + "</tr>"


_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; background: #fff; }
section { margin-bottom: 3em; }
img.chart { display: block; border: 1px solid #ddd; }
table { border-collapse: collapse; margin-top: 1em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.75em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
p.note { color: #555; max-width: 60em; }
"""


def report_html(
    cloud: str,
    projects: Sequence[ProjectReport],
    charts: Sequence[bytes],
    *,
    generated_at: datetime,
    rounding: str,
) -> str:
    """The whole report as one HTML document, charts embedded."""
    width, height = CHART_SIZE
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Usage of cloud {html.escape(cloud)}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>Usage of cloud {html.escape(cloud)}</h1>",
        f"<p>Generated {html.escape(generated_at.isoformat(timespec='seconds'))} "
        f"from os-simple-tenant-usage; {len(projects)} project(s). Months are calendar "
        "months in UTC.</p>",
        f'<p class="note">{html.escape(rounding)}</p>',
    ]
    for number, (project, png) in enumerate(zip(projects, charts, strict=True)):
        b = project.breakdown
        data = base64.b64encode(png).decode("ascii")
        parts += [
            f'<section class="project" id="project-{number}">',
            f"<h2>{html.escape(project.label)}</h2>",
            f"<p>Project ID {html.escape(project.project_id)}; period "
            f"{html.escape(b.start.isoformat(timespec='seconds'))} to "
            f"{html.escape(b.end.isoformat(timespec='seconds'))}.</p>",
            f'<img class="chart" width="{width}" height="{height}" '
            f'alt="monthly usage of {html.escape(project.label)}" '
            f'src="data:image/png;base64,{data}">',
            "<table><thead><tr>"
            + "".join(f"<th>{c}</th>" for c in _COLUMNS)
            + "</tr></thead><tbody>",
            *(_row(m) for m in b.months),
            _row(b.total),
            "</tbody></table></section>",
        ]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
