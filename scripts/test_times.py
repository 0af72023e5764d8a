"""Where `make test`'s time goes: the JUnit report's times summed by test file.

    .venv/bin/python scripts/test_times.py [build/test-report.xml] [--top N]

Prints the files by total seconds (tests, slowest test), then the slowest tests. The
report is written by `make test` (pytest ``--junitxml``); setup and teardown time of a
test counts towards it, as pytest's JUnit report counts it.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path
from xml.etree import ElementTree


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("report", nargs="?", default="build/test-report.xml")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    path = Path(args.report)
    if not path.is_file():
        print(f"test_times: no report at {path}; run `make test` first", file=sys.stderr)
        return 2
    tests: list[tuple[float, str, str]] = []
    for case in ElementTree.parse(path).iter("testcase"):
        module = case.get("classname", "").replace(".", "/") + ".py"
        tests.append((float(case.get("time") or 0), module, case.get("name", "")))
    by_file: dict[str, list[float]] = defaultdict(list)
    for seconds, module, _ in tests:
        by_file[module].append(seconds)
    total = sum(t for t, _, _ in tests)
    print(f"{len(tests)} tests, {total:.0f} s ({total / 60:.1f} min)\n")
    print(f"{'seconds':>8} {'tests':>5} {'slowest':>8}  file")
    for module, times in sorted(by_file.items(), key=lambda kv: -sum(kv[1]))[: args.top]:
        print(f"{sum(times):8.1f} {len(times):5d} {max(times):8.1f}  {module}")
    print(f"\n{'seconds':>8}  slowest tests")
    for seconds, module, name in sorted(tests, reverse=True)[: args.top]:
        print(f"{seconds:8.1f}  {module}::{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
