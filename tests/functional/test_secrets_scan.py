"""No password, token or private key in anything stackhop writes, nor on a command line it starts.

Runs a representative set of commands as child processes, verbose and with
``--log-json`` (the most a log can say): export via the API and via the
databases (whose URLs carry a password), import, verify, status, map, images
copy, rollback. Then scans, for the testbed's secrets (every password of
clouds.yaml, the services' database password, the ssh private key, and
anything shaped like a Keystone token):

- every file the commands wrote (the archives unpacked member by member, the
  journal as bytes and as the text of every row), their stdout and stderr;
- the command line of every process the commands started, sampled from
  ``/proc`` while they run (what ``ps`` shows any user of the machine).

Volume copies (which start ssh, rbd and compressors and write backups) are scanned
the same way, with the Ceph client keys of both clusters among the secrets.
"""

from __future__ import annotations

import io
import json
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
import zstandard
from testbed import layout
from tests.functional.volumes_support import Sandbox, file_backend_path, write_pattern

pytestmark = pytest.mark.functional

#: A Keystone fernet token (also the shape of one cut short by a log).
TOKEN = re.compile(rb"gAAAAA[A-Za-z0-9_\-]{40,}")


def _secrets() -> list[bytes]:
    clouds = yaml.safe_load(Path(os.environ["OS_CLIENT_CONFIG_FILE"]).read_text())["clouds"]
    found = {c["auth"]["password"] for c in clouds.values() if c.get("auth", {}).get("password")}
    db_url = os.environ.get("STACKHOP_DB_URL_PREFIX") or ""
    match = re.search(r"://[^:/@]+:([^@]+)@", db_url)
    if match:
        found.add(match.group(1))
    key = os.environ.get("STACKHOP_SSH_KEY")
    if key and Path(key).exists():
        body = [line for line in Path(key).read_text().splitlines() if "-----" not in line]
        found.update(line for line in body if len(line) > 20)
    assert found, "no secrets to look for: the scan would prove nothing"
    return sorted(s.encode() for s in found)


def _children(pid: int) -> set[int]:
    """``pid``'s descendants, from /proc."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


class CommandLines:
    """Samples the command lines of a process and its descendants while it runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.seen: set[bytes] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for pid in {self.pid, *_children(self.pid)}:
                try:
                    self.seen.add(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
                except OSError:
                    pass
            self._stop.wait(0.02)

    def __enter__(self) -> CommandLines:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _contents(path: Path) -> Iterator[tuple[str, bytes]]:
    """A file's bytes, and what is inside it: archive members, journal rows."""
    data = path.read_bytes()
    yield str(path), data
    if path.suffix == ".zst":
        with zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)) as raw:
            unpacked = raw.read()
        with tarfile.open(fileobj=io.BytesIO(unpacked)) as tar:
            for member in tar.getmembers():
                handle = tar.extractfile(member)
                if handle is not None:
                    yield f"{path}:{member.name}", handle.read()
    if path.suffix == ".sqlite":
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                rows = db.execute(f'SELECT * FROM "{table}"').fetchall()  # noqa: S608 - our names
                yield f"{path}:{table}", repr(rows).encode()


def _leaks(name: str, data: bytes, secrets: list[bytes]) -> list[str]:
    found = [f"{name}: {s[:3].decode()}..." for s in secrets if s in data]
    if TOKEN.search(data):
        found.append(f"{name}: a Keystone token")
    if b"PRIVATE KEY-----" in data:
        found.append(f"{name}: a private key")
    return found


@pytest.fixture
def run(tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[bytes]]:
    ran: list[tuple[list[str], subprocess.CompletedProcess[bytes], set[bytes]]] = []

    def stackhop(*argv: str) -> subprocess.CompletedProcess[bytes]:
        command = [sys.executable, "-m", "stackhop.cli.main", "-v", "--log-json",
                   "--journal", str(tmp_path / "journal.sqlite"), *argv]
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              cwd=tmp_path) as proc, CommandLines(proc.pid) as lines:
            out, err = proc.communicate(timeout=900)
        done = subprocess.CompletedProcess(command, proc.returncode, out, err)
        ran.append((list(argv), done, lines.seen))
        return done

    stackhop.ran = ran  # type: ignore[attr-defined]
    return stackhop


def test_nothing_written_or_started_holds_a_secret(
    seeded: Any, run: Callable[..., Any], tmp_path: Path
) -> None:
    secrets = _secrets()
    api, db = tmp_path / "api.tar.zst", tmp_path / "db.tar.zst"
    kinds = ["--security-groups", "--quotas"]
    assert run("export", "--from", "src", "-o", str(api), *kinds, "--project", "gamma",
               "--project", "delta").returncode == 0
    exported = run("export", "--from", "src", "-o", str(db), "--via", "db", "--db-config-dir",
                   str(layout.SRC.etc), *kinds, "--project", "gamma", "--project", "delta")
    assert exported.returncode == 0, exported.stderr[-2000:]
    runs: list[str] = []
    try:
        imported = run("import", "--to", "dst", str(api), *kinds)
        assert imported.returncode == 0, imported.stderr[-2000:]
        copied = run("images", "copy", "--from", "src", "--to", "dst", "--image", "public-tools")
        assert copied.returncode == 0, copied.stderr[-2000:]
        assert run("verify", "--to", "dst", str(api), *kinds).returncode == 0
        assert run("status", "-f", "json").returncode == 0
        assert run("map", "--json").returncode == 0
    finally:
        status = run("status", "-f", "json")
        for item in json.loads(status.stdout)["runs"]:
            if item["command"] in {"import", "images copy"}:
                runs += ["--run", item["id"]]
        if runs:
            undone = run("rollback", "--to", "dst", *runs)
            assert undone.returncode == 0, undone.stderr[-2000:]

    files = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert {api.name, db.name, "journal.sqlite"} <= files
    leaks = _scan(tmp_path, run.ran, secrets)  # type: ignore[attr-defined]
    assert not leaks, "secrets found:\n" + "\n".join(sorted(set(leaks)))


def _ceph_keys() -> list[bytes]:
    """The Ceph client keys of both testbed clusters (``key = ...`` of their keyrings)."""
    keys = []
    for side in (layout.SRC, layout.DST):
        text = (side.ceph_dir / "ceph.client.admin.keyring").read_text()
        keys += [line.split("=", 1)[1].strip().encode() for line in text.splitlines()
                 if line.strip().startswith("key")]
    assert len(keys) == 2, "a testbed keyring without its key: the scan would prove less"
    return keys


def test_volume_copies_write_and_start_nothing_holding_a_secret(
    seeded: Any, run: Callable[..., Any], tmp_path: Path
) -> None:
    """Volume copies start ssh, dd, rbd and compressors, and write backups: every command
    line, the backup files, the journal and the logs scanned, the Ceph keys too."""
    secrets = _secrets() + _ceph_keys()
    backups = tmp_path / "backups"
    with Sandbox.create("shsecrets") as box:
        plain = box.volume("secret-file")
        write_pattern(file_backend_path("src", plain.id), "secret", [0, 7, 300])
        box.volume("secret-ceph", volume_type="ceph")
        copies = (("stream", "secret-file", ["--backup-to", str(backups)]),
                  ("rbd", "secret-ceph", []))
        for method, name, extra in copies:
            copied = run("volumes", "copy", "--from", "src", "--to", "dst", "--project",
                         box.name, "--volume", name, "--method", method, *extra)
            assert copied.returncode == 0, copied.stderr[-2000:]
        assert run("volumes", "status", "-f", "json").returncode == 0
        status = json.loads(run("status", "-f", "json").stdout)
        for item in status["runs"]:
            cleaned = run("volumes", "cleanup", "--run", item["id"], "--end-chains")
            assert cleaned.returncode == 0, cleaned.stderr[-2000:]
    assert any(backups.rglob("*")), "no backup written: the scan would not cover one"
    leaks = _scan(tmp_path, run.ran, secrets)  # type: ignore[attr-defined]
    assert not leaks, "secrets found:\n" + "\n".join(sorted(set(leaks)))


def _scan(tmp_path: Path, ran: list[Any], secrets: list[bytes]) -> list[str]:
    """Every file under ``tmp_path`` (and inside it), every output and command line seen."""
    leaks: list[str] = []
    for path in (p for p in tmp_path.rglob("*") if p.is_file()):
        for name, data in _contents(path):
            leaks += _leaks(name, data, secrets)
    lines_seen = 0
    for argv, done, lines in ran:
        label = " ".join(argv[:2])
        leaks += _leaks(f"stdout of {label}", done.stdout, secrets)
        leaks += _leaks(f"stderr of {label}", done.stderr, secrets)
        for line in lines:
            leaks += _leaks(f"command line under {label}", line, secrets)
        lines_seen += len(lines)
    assert lines_seen >= len(ran)
    return leaks
