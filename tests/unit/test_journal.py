"""The journal: state machine, rowcount checks, migrations, concurrency, no secrets."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from stackhop import __version__
from stackhop.errors import JournalError
from stackhop.journal import (
    DONE,
    FAILED,
    PENDING,
    ROLLED_BACK,
    SKIPPED,
    STATES,
    TRANSITIONS,
    Change,
    Journal,
    journal_url,
)
from stackhop.journal_schema import SCHEMA_VERSION, upgrade


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    j = Journal(tmp_path / "journal.sqlite")
    yield j
    j.close()


def _start(j: Journal, run_id: str, identity: str, expected=None, **kw):
    return j.transition(
        run_id, "dst", "nova.keypair", identity, PENDING, action="create", expected=expected,
        attempt=True, **kw,
    )


def test_new_journal_file_is_private_and_current(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "j.sqlite"
    with Journal(path) as j:
        j.start_run("import")
        assert j.schema_version == SCHEMA_VERSION
    for name in ("j.sqlite", "j.sqlite-wal", "j.sqlite-shm"):
        file = path.parent / name
        if file.exists():
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, name


def test_run_lifecycle_and_prefix_lookup(journal: Journal) -> None:
    run = journal.start_run(
        "import", source_cloud="src", destination_cloud="dst",
        args={"workers": 4, "password": "hunter2", "auth": {"token": "t", "user": "admin"}},
    )
    assert run.outcome == "running" and run.finished_at is None
    assert run.args == {"workers": 4, "auth": {"user": "admin"}}  # secrets never stored
    finished = journal.finish_run(run.id[:8], "succeeded")
    assert finished.outcome == "succeeded" and finished.finished_at is not None
    assert finished.started_at.tzinfo is not None
    with pytest.raises(JournalError, match="touched 0 rows"):
        journal.finish_run(run.id, "failed")  # a finished run stays finished
    with pytest.raises(JournalError, match="is not in journal"):
        journal.run("nope")


def test_no_secret_reaches_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "j.sqlite"
    with Journal(path) as j:
        j.start_run("import", args={"os_password": "s3cr3t-value", "cloud": "dst"})
    raw = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert b"s3cr3t-value" not in raw
    assert b"dst" in raw


def test_operation_happy_path_and_resume_lookup(journal: Journal) -> None:
    run1 = journal.start_run("import").id
    op = _start(journal, run1, "alice/key1", source_id="src-1")
    assert (op.state, op.attempts, op.run_id) == (PENDING, 1, run1)
    done = journal.transition(
        run1, "dst", "nova.keypair", "alice/key1", DONE, action="create", expected=op,
        destination_id="dst-1",
    )
    assert (done.state, done.destination_id, done.source_id) == (DONE, "dst-1", "src-1")
    # A later run of the same command finds the row by (scope, kind, identity).
    journal.start_run("import")
    again = journal.operation("dst", "nova.keypair", "alice/key1")
    assert again == done
    assert journal.operation("other-cloud", "nova.keypair", "alice/key1") is None


@pytest.mark.parametrize("current", [None, *STATES])
@pytest.mark.parametrize("target", STATES)
def test_transitions_follow_the_table(journal: Journal, current, target) -> None:
    run = journal.start_run("import").id
    row = None
    if current is not None:
        path = {
            PENDING: [PENDING],
            DONE: [PENDING, DONE],
            FAILED: [FAILED],
            SKIPPED: [SKIPPED],
            ROLLED_BACK: [PENDING, DONE, ROLLED_BACK],
        }
        for state in path[current]:
            row = journal.transition(run, "dst", "k", "x", state, action="create", expected=row)
    if target in TRANSITIONS[current]:
        moved = journal.transition(run, "dst", "k", "x", target, action="create", expected=row)
        assert moved.state == target
    else:
        with pytest.raises(JournalError, match="cannot go from"):
            journal.transition(run, "dst", "k", "x", target, action="create", expected=row)
        assert (journal.operation("dst", "k", "x") or row) == row


def test_done_is_final_except_for_a_rollback(journal: Journal) -> None:
    assert TRANSITIONS[DONE] == frozenset({ROLLED_BACK})
    assert PENDING in TRANSITIONS[ROLLED_BACK]  # the same import may run again


def test_stale_expected_row_touches_nothing(journal: Journal) -> None:
    run = journal.start_run("import").id
    first = _start(journal, run, "a")
    second = _start(journal, run, "a", expected=first)  # attempt 2
    with pytest.raises(JournalError, match="touched 0 rows instead of 1"):
        journal.transition(run, "dst", "nova.keypair", "a", DONE, action="create", expected=first)
    assert journal.operation("dst", "nova.keypair", "a") == second


def test_double_insert_is_refused(journal: Journal) -> None:
    run = journal.start_run("import").id
    _start(journal, run, "a")
    with pytest.raises(JournalError, match="another worker"):
        _start(journal, run, "a")


def test_before_state_is_kept_for_rollback(journal: Journal) -> None:
    run = journal.start_run("quotas").id
    before = {"cores": 20, "ram": 51200}
    op = journal.transition(
        run, "dst", "nova.quota", "p1", PENDING, action="update", expected=None, before=before
    )
    done = journal.transition(run, "dst", "nova.quota", "p1", DONE, action="update", expected=op)
    assert done.before == before


def test_counts_and_filters(journal: Journal) -> None:
    run = journal.start_run("import").id
    for i in range(3):
        op = _start(journal, run, f"k{i}")
        if i < 2:
            journal.transition(run, "dst", "nova.keypair", f"k{i}", DONE, action="create",
                               expected=op)
    journal.transition(run, "dst", "nova.quota", "p", FAILED, action="update", expected=None,
                       error="boom")
    assert journal.counts() == {
        "nova.keypair": {PENDING: 1, DONE: 2, FAILED: 0, SKIPPED: 0, ROLLED_BACK: 0},
        "nova.quota": {PENDING: 0, DONE: 0, FAILED: 1, SKIPPED: 0, ROLLED_BACK: 0},
    }
    assert [o.error for o in journal.operations(state=FAILED)] == ["boom"]
    assert journal.counts(run_id="other") == {}


def test_id_map_is_idempotent_and_replaceable(journal: Journal) -> None:
    journal.map_id("dst", "neutron.security_group", "s1", "d1")
    journal.map_id("dst", "neutron.security_group", "s1", "d1")
    journal.map_id("dst", "neutron.security_group", "s2", "d2")
    journal.map_id("dst", "neutron.security_group", "s2", "d3")
    assert journal.id_map("dst", "neutron.security_group") == {"s1": "d1", "s2": "d3"}
    assert journal.mapped_id("dst", "neutron.security_group", "s1") == "d1"
    assert journal.mapped_id("other", "neutron.security_group", "s1") is None


def test_chunks(journal: Journal) -> None:
    journal.record_chunk("vol-1", 0, 4096, "aa", state="pending")
    journal.record_chunk("vol-1", 4096, 4096, "bb")
    journal.record_chunk("vol-1", 0, 4096, "cc")
    got = journal.chunks("vol-1")
    assert [(c.offset, c.digest, c.state) for c in got.values()] == [
        (0, "cc", "confirmed"), (4096, "bb", "confirmed"),
    ]
    with pytest.raises(JournalError, match="unknown chunk state"):
        journal.record_chunk("vol-1", 0, 1, "x", state="half")
    assert journal.clear_chunks("vol-1") == 2
    assert journal.chunks("vol-1") == {}


def test_memory_database_is_refused() -> None:
    with pytest.raises(JournalError, match="not :memory:"):
        Journal("sqlite://")


def test_journal_url() -> None:
    assert journal_url("postgresql://u:p@127.0.0.1/j") == "postgresql://u:p@127.0.0.1/j"
    assert journal_url("rel.sqlite").startswith("sqlite:////")


# -- migrations ----------------------------------------------------------------


def test_forward_migration_from_version_1(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    assert upgrade(engine, target=1) == 1
    columns = {c["name"] for c in sa.inspect(engine).get_columns("operations")}
    assert "before_state" not in columns and not sa.inspect(engine).has_table("chunks")
    now = "2024-05-01 10:00:00.000000"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO runs (id, command, started_at, outcome) "
            f"VALUES ('r-old', 'import', '{now}', 'failed')"
        )
        conn.exec_driver_sql(
            "INSERT INTO operations (run_id, scope, kind, identity, action, state, attempts, "
            f"created_at, updated_at) VALUES ('r-old', 'dst', 'nova.keypair', 'a/k', 'create', "
            f"'pending', 1, '{now}', '{now}')"
        )
    engine.dispose()

    with Journal(path) as j:
        assert j.schema_version == SCHEMA_VERSION == 5
        old = j.operation("dst", "nova.keypair", "a/k")
        assert old is not None and old.state == PENDING and old.before is None
        assert old.stage is None and old.progress is None
        j.transition("r-new", "dst", "nova.keypair", "a/k", DONE, action="create", expected=old,
                     destination_id="d")
        j.record_chunk("obj", 0, 1, "d")
        assert j.run("r-old").outcome == "failed"
    with sa.create_engine(f"sqlite:///{path}").connect() as conn:
        assert conn.exec_driver_sql("SELECT version, written_by FROM schema_version").all() == [
            (5, __version__)
        ]


def test_forward_migration_from_version_3_adds_stage_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "v3.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}")
    assert upgrade(engine, target=3) == 3
    columns = {c["name"] for c in sa.inspect(engine).get_columns("operations")}
    assert "undone_by" in columns and "stage" not in columns and "progress" not in columns
    now = "2024-05-01 10:00:00.000000"
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO runs (id, command, started_at, outcome) "
            f"VALUES ('r-3', 'volumes copy', '{now}', 'interrupted')"
        )
        conn.exec_driver_sql(
            "INSERT INTO operations (run_id, scope, kind, identity, action, state, attempts, "
            "before_state, created_at, updated_at) VALUES ('r-3', 'dst', 'cinder.volume', "
            f"'v1#1', 'copy', 'pending', 1, '{{\"stage\": \"exported\"}}', '{now}', '{now}')"
        )
    engine.dispose()

    with Journal(path) as j:
        assert j.schema_version == 5
        old = j.operation("dst", "cinder.volume", "v1#1")
        assert old is not None and old.before == {"stage": "exported"}
        assert old.stage is None and old.progress is None
        assert j.report(old, stage="imported", progress={"done": 1, "total": 2, "unit": "bytes"})
        now_row = j.operation("dst", "cinder.volume", "v1#1")
        assert now_row is not None and now_row.stage == "imported"
        assert now_row.progress == {"done": 1, "total": 2, "unit": "bytes"}
        assert now_row.before == {"stage": "exported"}  # untouched unless given


def test_newer_journal_is_refused_with_the_version_to_use(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite"
    Journal(path).close()
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE schema_version SET version = 7, written_by = '3.1.0'")
    engine.dispose()
    with pytest.raises(JournalError) as caught:
        Journal(path)
    message = caught.value.message
    assert "schema version 7" in message and "use stackhop >= 3.1.0" in message


# -- concurrency ---------------------------------------------------------------


def _claim_and_finish(j: Journal, run: str, identity: str) -> bool:
    """Claim an operation, finish it; False if another worker holds it."""
    try:
        op = j.transition(run, "dst", "k", identity, PENDING, action="create", expected=None,
                          attempt=True)
    except JournalError:
        return False
    j.transition(run, "dst", "k", identity, DONE, action="create", expected=op,
                 destination_id=f"d-{identity}")
    j.map_id("dst", "k", identity, f"d-{identity}")
    return True


def test_sixteen_threads_hammering_one_sqlite_file(journal: Journal) -> None:
    run = journal.start_run("import").id
    wins: list[int] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(16)

    def worker(n: int) -> None:
        try:
            barrier.wait()
            own = sum(_claim_and_finish(journal, run, f"t{n}-{i}") for i in range(40))
            assert own == 40
            wins.append(sum(_claim_and_finish(journal, run, f"shared-{i}") for i in range(10)))
        except BaseException as exc:  # reported below, the test fails on it
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(wins) == 10  # each shared operation claimed by exactly one thread
    assert journal.counts() == {
        "k": {PENDING: 0, DONE: 16 * 40 + 10, FAILED: 0, SKIPPED: 0, ROLLED_BACK: 0}
    }
    assert len(journal.id_map("dst", "k")) == 16 * 40 + 10


def _process_worker(path: str, n: int, queue: multiprocessing.Queue) -> None:
    with Journal(path) as j:  # four processes open (and create) the journal at once
        run = j.start_run(f"worker-{n}").id
        own = sum(_claim_and_finish(j, run, f"p{n}-{i}") for i in range(50))
        shared = sum(_claim_and_finish(j, run, f"shared-{i}") for i in range(20))
        queue.put((n, own, shared))


def test_four_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    path = str(tmp_path / "shared.sqlite")
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(path, n, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(own for _, own, _ in results) == [50] * 4
    assert sum(shared for *_, shared in results) == 20
    with Journal(path) as j:
        assert j.counts() == {"k": {PENDING: 0, DONE: 220, FAILED: 0, SKIPPED: 0, ROLLED_BACK: 0}}
        assert len(j.runs()) == 4
        assert j.schema_version == SCHEMA_VERSION
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


# -- a server database -----------------------------------------------------------


@pytest.fixture(scope="module")
def mariadb_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private MariaDB server for this module, on a unix socket (no network), then stopped."""
    base = tmp_path_factory.mktemp("mariadb")
    subprocess.run(
        [shutil.which("mariadb-install-db") or "mariadb-install-db", "--no-defaults",
         f"--datadir={base / 'data'}", "--auth-root-authentication-method=normal",
         "--user=root", "--skip-test-db"],
        check=True, capture_output=True,
    )
    sock = base / "sock"
    server = subprocess.Popen(
        ["mariadbd", "--no-defaults", f"--datadir={base / 'data'}", f"--socket={sock}",
         "--skip-networking", "--user=root", f"--log-error={base / 'err.log'}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        url = f"mysql+pymysql://root@localhost/{{db}}?unix_socket={sock}&charset=utf8mb4"
        deadline = time.monotonic() + 60
        while True:
            try:
                engine = sa.create_engine(url.format(db=""))
                with engine.begin() as conn:
                    conn.exec_driver_sql("CREATE DATABASE journal")
                engine.dispose()
                break
            except sa.exc.OperationalError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.2)
        yield url.format(db="journal")
    finally:
        server.terminate()
        server.wait(timeout=60)


def test_four_processes_on_a_server_database(mariadb_url: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_process_worker, args=(mariadb_url, n, queue)) for n in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(own for _, own, _ in results) == [50] * 4
    assert sum(shared for *_, shared in results) == 20
    with Journal(mariadb_url) as j:
        assert j.counts() == {"k": {PENDING: 0, DONE: 220, FAILED: 0, SKIPPED: 0, ROLLED_BACK: 0}}
        assert len(j.id_map("dst", "k")) == 220
        runs = j.runs()
        assert len(runs) == 4 and runs[0].started_at.microsecond is not None
        assert "root@localhost" in j.describe()


def _change(run_id: str, identity: str, state: str, expected=None, **kw) -> Change:
    return Change(
        run_id=run_id, scope="dst", kind="nova.keypair", identity=identity, state=state,
        action="create", expected=expected, **kw,
    )


def test_apply_writes_many_changes_and_mappings_in_one_transaction(journal: Journal) -> None:
    run = journal.start_run("import").id
    pending = journal.apply(
        [_change(run, f"alice/key{i}", PENDING, source_id=f"s{i}", attempt=True) for i in range(3)]
    )
    assert [(r.identity, r.state, r.attempts) for r in pending] == [
        (f"alice/key{i}", PENDING, 1) for i in range(3)
    ]
    done = journal.apply(
        [_change(run, r.identity, DONE, expected=r, destination_id=f"d{i}")
         for i, r in enumerate(pending)],
        [("dst", "nova.keypair", f"s{i}", f"d{i}") for i in range(3)],
    )
    # The rows returned are the rows written: reading them back gives the same.
    assert done == [journal.operation("dst", "nova.keypair", f"alice/key{i}") for i in range(3)]
    assert done[0].source_id == "s0" and done[0].destination_id == "d0"
    assert journal.id_map("dst", "nova.keypair") == {"s0": "d0", "s1": "d1", "s2": "d2"}
    keys = [("nova.keypair", "alice/key1"), ("nova.keypair", "nobody/key"), ("other", "alice/key2")]
    assert journal.rows("dst", keys) == {("nova.keypair", "alice/key1"): done[1]}


def test_apply_is_all_or_nothing_when_a_row_moved(journal: Journal) -> None:
    run = journal.start_run("import").id
    first, second = journal.apply(
        [_change(run, "alice/a", PENDING, attempt=True), _change(run, "alice/b", PENDING,
                                                                  attempt=True)]
    )
    journal.transition(run, "dst", "nova.keypair", "alice/b", FAILED, action="create",
                       expected=second, error="boom")  # another worker moved it
    with pytest.raises(JournalError, match="alice/b"):
        journal.apply(
            [_change(run, "alice/a", DONE, expected=first, destination_id="x"),
             _change(run, "alice/b", DONE, expected=second, destination_id="y")],
            [("dst", "nova.keypair", "src-a", "x")],
        )
    assert journal.operation("dst", "nova.keypair", "alice/a").state == PENDING
    assert journal.id_map("dst", "nova.keypair") == {}


def test_rollback_marks_the_row_and_drops_its_mapping(journal: Journal) -> None:
    run = journal.start_run("import").id
    undo = journal.start_run("rollback").id
    (row,) = journal.apply([_change(run, "alice/k", PENDING, source_id="s", attempt=True)])
    with pytest.raises(JournalError, match="cannot go from pending to rolled_back"):
        journal.apply([_change(run, "alice/k", ROLLED_BACK, expected=row)])
    (done,) = journal.apply([_change(run, "alice/k", DONE, expected=row, destination_id="d")],
                            [("dst", "nova.keypair", "s", "d")])
    (marked,) = journal.apply(
        [_change(run, "alice/k", ROLLED_BACK, expected=done, undone_by=undo)],
        unmappings=[("dst", "nova.keypair", "s")],
    )
    kept = journal.operation("dst", "nova.keypair", "alice/k")
    assert kept == marked
    assert (kept.state, kept.run_id, kept.undone_by, kept.destination_id) == (
        ROLLED_BACK, run, undo, "d"
    )
    assert journal.mapped_id("dst", "nova.keypair", "s") is None
    assert journal.counts(run_id=run)["nova.keypair"][ROLLED_BACK] == 1
    with pytest.raises(JournalError):  # undone once: not again from a stale row
        journal.apply([_change(run, "alice/k", ROLLED_BACK, expected=done, undone_by=undo)])
