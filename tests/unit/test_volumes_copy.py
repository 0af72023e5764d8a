"""Planning from the journal, the preflight's messages, the temporaries ledger, the registry.

Pure logic on a real SQLite journal in a temporary directory; no cloud.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import CapabilityError, ConflictError, UsageError
from stackhop.journal import DONE, FAILED, PENDING, Journal
from stackhop.volumes import methods
from stackhop.volumes.cinder_adopt import marks
from stackhop.volumes.copy import KIND, pass_identity, plan_volume, scope_of
from stackhop.volumes.inventory import QuotaRoom
from stackhop.volumes.model import Temporary, VolumeRef
from stackhop.volumes.preflight import QuotaExceededError, check_in_use, check_quota
from stackhop.volumes.temporaries import TemporaryLedger

SCOPE = scope_of("src", "dst")


def _vol(vid: str, size: int = 1, vtype: str | None = "file", **kw: object) -> VolumeRef:
    return VolumeRef(cloud="src", id=vid, name=f"n-{vid}", size_gib=size, project_id="p",
                     status=str(kw.pop("status", "available")), volume_type=vtype,
                     **kw)  # type: ignore[arg-type]  # fmt: skip


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "j.sqlite")


def _pass(journal: Journal, run: str, vid: str, n: int, state: str, dst: str | None) -> None:
    row = journal.operation(SCOPE, KIND, pass_identity(vid, n))
    if row is None or row.state != PENDING:
        row = journal.transition(run, SCOPE, KIND, pass_identity(vid, n), PENDING,
                                 action="copy", expected=row, source_id=vid,
                                 before={"pass": n, "stage": "started"})  # fmt: skip
    if state != PENDING:
        journal.transition(run, SCOPE, KIND, pass_identity(vid, n), state, action="copy",
                           expected=row, source_id=vid, destination_id=dst,
                           before={"pass": n, "stage": "verified" if state == DONE else "exported",
                                   "state": {"snap": f"s{n}"}})  # fmt: skip


def test_plan_new_verified_incremental_and_interrupted(journal: Journal) -> None:
    run = journal.start_run("volumes copy").id
    assert plan_volume(journal, SCOPE, _vol("a"), False, "dp", "file").action == "copy"

    _pass(journal, run, "a", 1, DONE, "d-a")
    skip = plan_volume(journal, SCOPE, _vol("a"), False, "dp", "file")
    assert (skip.action, skip.pass_number, skip.destination_id) == ("skip", 1, "d-a")

    more = plan_volume(journal, SCOPE, _vol("a"), True, "dp", "file")
    assert (more.action, more.pass_number, more.destination_id) == ("incremental", 2, "d-a")
    assert more.previous is not None and more.previous.before["state"] == {"snap": "s1"}

    _pass(journal, run, "a", 2, FAILED, None)
    resumed = plan_volume(journal, SCOPE, _vol("a"), True, "dp", "file")
    assert (resumed.action, resumed.pass_number) == ("incremental", 2)
    assert resumed.resume is not None and resumed.resume.identity == "a#2"
    assert resumed.destination_id == "d-a"  # the failed pass knew none: the verified one's

    _pass(journal, run, "b", 1, FAILED, "d-b-partial")
    first = plan_volume(journal, SCOPE, _vol("b"), False, "dp", "file")
    assert (first.action, first.pass_number, first.destination_id) == ("copy", 1, "d-b-partial")


def test_quota_message_names_the_numbers() -> None:
    room = QuotaRoom("dp", volumes=1, gigabytes=2, per_type={})
    with pytest.raises(QuotaExceededError) as caught:
        check_quota("alpha", room, [_vol("a", 1), _vol("b", 2), _vol("c", 2)], {})
    assert str(caught.value) == (
        "dst project alpha: 3 volumes / 5 GiB requested, quota leaves 1 volume / 2 GiB; "
        "raise the quota or select fewer"
    )
    check_quota("alpha", QuotaRoom("dp", None, None), [_vol("a", 900)], {})


def test_quota_per_volume_type() -> None:
    room = QuotaRoom("dp", volumes=10, gigabytes=100, per_type={"ceph": (1, None)})
    volumes = [_vol("a", vtype="ceph"), _vol("b", vtype="ceph"), _vol("c")]
    with pytest.raises(QuotaExceededError, match="volume type ceph: 2 volumes / 2 GiB requested, "
                       "quota leaves 1 volume / unlimited GiB"):  # fmt: skip
        check_quota("alpha", room, volumes, {v.id: v.volume_type for v in volumes})


def test_in_use_needs_allow_and_incremental() -> None:
    busy = _vol("a", status="in-use", attachments=("srv",))
    check_in_use([_vol("b")], False, False)
    with pytest.raises(ConflictError, match="in use: n-a"):
        check_in_use([busy], False, True)
    with pytest.raises(UsageError, match="only with --incremental"):
        check_in_use([busy], True, False)
    check_in_use([busy], True, True)


def test_temporaries_ledger_created_kept_removed_and_created_again(journal: Journal) -> None:
    run = journal.start_run("volumes copy").id
    ledger = TemporaryLedger(journal, SCOPE)
    snap = Temporary("rbd", "rbd-snapshot", "src", "volumes/volume-a@p1")
    img = Temporary("image", "image", "dst", "stackhop-volume-a", {"side": "destination"})
    ledger.created(run, "a", snap)
    ledger.created(run, "a", img)
    assert {t.name for _, t in ledger.leftovers(run)} == {snap.name, img.name}
    ledger.keep(run, snap)
    assert [t for _, t in ledger.leftovers(run)] == [img]
    ledger.removed(run, img)
    ledger.removed(run, snap)
    assert ledger.leftovers(run) == [] and ledger.pending() == []
    ledger.created(run, "a", img)  # the same name again after removal: a new row
    assert [r.identity for r in ledger.pending()] == [f"{img.identity}#2"]


def test_registry_names_a_missing_method_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    assert methods.get_method("image").name == "image"
    monkeypatch.setitem(methods.METHODS, "rbd", "stackhop.volumes.nonexistent:RbdMethod")
    with pytest.raises(CapabilityError, match="method 'rbd' is not available"):
        methods.get_method("rbd")
    with pytest.raises(UsageError, match="unknown volume copy method"):
        methods.get_method("dd")
    assert methods.supports_incremental(methods.get_method("image")) is False


def test_copy_marker_is_the_bare_source_id_and_the_older_cloud_prefixed_one_still_counts() -> None:
    assert marks({"stackhop_source": "abc"}, "abc")
    assert marks({"stackhop_source": "src-faulty:abc"}, "abc")  # the stream method's, before
    assert not marks({"stackhop_source": "abcd"}, "abc")
    assert not marks({"stackhop_source": "src:xabc"}, "abc")
    assert not marks({}, "abc") and not marks(None, "abc")
