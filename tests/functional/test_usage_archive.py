"""``stackhop usage archive`` on the testbed's src cloud: exact months, pages, report, errors.

Two projects of our own get servers on fake compute whose lives are backdated
in Nova's cell database (``launched_at``/``terminated_at``, the columns
os-simple-tenant-usage computes from), exactly as the seed does it
(``testbed/seed/servers.py``); so every month's figures are known in advance.
Everything is deleted at the end, whatever happens.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import openstack
import openstack.connection
import pytest
import yaml
from PIL import Image
from testbed import layout
from testbed.infra.mariadb import sql
from testbed.openstack.nova import CELL1_DB
from tests.functional.conftest import CliResult

if TYPE_CHECKING:
    from tests.functional.conftest import Testbed

from stackhop.cli.main import main

pytestmark = pytest.mark.functional

WAIT = 180
CHROMIUM = "/usr/bin/chromium"
#: A seeded public image, only read: fake compute needs an image to boot from.
IMAGE = "public-tools"
#: The vCPU-hours bars of the charts (stackhop.usage.report), as RGB.
VCPU_BAR = (0x3B, 0x6E, 0xA8)


@dataclass(frozen=True)
class Planned:
    """A server to create in project ``project`` ("a" or "b") and the life to give it."""

    project: str
    name: str
    flavor: str
    launched_at: str
    terminated_at: str | None = None


PLAN = (
    Planned("a", "a1", "m1.tiny", "2026-01-15 12:00:00", "2026-03-10 06:00:00"),
    Planned("a", "a2", "m1.small", "2026-02-28 18:30:00", "2026-03-01 01:15:00"),
    Planned("a", "a3", "m1.tiny", "2026-03-20 00:00:00"),  # still running
    Planned("b", "b1", "m1.tiny", "2026-02-10 00:00:00"),  # still running
)
END = "2026-04-01"
# With --end 2026-04-01 (m1.tiny: 1 vCPU, 512 MB, 1 GB; m1.small: 1 vCPU, 2048 MB, 20 GB):
# a1 runs 396 h in January, 672 h in February, 222 h in March; a2 5.5 h in February and
# 1.25 h in March; a3 288 h in March; b1 456 h in February and 744 h in March.
EXPECTED = {
    "a": [
        ("2026-01", "396.00", "198.00", "396.00", "1"),
        ("2026-02", "677.50", "347.00", "782.00", "2"),
        ("2026-03", "511.25", "257.50", "535.00", "3"),
    ],
    "b": [
        ("2026-02", "456.00", "228.00", "456.00", "1"),
        ("2026-03", "744.00", "372.00", "744.00", "1"),
    ],
}


@dataclass
class UsageWorld:
    """Our two projects on src, by key ("a", "b"): name and ID; the servers' IDs."""

    names: dict[str, str]
    ids: dict[str, str]
    servers: dict[str, str]


def _backdate(server_id: str, planned: Planned) -> None:
    assert re.fullmatch(r"[0-9a-f-]{36}", server_id)
    launched = f"'{planned.launched_at}'"
    sets = [f"launched_at = {launched}", f"created_at = {launched}"]
    if planned.terminated_at:
        ended = f"'{planned.terminated_at}'"
        sets += [f"terminated_at = {ended}", f"deleted_at = {ended}"]
    sql(
        f"UPDATE instances SET {', '.join(sets)} WHERE uuid = '{server_id}'",
        database=layout.SRC.db_name(CELL1_DB),
    )


def _scoped(project_id: str) -> openstack.connection.Connection:
    """src's admin user scoped to one project: Nova creates servers in the token's project."""
    return openstack.connection.Connection(
        auth_url=layout.SRC.keystone_url,
        username="admin",
        password=layout.ADMIN_PASSWORD,
        user_domain_name="Default",
        project_id=project_id,
        region_name=layout.REGION,
        identity_api_version="3",
    )


@pytest.fixture(scope="module")
def world(testbed: Testbed) -> Iterator[UsageWorld]:
    """Projects usagetest-<hex>-a/-b on src with the servers of PLAN, backdated."""
    admin = openstack.connect(cloud="src")
    tag = uuid.uuid4().hex[:8]
    image = admin.image.find_image(IMAGE, ignore_missing=True)
    assert image is not None, f"seeded image {IMAGE} is missing on src (is the testbed seeded?)"
    flavors = {f.name: f.id for f in admin.compute.flavors()}
    role = admin.identity.find_role("member")
    me = admin.current_user_id
    projects: dict[str, Any] = {}
    servers: dict[str, Any] = {}
    try:
        for key in ("a", "b"):
            projects[key] = admin.identity.create_project(
                name=f"usagetest-{tag}-{key}",
                domain_id="default",
                description="stackhop usage archive test",
            )
            admin.identity.assign_project_role_to_user(projects[key], me, role)
        scoped = {k: _scoped(p.id) for k, p in projects.items()}
        for planned in PLAN:
            servers[planned.name] = scoped[planned.project].compute.create_server(
                name=f"usagetest-{planned.name}",
                image_id=image.id,
                flavor_id=flavors[planned.flavor],
                networks="none",
            )
        for name, server in servers.items():
            servers[name] = admin.compute.wait_for_server(
                server, status="ACTIVE", failures=["ERROR"], interval=1, wait=WAIT
            )
        for planned in PLAN:
            if planned.terminated_at:
                admin.compute.delete_server(servers[planned.name])
        for planned in PLAN:
            if planned.terminated_at:
                admin.compute.wait_for_delete(servers[planned.name], interval=1, wait=WAIT)
        for planned in PLAN:  # after deletion, or Nova would overwrite terminated_at
            _backdate(servers[planned.name].id, planned)
        yield UsageWorld(
            names={k: p.name for k, p in projects.items()},
            ids={k: p.id for k, p in projects.items()},
            servers={n: s.id for n, s in servers.items()},
        )
    finally:
        for server in servers.values():
            admin.compute.delete_server(server, ignore_missing=True)
        for server in servers.values():
            admin.compute.wait_for_delete(server, interval=1, wait=WAIT)
        for project in projects.values():
            admin.identity.delete_project(project, ignore_missing=True)


Run = Callable[..., CliResult]


def _archive(cli: Run, out: Path, *args: str) -> CliResult:
    return cli("usage", "archive", "--from", "src", "-o", str(out), "-f", "json", *args)


def _summary(out: Path) -> list[dict[str, str]]:
    with (out / "summary.csv").open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _rows(out: Path, project: str) -> list[tuple[str, ...]]:
    cols = ("month", "vcpu_hours", "ram_gb_hours", "disk_gb_hours", "servers")
    return [tuple(r[c] for c in cols) for r in _summary(out) if r["project"] == project]


def _detailed(out: Path) -> dict[str, Any]:
    return json.loads((out / "detailed.json").read_text())


def _project(detailed: dict[str, Any], project_id: str) -> dict[str, Any]:
    (found,) = [p for p in detailed["projects"] if p["project_id"] == project_id]
    return found


def _assert_months_add_up(out: Path, world: UsageWorld, key: str) -> None:
    rows = [r for r in _summary(out) if r["project"] == world.names[key]]
    total = _project(_detailed(out), world.ids[key])["total"]
    nova = _project(_detailed(out), world.ids[key])["nova_totals"]
    for column, nova_key, scale in (
        ("vcpu_hours", "total_vcpus_usage", Decimal(1)),
        ("ram_gb_hours", "total_memory_mb_usage", Decimal(1024)),
        ("disk_gb_hours", "total_local_gb_usage", Decimal(1)),
    ):
        months = sum(Decimal(r[column]) for r in rows)
        assert months == Decimal(str(total[column])), column
        # ... and the total is Nova's own, to the hundredth.
        assert abs(months - Decimal(str(nova[nova_key])) / scale) <= Decimal("0.005"), column


@pytest.fixture(scope="module")
def archived(world: UsageWorld, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The archive of both projects up to END, made once for the tests that read it."""
    out = tmp_path_factory.mktemp("usage") / "archive"
    code = main(
        [
            "usage",
            "archive",
            "--from",
            "src",
            "--project",
            world.names["a"],
            "--project",
            world.ids["b"],
            "--end",
            END,
            "-o",
            str(out),
            "-f",
            "json",
        ]
    )
    assert code == 0
    return out


def test_months_are_exact_for_servers_with_known_lives(archived: Path, world: UsageWorld) -> None:
    for key in ("a", "b"):
        assert _rows(archived, world.names[key]) == EXPECTED[key], key
        _assert_months_add_up(archived, world, key)
    detailed = _detailed(archived)
    a = _project(detailed, world.ids["a"])
    assert {s["instance_id"] for s in a["server_usages"]} == {
        world.servers[n] for n in ("a1", "a2", "a3")
    }
    # Each project's period starts with its first server: b has no January.
    assert a["start"].startswith("2026-01-15T12:00:00")
    assert _project(detailed, world.ids["b"])["start"].startswith("2026-02-10T00:00:00")
    assert sorted(p.name for p in (archived / "months").iterdir()) == [
        "2026-01.json",
        "2026-02.json",
        "2026-03.json",
    ]
    january = json.loads((archived / "months" / "2026-01.json").read_text())
    assert [p["project_id"] for p in january["projects"]] == [world.ids["a"]]
    march = json.loads((archived / "months" / "2026-03.json").read_text())
    hours = {s["name"]: s["hours"] for p in march["projects"] for s in p["server_usages"]}
    assert hours == {
        "usagetest-a1": 222.0,
        "usagetest-a2": 1.25,
        "usagetest-a3": 288.0,
        "usagetest-b1": 744.0,
    }


def test_small_pages_give_the_same_archive(
    archived: Path, world: UsageWorld, cli: Run, tmp_path: Path
) -> None:
    paged = tmp_path / "paged"
    result = _archive(
        cli,
        paged,
        "--project",
        world.names["a"],
        "--project",
        world.names["b"],
        "--end",
        END,
        "--page-size",
        "1",
    )
    assert result.code == 0, result.err
    # a has 3 servers, b 1: one server per page means at least 4 pages.
    assert _detailed(paged)["api"]["pages"] >= 4
    assert _detailed(archived)["api"]["pages"] == 2
    assert _summary(paged) == _summary(archived)
    # Every project of the cloud, two servers a page: a project split over pages is merged.
    everything = tmp_path / "all"
    result = _archive(cli, everything, "--all-projects", "--end", END, "--page-size", "2")
    assert result.code == 0, result.err
    for key in ("a", "b"):
        assert _rows(everything, world.names[key]) == EXPECTED[key], key
        ours = _project(_detailed(everything), world.ids[key])
        assert len(ours["server_usages"]) == sum(p.project == key for p in PLAN)


def test_default_period_runs_from_the_first_server_to_now(
    world: UsageWorld, cli: Run, tmp_path: Path
) -> None:
    out = tmp_path / "now"
    before = datetime.now(UTC)
    result = _archive(cli, out, "--project", world.ids["a"])
    assert result.code == 0, result.err
    rows = _rows(out, world.names["a"])
    assert rows[0][0] == "2026-01" and rows[-1][0] == before.strftime("%Y-%m")
    assert rows[:2] == EXPECTED["a"][:2]
    assert rows[-1][4] == "1"  # only a3 still runs
    _assert_months_add_up(out, world, "a")
    # --start cuts the period: January is gone, February starts the archive.
    out = tmp_path / "from-feb"
    result = _archive(cli, out, "--project", world.ids["a"], "--start", "2026-02-01", "--end", END)
    assert result.code == 0, result.err
    assert _rows(out, world.names["a"]) == EXPECTED["a"][1:]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run headless Chromium (its own session, killed by its group ID if it hangs)."""
    profile = tmp_path / "chromium-profile"
    argv = [
        CHROMIUM,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--force-device-scale-factor=1",
        "--hide-scrollbars",
        *args,
    ]
    proc = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group of the process we started
        proc.communicate()
        pytest.fail("chromium did not finish in 90 s")
    return subprocess.CompletedProcess(argv, proc.returncode, out, err)


_MEASURE = """<script>
window.addEventListener("load", () => {
  const rects = [...document.querySelectorAll("img.chart")].map((img) => {
    const r = img.getBoundingClientRect();
    return [r.left, r.top + window.scrollY, r.width, r.height, img.naturalWidth];
  });
  document.body.setAttribute("data-rects", JSON.stringify(rects));
  document.body.setAttribute("data-height", document.documentElement.scrollHeight);
});
</script>"""


def test_report_opens_in_chromium_with_a_chart_per_project(
    archived: Path, world: UsageWorld, tmp_path: Path
) -> None:
    report = archived / "report.html"
    text = report.read_text()
    assert not re.search(r"(?:src|href)\s*=\s*[\"']?(?!data:)[a-z]+:", text)  # nothing fetched
    assert "http://" not in text and "https://" not in text
    for key in ("a", "b"):
        assert world.names[key] in text
        with Image.open(archived / "charts" / f"{world.names[key]}.png") as png:
            assert png.format == "PNG" and png.width > 0

    # Where the charts are: the same page with a script that records their boxes.
    measured = tmp_path / "measured.html"
    measured.write_text(text.replace("</body>", _MEASURE + "</body>"))
    width = 1200
    dom = _chromium(
        tmp_path,
        "--virtual-time-budget=10000",
        f"--window-size={width},900",
        "--dump-dom",
        measured.as_uri(),
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body[^>]*>", dom.stdout)
    assert body is not None
    rects = json.loads(
        re.search(r'data-rects="([^"]*)"', body.group(0)).group(1).replace("&quot;", '"')
    )  # type: ignore[union-attr]
    height = int(re.search(r'data-height="(\d+)"', body.group(0)).group(1))  # type: ignore[union-attr]
    assert len(rects) == 2
    assert all(natural > 0 for *_, natural in rects), "a chart image did not decode"

    shot = tmp_path / "report.png"
    result = _chromium(
        tmp_path, f"--window-size={width},{height}", f"--screenshot={shot}", report.as_uri()
    )
    assert result.returncode == 0 and shot.exists(), result.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = image.convert("RGB")
        for left, top, w, h, _ in rects:
            region = pixels.crop((int(left), int(top), int(left + w), int(top + h)))
            colours = region.getcolors(maxcolors=1 << 20) or []
            area = region.width * region.height
            inked = sum(n for n, rgb in colours if min(rgb) < 235)
            assert inked > 0.05 * area, f"chart at {left},{top} is blank ({inked} of {area})"
            bars = sum(
                n
                for n, rgb in colours
                if all(abs(c - v) <= 12 for c, v in zip(rgb, VCPU_BAR, strict=True))
            )
            assert bars > 500, f"no vCPU bars in the chart at {left},{top}"


# -- bad input --------------------------------------------------------------------------------


def _assert_refused(result: CliResult, code: int, words: str, out: Path) -> None:
    assert result.code == code, (result.code, result.err)
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stackhop: "), result.err
    assert words in lines[0]
    assert not out.exists(), "an archive was written despite the error"
    assert not [p for p in out.parent.iterdir() if ".partial-" in p.name], "partial left"


def test_end_before_start_is_refused(cli: Run, tmp_path: Path, testbed: Testbed) -> None:
    out = tmp_path / "out"
    result = _archive(
        cli, out, "--project", "alpha", "--start", "2026-05-01", "--end", "2026-03-01"
    )
    _assert_refused(result, 2, "give an end later than the start", out)
    result = _archive(cli, out, "--all-projects", "--end", "2026-02-30")
    _assert_refused(result, 2, "is not a date", out)


def test_unknown_project_is_refused(world: UsageWorld, cli: Run, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _archive(
        cli, out, "--project", world.names["a"], "--project", f"{world.names['a']}-nonexistent"
    )
    _assert_refused(result, 3, "does not exist on cloud 'src'", out)


def test_a_cloud_without_the_usage_api_is_refused(
    cli: Run, tmp_path: Path, testbed: Testbed, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    # An account without the right: the demo user may not list every project's usage.
    result = cli("usage", "archive", "--from", "src-demo", "--all-projects", "-o", str(out))
    _assert_refused(result, 6, "use an admin account or grant the right", out)
    # A compute endpoint that answers 404: src's credentials, Keystone where Nova should be.
    clouds = yaml.safe_load(testbed.clouds_yaml.read_text())
    broken = dict(clouds["clouds"]["src"], compute_endpoint_override=layout.SRC.keystone_url)
    config = tmp_path / "clouds.yaml"
    config.write_text(yaml.safe_dump({"clouds": {"nousage": broken}}))
    config.chmod(0o600)
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(config))
    result = cli("usage", "archive", "--from", "nousage", "--all-projects", "-o", str(out))
    _assert_refused(result, 6, "Nova answered 404", out)


def test_a_non_empty_output_directory_is_refused(
    cli: Run, tmp_path: Path, testbed: Testbed
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("not ours")
    result = _archive(cli, out, "--project", "alpha")
    assert result.code == 2 and "is not an empty directory" in result.err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
