"""``stackhop volumes`` argument checks that fail before any cloud is contacted."""

from __future__ import annotations

import contextlib
import io

import pytest

from stackhop.cli.main import main


def _run(*argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(list(argv))
    return code, err.getvalue()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--interactive", "--all"), "--interactive picks the volumes"),
        (("--all", "--workers", "0"), "argument --workers: must be at least 1"),
        (("--all",), "name the source project with --project"),
    ],
)
def test_bad_combinations_are_one_line_usage_errors(extra: tuple[str, ...], message: str) -> None:
    code, err = _run("volumes", "copy", "--from", "src", "--to", "dst", "--method", "image", *extra)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1


def test_unknown_method_is_refused_by_the_parser() -> None:
    code, err = _run("volumes", "copy", "--from", "a", "--to", "b", "--method", "dd", "--all")
    assert code == 2 and "invalid choice" in err


def test_one_vocabulary_for_volumes_with_the_old_spellings_kept() -> None:
    from stackhop.cli.main import build_parser

    parser = build_parser()
    copy = parser.parse_args(["volumes", "copy", "--from", "a", "--to", "b", "--method", "image",
                              "--volume", "v1", "v2", "--volume", "v3", "--all"])
    assert copy.volumes == ["v1", "v2", "v3"] and copy.all_volumes is True
    project = parser.parse_args(["project", "migrate", "--from", "a", "--to", "b",
                                 "--project", "p", "--volumes", "v1", "v2", "--volume", "v3"])
    assert project.volumes == ["v1", "v2", "v3"] and project.all_volumes is False
    every = parser.parse_args(["project", "migrate", "--from", "a", "--to", "b",
                               "--project", "p", "--all-volumes"])
    assert every.all_volumes is True and every.workers == 2


def test_project_migrate_hands_trust_writes_to_the_rbd_method_only() -> None:
    from types import SimpleNamespace

    from stackhop.cli.main import build_parser
    from stackhop.cli.project import _request
    from stackhop.project.volumes import _copy_request

    args = build_parser().parse_args(["project", "migrate", "--from", "a", "--to", "b",
                                      "--project", "p", "--trust-writes"])
    request = _request(args)
    assert request.trust_writes
    migration = SimpleNamespace(request=request)
    rbd = _copy_request(migration, "pid", "rbd", ["v"])  # type: ignore[arg-type]
    stream = _copy_request(migration, "pid", "stream", ["v"])  # type: ignore[arg-type]
    assert rbd.method_options == {"reread": False} and stream.method_options == {}
    plain = _request(build_parser().parse_args(["project", "migrate", "--from", "a", "--to",
                                                "b", "--project", "p"]))
    assert _copy_request(SimpleNamespace(request=plain), "pid", "rbd", ["v"]).method_options == {}  # type: ignore[arg-type]


def test_images_commands_share_the_options_and_their_vocabulary() -> None:
    from stackhop.cli.main import build_parser

    parser = build_parser()
    copy = parser.parse_args(["images", "copy", "--from", "a", "--to", "b", "--image", "x", "y",
                              "--image", "z*"])
    assert copy.images == ["x", "y", "z*"] and not copy.all_images and copy.workers == 2
    every = parser.parse_args(["images", "move-store", "--cloud", "c", "--from-store", "s1",
                               "--to-store", "s2", "--all", "--dry-run"])
    assert every.all_images and every.dry_run
    for argv in (["images", "copy", "--from", "a", "--to", "b", "--all-images"],
                 ["images", "import", "--to", "b", "f.tar"],
                 ["images", "move-store", "--cloud", "c", "--from-store", "s1", "--to-store",
                  "s2", "--all"]):
        code, err = _run(*argv, "--workers", "0")
        assert code == 2 and "argument --workers: must be at least 1" in err, argv
        assert len(err.strip().splitlines()) == 1
