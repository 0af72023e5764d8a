"""Switching the MidoNet API endpoints in config files, and reverting them byte for byte.

Files, relative to the config root, and the key holding the API URL:

* ``etc/neutron/plugin.ini``: ``[MIDONET] midonet_uri``
* ``.midonetrc``: ``[cli] api_url``

plus the operator's own ``~/.midonetrc`` (``[cli] api_url``; path
overridable with ``STACKHOP_MIDONETRC`` or ``--midonetrc``), kept in the
manifest under its absolute path. A file that is a symbolic link stays one:
the link's target is rewritten, and its owner, group and mode are kept.

A switch changes only the port of that URL, on that one line: every other
byte of the file stays. Before the first byte changes, each file is copied to
``.stackhop-sdn/endpoints/<name>.orig`` under the root and a ``manifest.json``
records the SHA-256 of the original and of the switched content, and the
file mode. That makes both directions idempotent: a file already in the
target state is left alone; a file in neither state was edited by someone
else, and stackhop stops instead of overwriting that edit.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from stackhop.errors import ConfigError, UsageError
from stackhop.sdn.errors import ConfigEditedError
from stackhop.sdn.zk_address import RC_ENV

#: (path relative to the config root, section, key) of every endpoint stackhop rewrites.
ENDPOINT_FILES: tuple[tuple[str, str, str], ...] = (
    ("etc/neutron/plugin.ini", "MIDONET", "midonet_uri"),
    (".midonetrc", "cli", "api_url"),
)
BACKUP_DIR = ".stackhop-sdn/endpoints"
MANIFEST = "manifest.json"
DEFAULT_PORT = 8181

_SECTION = re.compile(rb"^\s*\[([^\]]+)\]\s*$")


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _with_port(url: str, port: int, where: str) -> str:
    parts = urlsplit(url)
    if not parts.scheme or not parts.hostname:
        raise ConfigError(f"{where}: {url!r} is not an http(s) URL")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    userinfo = parts.netloc.rpartition("@")[0]
    netloc = (userinfo + "@" if userinfo else "") + f"{host}:{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def rewrite_endpoint(content: bytes, section: str, key: str, port: int, where: str) -> bytes:
    """``content`` with the port of ``[section] key`` set to ``port``; nothing else changes."""
    key_line = re.compile(rb"^(\s*" + re.escape(key.encode()) + rb"\s*[=:]\s*)(\S[^\r\n]*?)(\s*)$")
    lines = content.splitlines(keepends=True)
    current: bytes | None = None
    for index, line in enumerate(lines):
        body = line.rstrip(b"\r\n")
        ending = line[len(body) :]
        heading = _SECTION.match(body)
        if heading:
            current = heading.group(1).strip()
            continue
        if current is None or current.decode(errors="replace").lower() != section.lower():
            continue
        match = key_line.match(body)
        if match:
            url = match.group(2).decode()
            new_url = _with_port(url, port, where).encode()
            lines[index] = match.group(1) + new_url + match.group(3) + ending
            return b"".join(lines)
    raise ConfigError(
        f"{where} has no [{section}] {key} to rewrite; is this the right --config-root?"
    )


def _manifest_path(root: Path) -> Path:
    return root / BACKUP_DIR / MANIFEST


def read_manifest(root: Path) -> dict[str, Any] | None:
    """The switch manifest of ``root``; None when the endpoints are not switched."""
    path = _manifest_path(root)
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is unreadable ({exc}); restore it or remove {path.parent}"
        ) from exc
    return manifest if isinstance(manifest, dict) else None


def _write_atomically(
    path: Path, data: bytes, mode: int, owner: tuple[int, int] | None = None
) -> None:
    """Replace ``path``'s content; a symbolic link stays a link (its target is replaced)."""
    target = Path(os.path.realpath(path))
    temp = target.with_name(f".{target.name}.stackhop-tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode & 0o7777)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    if owner is not None and (os.stat(temp).st_uid, os.stat(temp).st_gid) != owner:
        os.chown(temp, *owner)
    os.chmod(temp, mode & 0o7777)
    os.replace(temp, target)


def file_identity(path: Path) -> dict[str, Any]:
    """What a revert must keep besides the bytes: mode, owner, group, link target."""
    st = path.stat()
    return {
        "mode": st.st_mode & 0o7777,
        "uid": st.st_uid,
        "gid": st.st_gid,
        "link": os.readlink(path) if path.is_symlink() else None,
    }


def _owner(entry: dict[str, Any]) -> tuple[int, int] | None:
    return (entry["uid"], entry["gid"]) if "uid" in entry else None


def identity_differences(path: Path, entry: dict[str, Any]) -> list[str]:
    """The ways ``path`` differs from the manifest's mode/owner/group/link (empty: none)."""
    now = file_identity(path)
    return [f"{name}" for name in ("link", "uid", "gid", "mode")
            if name in entry and now[name] != entry[name]]


def home_midonetrc() -> Path:
    """The operator's ``~/.midonetrc`` (``STACKHOP_MIDONETRC`` overrides it)."""
    return Path(os.environ.get(RC_ENV) or Path.home() / ".midonetrc")


def _has_key(path: Path, section: str, key: str) -> bool:
    try:
        rewrite_endpoint(path.read_bytes(), section, key, DEFAULT_PORT, str(path))
    except ConfigError:
        return False
    return True


def present_files(root: Path, midonetrc: Path | None = None) -> list[tuple[str, str, str]]:
    """The endpoint files that exist, keyed by path under ``root`` or absolute path.

    ``midonetrc`` (the operator's own file) counts only when it holds
    ``[cli] api_url`` (it may hold nothing but the ZooKeeper address) and is
    not one of the files under ``root``. ConfigError when no file is found.
    """
    if not root.is_dir():
        raise ConfigError(f"--config-root {root} is not a directory")
    found = [entry for entry in ENDPOINT_FILES if (root / entry[0]).is_file()]
    seen = {os.path.realpath(root / e[0]) for e in found}
    if (midonetrc is not None and midonetrc.is_file()
            and os.path.realpath(midonetrc) not in seen and _has_key(midonetrc, "cli", "api_url")):
        found.append((str(midonetrc.absolute()), "cli", "api_url"))
    if not found:
        names = " or ".join(e[0] for e in ENDPOINT_FILES)
        raise ConfigError(f"no {names} under --config-root {root}")
    return found


def plan_switch(root: Path, port: int, midonetrc: Path | None = None) -> dict[str, Any]:
    """The manifest of a switch of ``root`` to ``port``, computed without writing anything.

    With a switch already under way (a manifest exists) its manifest is
    returned as is, so that a resumed switch keeps the first backups.
    """
    if not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is not a TCP port")
    existing = read_manifest(root)
    if existing is not None:
        if existing.get("port") != port:
            raise UsageError(
                f"{root} is already switched to port {existing.get('port')}; "
                "run `switch-endpoints --revert` first"
            )
        return existing
    files: dict[str, Any] = {}
    for relative, section, key in present_files(root, midonetrc):
        path = root / relative  # an absolute key (the operator's ~/.midonetrc) stays itself
        original = path.read_bytes()
        switched = rewrite_endpoint(original, section, key, port, str(path))
        files[relative] = {
            "original_sha256": sha256(original),
            "switched_sha256": sha256(switched),
            **file_identity(path),
            "section": section,
            "key": key,
        }
    return {"cycle": uuid.uuid4().hex, "port": port, "files": files}


def save_backups(root: Path, manifest: dict[str, Any]) -> str:
    """Copy each original file byte for byte, then write the manifest (the commit point)."""
    backup_dir = root / BACKUP_DIR
    if read_manifest(root) is not None:
        return f"kept in {backup_dir}"
    backup_dir = root / BACKUP_DIR
    backup_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(backup_dir, 0o700)
    for relative, entry in manifest["files"].items():
        source = root / relative
        data = source.read_bytes()
        if sha256(data) != entry["original_sha256"]:
            raise ConfigEditedError(path=str(source), action="switch")
        _write_atomically(backup_dir / _backup_name(relative), data, 0o600)
    _write_atomically(_manifest_path(root), json.dumps(manifest, indent=2).encode(), 0o600)
    return f"in {backup_dir}"


def _backup_name(relative: str) -> str:
    return relative.replace("/", "__") + ".orig"


def switch_file(root: Path, relative: str, entry: dict[str, Any], port: int) -> str:
    """Switch one file; returns ``switched`` or ``already switched``."""
    path = root / relative
    current = path.read_bytes()
    digest = sha256(current)
    if digest == entry["switched_sha256"]:
        return "already switched"
    if digest != entry["original_sha256"]:
        raise ConfigEditedError(path=str(path), action="switch")
    new = rewrite_endpoint(current, entry["section"], entry["key"], port, str(path))
    _write_atomically(path, new, entry["mode"], _owner(entry))
    return "switched"


def revert_file(root: Path, relative: str, entry: dict[str, Any], force: bool) -> str:
    """Put one file back from its byte-exact backup: ``reverted`` or ``already original``."""
    path = root / relative
    backup = root / BACKUP_DIR / _backup_name(relative)
    original = backup.read_bytes()
    if sha256(original) != entry["original_sha256"]:
        raise ConfigError(f"backup {backup} does not match its manifest; it was modified")
    current = path.read_bytes() if path.exists() else None
    if current is not None and sha256(current) == entry["original_sha256"]:
        return "already original"
    if current is not None and sha256(current) != entry["switched_sha256"] and not force:
        raise ConfigEditedError(path=str(path), action="revert")
    if entry.get("link") and not path.is_symlink():
        # The file was a link: put the link back, then its target's content.
        path.unlink(missing_ok=True)
        os.symlink(entry["link"], path)
    _write_atomically(path, original, entry["mode"], _owner(entry))
    return "reverted"


def check_revertible(root: Path, manifest: dict[str, Any], force: bool) -> None:
    """Check every file and backup copy before a revert writes anything.

    A backup copy that no longer matches the manifest is an error; a file
    edited since the switch is one unless ``force``.
    """
    for relative, entry in manifest["files"].items():
        backup = root / BACKUP_DIR / _backup_name(relative)
        if not backup.is_file() or sha256(backup.read_bytes()) != entry["original_sha256"]:
            raise ConfigError(
                f"backup {backup} is missing or does not match its manifest; "
                "restore it, or revert the file by hand"
            )
        path = root / relative
        digest = sha256(path.read_bytes()) if path.is_file() else None
        if digest not in (entry["original_sha256"], entry["switched_sha256"]) and not force:
            raise ConfigEditedError(path=str(path), action="revert")


def reverted_correctly(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Files whose bytes or mode differ from the original (empty: revert is exact)."""
    wrong = []
    for relative, entry in manifest["files"].items():
        path = root / relative
        if not path.is_file() or sha256(path.read_bytes()) != entry["original_sha256"]:
            wrong.append(f"{relative} content")
        else:
            wrong += [f"{relative} {what}" for what in identity_differences(path, entry)]
    return wrong


def drop_backups(root: Path) -> None:
    """Remove the backups once a revert is verified (the next switch takes fresh ones)."""
    shutil.rmtree(root / ".stackhop-sdn" / "endpoints", ignore_errors=False)

