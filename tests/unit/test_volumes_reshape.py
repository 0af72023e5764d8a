"""``--type-map``, ``--min-size`` and ``--grow-to``: parsing and the sizes they ask for."""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.cli.main import main
from stackhop.errors import ConfigError, UsageError
from stackhop.volumes.model import VolumeRef
from stackhop.volumes.reshape import Reshape, parse_grow_to, parse_type_map


def _volume(name: str, size: int, vid: str = "v-1", vtype: str = "ceph") -> VolumeRef:
    return VolumeRef(cloud="src", id=vid, name=name, size_gib=size, project_id="p",
                     status="available", volume_type=vtype)  # fmt: skip


def test_type_map_takes_pairs_and_files_and_refuses_a_type_mapped_twice(tmp_path: Path) -> None:
    file = tmp_path / "types.yaml"
    file.write_text("hdd: ssd\nold-ceph: ceph\n")
    assert parse_type_map(["lvm=ceph", str(file)]) == {
        "lvm": "ceph", "hdd": "ssd", "old-ceph": "ceph",
    }  # fmt: skip
    assert parse_type_map(["hdd=ssd", str(file)])["hdd"] == "ssd"  # the same twice is fine
    with pytest.raises(UsageError, match="maps volume type 'hdd' to both 'nvme' and 'ssd'"):
        parse_type_map(["hdd=nvme", str(file)])
    for bad in ("=ssd", "hdd=", " = "):
        with pytest.raises(UsageError, match="SOURCE=DESTINATION"):
            parse_type_map([bad])
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must map source type names"):
        parse_type_map([str(tmp_path / "list.yaml")])
    with pytest.raises(ConfigError, match="cannot read type map"):
        parse_type_map([str(tmp_path / "missing.yaml")])


def test_grow_to_and_min_size_never_shrink_and_name_selected_volumes() -> None:
    small, big = _volume("small", 1, "v-1"), _volume("big", 10, "v-2")
    reshape = Reshape(min_size_gib=4, grow_to=parse_grow_to(["v-2=20"]))
    reshape.check([small, big])
    assert [reshape.target_gib(v) for v in (small, big)] == [4, 20]
    assert [v.size_gib for v in reshape.sized([small, big])] == [4, 20]
    with pytest.raises(UsageError, match="has 10 GiB and a volume cannot shrink"):
        Reshape(grow_to={"big": 5}).check([big])
    with pytest.raises(UsageError, match="no selected volume has that name or ID"):
        Reshape(grow_to={"other": 5}).check([big])
    for bad in ("big=0", "big=1.5", "big=x"):
        with pytest.raises(UsageError, match="whole number of GiB"):
            parse_grow_to([bad])


@pytest.mark.parametrize(
    ("option", "said"),
    [(["--min-size", "0"], "must be at least 1"), (["--grow-to", "a=b"], "whole number of GiB")],
)
def test_bad_sizes_on_the_command_line_are_usage_errors(
    option: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["volumes", "copy", "--from", "nowhere", "--to", "nowhere", "--project", "p",
                 "--all", "--method", "image", *option])  # fmt: skip
    assert code == UsageError.exit_code or code == 2
    assert said in capsys.readouterr().err
