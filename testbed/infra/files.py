"""Writing the infrastructure's generated files: atomically, with the right mode.

Configuration is regenerated on every ``up``; a file whose content did not
change is left untouched so daemons that watch mtimes see nothing new.
"""

from __future__ import annotations

import os
from pathlib import Path


def write_file(path: Path, text: str, mode: int = 0o644) -> bool:
    """Write ``text`` to ``path`` (atomically, with ``mode``); return True if it changed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except OSError:
        pass
    # A unique temporary name: two `up` runs may write the same file at once.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.chmod(tmp, mode)  # the umask may have narrowed it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return True


def ini(sections: dict[str, dict[str, object]]) -> str:
    """Render an INI-style file (my.cnf, ceph.conf) from ordered sections."""
    out: list[str] = []
    for section, options in sections.items():
        out.append(f"[{section}]")
        out += [f"{key} = {value}" for key, value in options.items()]
        out.append("")
    return "\n".join(out)
