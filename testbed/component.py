"""The unit of the testbed: a component with dependencies, brought up idempotently.

A component is anything ``up`` must make true (MariaDB running, the src
Keystone bootstrapped and answering, ...). Components declare what they come
after; :func:`bring_up` runs them in dependency order, independent ones in
parallel threads, and ``down`` stops their daemons in reverse order.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from testbed.process import Daemon, TestbedError


@dataclass
class Component:
    """One thing ``up`` brings about.

    ``setup`` writes configuration and does one-time initialisation (it must be
    idempotent and quick when already done); then every daemon is ensured in
    order; then ``after_start`` runs (e.g. creating pools once the cluster
    answers). ``teardown`` runs at ``down`` after the daemons stopped (e.g.
    unmounting a bind mount).
    """

    name: str
    after: Sequence[str] = ()
    daemons: Sequence[Daemon] = ()
    setup: Callable[[], None] | None = None
    after_start: Callable[[], None] | None = None
    teardown: Callable[[], None] | None = None
    #: Extra health checks shown by ``status``: label -> check.
    checks: dict[str, Callable[[], bool]] = field(default_factory=dict)

    def ensure(self) -> str:
        if self.setup is not None:
            self.setup()
        outcomes = [d.ensure() for d in self.daemons]
        if self.after_start is not None:
            self.after_start()
        return "started" if "started" in outcomes else "up"

    def stop(self) -> None:
        for d in reversed(self.daemons):
            d.stop()
        if self.teardown is not None:
            self.teardown()


def bring_up(
    components: Sequence[Component],
    report: Callable[[str], None] = print,
    only: set[str] | None = None,
) -> None:
    """Ensure every component, respecting ``after``, in parallel where possible."""
    by_name = {c.name: c for c in components}
    wanted = set(by_name) if not only else _with_deps(only, by_name)
    done: dict[str, threading.Event] = {n: threading.Event() for n in wanted}
    failed: dict[str, str] = {}
    lock = threading.Lock()

    def work(c: Component) -> None:
        try:
            for dep in c.after:
                if dep in done:
                    done[dep].wait()
                    if dep in failed:
                        raise TestbedError(f"needs {dep}, which failed")
            t0 = time.monotonic()
            outcome = c.ensure()
            report(f"{c.name:<28} {outcome:<8} {time.monotonic() - t0:6.1f}s")
        except Exception as exc:  # reported below, per component
            with lock:
                failed[c.name] = f"{type(exc).__name__}: {exc}"
            report(f"{c.name:<28} FAILED   {exc}")
        finally:
            done[c.name].set()

    threads = [threading.Thread(target=work, args=(by_name[n],), name=n) for n in wanted]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failed:
        lines = "; ".join(f"{n}: {msg}" for n, msg in sorted(failed.items()))
        raise TestbedError(f"{len(failed)} testbed component(s) failed: {lines}")


def _with_deps(names: set[str], by_name: dict[str, Component]) -> set[str]:
    out: set[str] = set()
    stack = list(names)
    while stack:
        n = stack.pop()
        if n in out:
            continue
        if n not in by_name:
            raise TestbedError(f"unknown component {n!r}; known: {', '.join(sorted(by_name))}")
        out.add(n)
        stack.extend(by_name[n].after)
    return out


def stop_all(components: Sequence[Component], report: Callable[[str], None] = print) -> None:
    """Stop components in reverse dependency order."""
    for c in reversed(_topological(components)):
        c.stop()
        report(f"{c.name:<28} stopped")


def _topological(components: Sequence[Component]) -> list[Component]:
    by_name = {c.name: c for c in components}
    seen: set[str] = set()
    order: list[Component] = []

    def visit(c: Component) -> None:
        if c.name in seen:
            return
        seen.add(c.name)
        for dep in c.after:
            if dep in by_name:
                visit(by_name[dep])
        order.append(c)

    for c in components:
        visit(c)
    return order
