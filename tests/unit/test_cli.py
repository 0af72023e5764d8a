"""The stackhop CLI in-process: global options, output formats, errors as one line with a code."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import openstack.exceptions
import pytest
import yaml

from stackhop import __version__
from stackhop.cli import clouds as clouds_cmd
from stackhop.cli import main as cli_main
from stackhop.cli.output import error_line, render_one, render_table, select_columns
from stackhop.errors import CloudUnknownError, CloudUnreachableError, UsageError
from stackhop.events import Event, EventType

PASSWORD = "never-print-me-17"


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]):
    def _run(*argv: str) -> Result:
        code = cli_main.main(list(argv))
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return _run


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def clouds_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for key in list(os.environ):
        if key.startswith("OS_"):
            monkeypatch.delenv(key)
    url = f"http://127.0.0.1:{closed_port()}/v3"
    entries = {}
    for name, user in (("alpha", "admin"), ("beta", "bob")):
        entries[name] = {
            "auth": {
                "auth_url": url,
                "username": user,
                "password": PASSWORD,
                "project_name": f"{name}-project",
                "user_domain_name": "Default",
                "project_domain_name": "Default",
            },
            "region_name": "RegionOne",
        }
    path = tmp_path / "clouds.yaml"
    path.write_text(yaml.safe_dump({"clouds": entries}))
    monkeypatch.setenv("OS_CLIENT_CONFIG_FILE", str(path))
    return path


def command_names() -> list[str]:
    parser = cli_main.build_parser()
    (sub,) = [a for a in parser._actions if a.dest == "command"]
    return list(sub.choices)  # type: ignore[arg-type]


def test_version(run) -> None:
    r = run("--version")
    assert (r.code, r.out) == (0, f"stackhop {__version__}\n")


def test_help_lists_every_command_group(run) -> None:
    r = run("--help")
    assert r.code == 0
    names = command_names()
    assert "clouds" in names
    for name in names:
        assert name in r.out
    for option in ("--verbose", "--log-json", "--journal", "--version"):
        assert option in r.out


def test_every_command_has_help(run) -> None:
    for name in command_names():
        r = run(name, "--help")
        assert r.code == 0, name
        assert "--verbose" in r.out  # global options are accepted after the command too


def test_no_command_is_a_usage_error(run) -> None:
    r = run()
    assert r.code == 2
    assert "COMMAND" in r.err


def test_clouds_table(run, clouds_yaml: Path) -> None:
    r = run("clouds")
    assert r.code == 0, r.err
    header = next(line for line in r.out.splitlines() if "Name" in line)
    for column in clouds_cmd.LIST_COLUMNS:
        assert column in header
    assert "alpha-project" in r.out and "beta-project" in r.out
    assert str(clouds_yaml) in r.out
    assert PASSWORD not in r.out + r.err


def test_clouds_json(run, clouds_yaml: Path) -> None:
    r = run("clouds", "-f", "json")
    assert r.code == 0, r.err
    rows = json.loads(r.out)
    assert [row["Name"] for row in rows] == ["alpha", "beta"]
    assert rows[1]["User"] == "bob"
    assert rows[1]["Region"] == "RegionOne"
    assert set(rows[0]) == set(clouds_cmd.LIST_COLUMNS)
    assert PASSWORD not in r.out


def test_clouds_yaml_with_columns(run, clouds_yaml: Path) -> None:
    # -c matches the header case-insensitively and keeps the order asked for.
    r = run("clouds", "beta", "-f", "yaml", "-c", "user", "-c", "Name")
    assert r.code == 0, r.err
    assert yaml.safe_load(r.out) == [{"User": "bob", "Name": "beta"}]


def test_unknown_column_is_one_line_usage_error(run, clouds_yaml: Path) -> None:
    r = run("clouds", "-c", "Password")
    assert r.code == UsageError.exit_code
    assert (
        r.err
        == "stackhop: no column 'Password'; columns are: "
        + ", ".join(clouds_cmd.LIST_COLUMNS)
        + "\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ("import", "--to", "dst", "a.tar.zst", "--workers", "0"),
        ("migrate", "--from", "a", "--to", "b", "--workers", "-1"),
        ("rollback", "--to", "dst", "--run", "r", "--workers", "many"),
        ("project", "migrate", "--from", "a", "--to", "b", "--project", "p", "--workers", "0"),
        ("volumes", "copy", "--from", "a", "--to", "b", "--method", "image", "--workers", "0"),
    ],
)
def test_workers_must_be_positive_everywhere_one_line(run, argv: tuple[str, ...]) -> None:
    r = run(*argv)
    assert r.code == 2
    assert r.err.count("\n") == 1 and r.err.startswith("stackhop: ")
    assert "argument --workers:" in r.err and "Traceback" not in r.err


def test_unknown_cloud_is_one_line_with_its_exit_code(run, clouds_yaml: Path) -> None:
    r = run("clouds", "gamma")
    assert r.code == CloudUnknownError.exit_code == 3
    assert r.out == ""
    assert r.err.count("\n") == 1
    assert r.err.startswith("stackhop: cloud 'gamma' is not configured; known clouds: alpha, beta")


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The retry waits, recorded instead of slept (a refused port is retried for seconds)."""
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    return slept


def test_check_of_an_unreachable_cloud(run, clouds_yaml: Path, waits: list[float]) -> None:
    r = run("clouds", "--check", "alpha")
    assert waits, "a refused connection is retried before it is reported"
    assert r.code == CloudUnreachableError.exit_code
    assert r.err.count("\n") == 1
    assert r.err.startswith("stackhop: cannot reach cloud 'alpha' at http://127.0.0.1:")
    assert "Traceback" not in r.err


def test_check_json_reports_each_failed_cloud(run, clouds_yaml: Path, waits: list[float]) -> None:
    r = run("clouds", "--check", "-f", "json")
    assert r.code == CloudUnreachableError.exit_code
    reports = json.loads(r.out)
    assert [(x["cloud"], x["ok"]) for x in reports] == [("alpha", False), ("beta", False)]
    assert "Connection refused" in reports[0]["error"]
    assert len(r.err.splitlines()) == 2


def test_verbose_adds_the_traceback(run, clouds_yaml: Path) -> None:
    r = run("clouds", "gamma", "-v")
    assert r.code == 3
    assert "Traceback" in r.err
    assert r.err.rstrip().endswith("(check clouds.yaml, OS_CLIENT_CONFIG_FILE or OS_CLOUD)")


def test_columns_with_check_is_refused(run, clouds_yaml: Path) -> None:
    r = run("clouds", "--check", "-c", "Name")
    assert r.code == UsageError.exit_code
    assert r.err.startswith("stackhop: -c selects columns of the listing")


def test_ctrl_c_exits_130(run, clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted() -> list:
        raise KeyboardInterrupt

    monkeypatch.setattr(clouds_cmd, "list_clouds", interrupted)
    r = run("clouds")
    assert r.code == 130
    assert r.err == "stackhop: interrupted (Ctrl-C); re-run the same command to resume\n"


def test_escaped_sdk_error_is_one_line(run, clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch):
    def failing() -> list:
        raise openstack.exceptions.SDKException("the service said no\nwith two lines")

    monkeypatch.setattr(clouds_cmd, "list_clouds", failing)
    r = run("clouds")
    assert r.code == 1
    assert r.err == "stackhop: SDKException: the service said no with two lines\n"


def test_a_bug_is_not_hidden(run, clouds_yaml: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def buggy() -> list:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(clouds_cmd, "list_clouds", buggy)
    with pytest.raises(ZeroDivisionError):
        run("clouds")


def emit_one_warning(args) -> int:
    args.events.emit(Event(EventType.WARNING, kind="cloud", identity="x", message="careful"))
    return 0


def test_log_json_renders_events_as_json_lines(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clouds_cmd, "run", emit_one_warning)
    r = run("--log-json", "clouds")
    assert r.code == 0
    (line,) = r.err.splitlines()
    event = json.loads(line)
    assert (event["type"], event["identity"], event["message"]) == ("warning", "x", "careful")


def test_events_are_plain_lines_without_log_json(run, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clouds_cmd, "run", emit_one_warning)
    r = run("clouds")
    assert r.err == "warning: cloud x: careful\n"


# -- output helpers ----------------------------------------------------------


def test_render_table_prints_values_literally() -> None:
    out = io.StringIO()
    render_table([{"A": "[bold]x[/bold]", "B": ["one", "two"]}], ["A", "B"], "table", out)
    text = out.getvalue()
    assert "[bold]x[/bold]" in text
    assert "one" in text and "two" in text
    assert "\x1b[" not in text  # no colour codes off a terminal


def test_render_table_does_not_fold_long_values_off_a_terminal() -> None:
    out = io.StringIO()
    url = "http://127.0.0.1:15000/" + "x" * 200
    render_table([{"URL": url}], ["URL"], "table", out)
    assert url in out.getvalue()


def test_render_one_formats() -> None:
    obj = {"Name": "alpha", "Roles": ["admin", "member"], "Missing": None}
    out = io.StringIO()
    render_one(obj, "json", out)
    assert json.loads(out.getvalue()) == obj
    out = io.StringIO()
    render_one(obj, "yaml", out, selected=["roles"])
    assert yaml.safe_load(out.getvalue()) == {"Roles": ["admin", "member"]}
    out = io.StringIO()
    render_one(obj, "table", out)
    lines = out.getvalue().splitlines()
    assert any("Field" in line and "Value" in line for line in lines)
    assert any("Name" in line and "alpha" in line for line in lines)


def test_select_columns() -> None:
    assert select_columns(["Name", "Auth URL"], None) == ["Name", "Auth URL"]
    assert select_columns(["Name", "Auth URL"], ["auth url"]) == ["Auth URL"]
    with pytest.raises(UsageError, match="no column 'x'; columns are: Name, Auth URL"):
        select_columns(["Name", "Auth URL"], ["x"])


def test_error_line_is_one_line() -> None:
    assert error_line(UsageError("two\nlines")) == "stackhop: two lines"
