"""The registry of kinds: discovery, and everything that is derived from it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from stackhop import kinds as registry
from stackhop import resources
from stackhop.cli.main import build_parser
from stackhop.cli.options import add_kind_selectors, chosen_selectors, positive_int
from stackhop.kinds.base import Kind

DOCS = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def _documented() -> dict[str, tuple[str, tuple[str, ...]]]:
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("<!-- selectors: begin -->")[1].split("<!-- selectors: end -->")[0]
    rows = {}
    for line in table.strip().splitlines()[2:]:
        flag, names, what = (cell.strip() for cell in line.strip("|").split("|"))
        rows[flag.strip("`").removeprefix("--")] = (
            what,
            tuple(re.findall(r"`([^`]+)`", names)),
        )
    return rows


def test_docs_cli_lists_the_registry_selectors() -> None:
    assert _documented() == registry.selectors()


def test_every_kind_module_is_discovered() -> None:
    names = {kind.name for kind in registry.all_kinds()}
    assert {"nova.keypair", "nova.quota", "neutron.quota", "cinder.quota",
            "neutron.security_group", "neutron.security_group_rules", "glance.image"} <= names
    assert "image" in registry.kind_modules() and "keypair" in registry.kind_modules()


def test_transfer_kinds_selectors_and_resources_agree() -> None:
    transfer = registry.transfer_kinds()
    assert resources.ALL_KINDS == tuple(k.name for k in transfer)
    assert "glance.image" not in resources.ALL_KINDS  # images have their own commands
    selected = {name for names in resources.SELECTORS.values() for name in names}
    assert selected == set(resources.ALL_KINDS)  # every moved kind can be selected
    # A kind comes after the kinds it refers to (the export reads groups before rules).
    order = list(resources.ALL_KINDS)
    for kind in transfer:
        assert all(order.index(dep) < order.index(kind.name)
                   for dep in kind.dependencies() if dep in order)


def test_the_cli_flags_come_from_the_registry() -> None:
    parser = argparse.ArgumentParser()
    add_kind_selectors(parser)
    args = parser.parse_args(["--quotas", "--security-groups"])
    assert chosen_selectors(args) == ["quotas", "security_groups"]
    assert resources.selected_kinds(chosen_selectors(args)) == [
        name for name in resources.ALL_KINDS if "quota" in name or "security_group" in name
    ]
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    for command in ("export", "plan", "import", "verify", "migrate"):
        sub = commands[command]
        flags = {s for a in sub._actions for s in a.option_strings}
        assert {f"--{flag}" for flag in registry.selectors()} <= flags, command


def test_every_transfer_kind_has_a_database_reader() -> None:
    for kind in registry.transfer_kinds():
        assert type(kind).read_db is not Kind.read_db, kind.name


def test_restore_and_observe_are_part_of_every_kind() -> None:
    for kind in registry.all_kinds():
        assert callable(kind.restore) and callable(kind.observe)


def test_a_shared_selector_must_say_the_same_everywhere(monkeypatch: pytest.MonkeyPatch) -> None:
    quota = registry.get("nova.quota")
    monkeypatch.setattr(type(quota), "selectors", {"quotas": "something else"})
    with pytest.raises(ValueError, match="selector --quotas"):
        registry.selectors()


@pytest.mark.parametrize("text", ["0", "-3", "two"])
def test_workers_must_be_a_positive_integer(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        positive_int(text)
    assert positive_int("4") == 4
