"""The local executor: groups of calls on a pool of threads, outcomes in order, errors kept."""

from __future__ import annotations

import threading

import pytest

from stackhop.executor import LocalExecutor


def _failed(item: int, exc: Exception) -> str:
    return f"{item} failed: {exc}"


def test_each_item_gets_its_outcome_and_a_raising_group_fails_every_item() -> None:
    def call(group: list[int]) -> list[str]:
        if 13 in group:
            raise RuntimeError("unlucky")
        return [f"{item} done" for item in group]

    with LocalExecutor(call, _failed, workers=2) as executor:
        executor.submit([1, 2])
        executor.submit([13, 14])
        finished: list[tuple[int, str]] = []
        while executor.in_flight():
            finished += executor.collect(block=True)
    assert sorted(finished) == [
        (1, "1 done"), (2, "2 done"), (13, "13 failed: unlucky"), (14, "14 failed: unlucky"),
    ]


def test_collect_without_blocking_returns_what_finished_so_far() -> None:
    release = threading.Event()

    def call(group: list[int]) -> list[str]:
        release.wait(10)
        return ["done"] * len(group)

    executor = LocalExecutor(call, _failed, workers=1)
    try:
        executor.submit([1])
        assert executor.collect(block=False) == []
        assert executor.in_flight() == 1 and executor.capacity == 1
        release.set()
        assert executor.collect(block=True) == [(1, "done")]
        assert executor.in_flight() == 0
        assert executor.collect(block=True) == []  # nothing in flight: no wait
    finally:
        release.set()
        executor.close()


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        LocalExecutor(lambda g: g, _failed, workers=0)
