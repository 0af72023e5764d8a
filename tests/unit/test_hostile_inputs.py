"""Hostile map files, storage maps and ssh host names: each refused with one line, naming the file.

The loaders are the real ones every command uses; the files are real files.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from stackhop.errors import ConfigError
from stackhop.kinds.identity import load_operator_map
from stackhop.mapfile import MAX_BYTES, read_mapping
from stackhop.resolve import load_id_map, load_network_map
from stackhop.transfer.ssh import SshHost
from stackhop.volumes.reshape import parse_type_map
from stackhop.volumes.storage import load_storage_map

BOMB = """\
a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x"]
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b]
d: [*c, *c, *c, *c, *c, *c, *c, *c, *c]
"""

LOADERS = [
    ("ID map", load_id_map),
    ("network map", load_network_map),
    ("map", load_operator_map),
    ("storage map", load_storage_map),
    ("type map", lambda path: parse_type_map([str(path)])),
]


def _one_line(exc: pytest.ExceptionInfo[ConfigError], path: Path) -> str:
    message = str(exc.value.message if hasattr(exc.value, "message") else exc.value)
    assert "\n" not in message and str(path) in message
    return message


#: (what the file holds, what the one-line error must say) for every loader.
BAD_FILES = [
    ("bomb", BOMB, "alias"),  # refused unexpanded
    ("twice", "src-a: dst-1\nsrc-a: dst-2\n", "'src-a' twice"),
    ("list", "- a\n- b\n", "not be a list"),
]


@pytest.mark.parametrize(("what", "load"), LOADERS, ids=[w for w, _ in LOADERS])
@pytest.mark.parametrize(("name", "text", "expected"), BAD_FILES, ids=[n for n, _, _ in BAD_FILES])
def test_a_bad_map_file_is_refused_in_one_line(  # type: ignore[no-untyped-def]
    what: str, load, name: str, text: str, expected: str, tmp_path: Path
) -> None:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as exc:
        load(path)
    assert expected in _one_line(exc, path)


def test_json_keys_given_twice_and_oversized_files_are_refused(tmp_path: Path) -> None:
    twice = tmp_path / "twice.json"
    twice.write_text('{"a": "1", "a": "2"}')
    with pytest.raises(ConfigError, match="'a' twice"):
        read_mapping(twice, "ID map")
    big = tmp_path / "big.yaml"
    with big.open("wb") as out:
        out.truncate(MAX_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ConfigError, match="more than a map file can be"):
        read_mapping(big, "ID map")


def test_an_empty_file_is_an_empty_map(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert load_id_map(path) == {}


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ssh_host", "-oProxyCommand=touch /tmp/pwned", "starts with '-'"),
        ("ssh_host", "host; reboot", "holds ';'"),
        ("ssh_host", "host\nProxyCommand x", "holds '\\n'"),
        ("pool", "$(reboot)", "holds '$'"),
        ("pool", "-volumes", "starts with '-'"),
        ("path", "/srv/volume-{id}`reboot`", "holds '`'"),
        ("path", "/srv/$(id)/volume-{id}", "holds '$'"),
        ("keyring", "relative/keyring", "must be an absolute path"),
        ("ceph_conf", "/etc/ceph/ceph.conf\n", "holds '\\n'"),
    ],
)
def test_storage_map_values_that_a_shell_or_ssh_would_act_on(
    key: str, value: str, expected: str, tmp_path: Path
) -> None:
    entry = {"driver": "file", "ssh_host": "src-storage", "path": "/srv/volume-{id}", key: value}
    if key in {"pool", "keyring", "ceph_conf"}:
        entry = {"driver": "rbd", "pool": "volumes", key: value}
    import yaml

    path = tmp_path / "storage.yaml"
    path.write_text(yaml.safe_dump({"src": {"b": entry}}))
    with pytest.raises(ConfigError) as exc:
        load_storage_map(path)
    message = _one_line(exc, path)
    assert expected in message and f"src.b.{key}" in message


def test_a_plain_storage_map_still_loads(tmp_path: Path) -> None:
    path = tmp_path / "storage.yaml"
    path.write_text(
        "src:\n  file:\n    driver: file\n    ssh_host: root@src-storage\n"
        "    path: /srv/cinder/volume-{id}\n  ceph:\n    driver: rbd\n    pool: volumes.ssd\n"
        "    ceph_conf: /etc/ceph/ceph.conf\n    user: cinder\n"
    )
    backend = load_storage_map(path).backend("src", "file")
    assert backend.volume_path("v1") == "/srv/cinder/volume-v1"


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("ssh_host", "-oProxyCommand=touch /tmp/pwned", "starts with '-'"),
        ("ssh_host", "host; reboot", "holds ';'"),
        ("ssh_host", "$(reboot)", "holds '$'"),
        ("ssh_host", "host\nProxyCommand x", "holds '\\n'"),
        ("instances_path", "/var/lib/nova/`reboot`", "holds '`'"),
        ("instances_path", "/var/lib/$(id)/instances", "holds '$'"),
        ("instances_path", "/var/lib/nova/instances; reboot", "holds ';'"),
        ("instances_path", "/var/lib/nova/instances\n", "holds '\\n'"),
        ("instances_path", "-/var/lib/nova/instances", "starts with '-'"),
        ("instances_path", "var/lib/nova/instances", "must be an absolute path"),
        ("instances_path", "/var/lib/nova/{id}", "holds '{'"),
    ],
)
def test_compute_host_values_that_a_shell_or_ssh_would_act_on(
    key: str, value: str, expected: str, tmp_path: Path
) -> None:
    import yaml

    entry = {"ssh_host": "src-compute", "instances_path": "/var/lib/nova/instances", key: value}
    path = tmp_path / "storage.yaml"
    path.write_text(yaml.safe_dump({"src": {"compute": {"src-compute": entry}}}))
    with pytest.raises(ConfigError) as exc:
        load_storage_map(path)
    message = _one_line(exc, path)
    assert expected in message and f"src.compute.src-compute.{key}" in message


@pytest.mark.parametrize("host", ["-oProxyCommand=x", "a b", "host\nx", "h;reboot", "$(x)", "a/b"])
def test_a_compute_host_name_that_a_shell_or_ssh_would_act_on_is_refused(
    host: str, tmp_path: Path
) -> None:
    import yaml

    entry = {"ssh_host": "src-compute", "instances_path": "/var/lib/nova/instances"}
    path = tmp_path / "storage.yaml"
    path.write_text(yaml.safe_dump({"src": {"compute": {host: entry}}}))
    with pytest.raises(ConfigError) as exc:
        load_storage_map(path)
    assert "src.compute has the host name" in _one_line(exc, path)


@pytest.mark.parametrize("name", ["-oProxyCommand=x", "", "a b", "host\n"])
def test_an_ssh_host_that_ssh_would_read_as_an_option_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match="is not a host name"):
        SshHost(name)


def test_the_host_comes_after_the_end_of_options() -> None:
    argv = SshHost("src-storage", "/etc/ssh_config").argv(["cat", "/x y"])
    assert argv[-3:] == ["--", "src-storage", "cat '/x y'"]
