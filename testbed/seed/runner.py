"""The order of the seed: identity first, then independent branches in parallel threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from testbed import layout
from testbed.process import TestbedError
from testbed.seed import (
    identity,
    images,
    keypairs,
    network,
    quotas,
    security_groups,
    servers,
    volumes,
)
from testbed.seed.context import Report, SeedContext, Tally


class SeedError(TestbedError):
    """One or more branches of the seed failed."""


def seed(report: Report) -> None:
    """Seed src and dst; raise :class:`SeedError` naming the steps that failed."""
    t0 = time.monotonic()
    tally = Tally(report)
    report(f"seed: src at {layout.SRC.keystone_url}, dst at {layout.DST.keystone_url}")

    def timed(label: str, fn: Callable[[], object]) -> None:
        t = time.monotonic()
        fn()
        report(f"{label:<40} {time.monotonic() - t:6.1f}s")

    src, dst = SeedContext(layout.SRC, tally), SeedContext(layout.DST, tally)
    timed("identity on src", lambda: identity.seed_src(src))
    timed("identity on dst", lambda: identity.seed_dst(dst, src))
    timed("quotas on src", lambda: quotas.seed(src))

    def access() -> None:
        s, d = src.sibling(), dst.sibling()
        timed("keypairs on src", lambda: keypairs.seed(s, "src"))
        timed("keypairs on dst", lambda: keypairs.seed(d, "dst"))
        timed("security groups on src", lambda: security_groups.seed(s, "src"))
        timed("security groups on dst", lambda: security_groups.seed(d, "dst"))

    def storage_and_compute() -> None:
        s = src.sibling()
        image_ids: dict[str, str] = {}
        volume_ids: dict[str, str] = {}
        timed("images on src", lambda: image_ids.update(images.seed(s)))
        timed("volumes on src", lambda: volume_ids.update(volumes.seed(s, image_ids)))
        timed("servers and usage on src", lambda: servers.seed(s, image_ids, volume_ids))

    branches = {
        "keypairs and security groups": access,
        "network topology": lambda: timed(
            "network topology on src", lambda: network.seed(src.sibling())
        ),
        "images, volumes and servers": storage_and_compute,
    }
    failed = _run_parallel(branches, report)
    elapsed = time.monotonic() - t0
    if failed:
        raise SeedError(f"seed failed in: {'; '.join(failed)} (after {elapsed:.1f}s)")
    present = sum(tally.present.values())
    if tally.changes == 0:
        report(f"seed: nothing to do, all {present} objects already as declared ({elapsed:.1f}s)")
        return
    kinds = sorted(set(tally.created) | set(tally.updated))
    summary = ", ".join(f"{k} {tally.created[k] + tally.updated[k]}" for k in kinds)
    report(f"seed: {tally.changes} changes ({summary}); {present} objects were already there; "
           f"done in {elapsed:.1f}s")


def _run_parallel(branches: dict[str, Callable[[], None]], report: Report) -> list[str]:
    failed: list[str] = []
    lock = threading.Lock()

    def work(name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as exc:  # reported and re-raised as SeedError by the caller
            with lock:
                failed.append(f"{name}: {type(exc).__name__}: {exc}")
            report(f"FAILED {name}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=work, args=item, name=item[0]) for item in branches.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return failed
