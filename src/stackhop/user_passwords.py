"""Passwords for the users ``keystone.user`` creates (``--user-passwords random|file|none``).

Keystone never returns a password, so a moved user cannot keep theirs. The
operator chooses what a created user gets:

- ``none`` (the default): no password; the user cannot log in until the
  operator sets one;
- ``random``: a generated password per created user, appended as
  ``"domain/name": "password"`` (a YAML line) to a file only its owner may
  read (0600), which the operator hands out;
- ``file``: the operator's YAML map ``name: password`` or
  ``domain/name: password`` (read with :mod:`stackhop.mapfile`).

A password never enters a record, the journal, an event or a log line:
records are journaled and printed, so the password source is handed to the
kind out of band (:func:`issuing`), for the duration of one run.
"""

from __future__ import annotations

import json
import os
import secrets
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from stackhop.errors import ConfigError
from stackhop.mapfile import read_mapping

MODES = ("none", "random", "file")
#: Length of a generated password (URL-safe characters: about 190 bits).
RANDOM_LENGTH = 32


@dataclass
class PasswordIssuer:
    """What a created user's password is, by mode (see the module docstring)."""

    mode: str = "none"
    #: ``random``: the file the generated passwords are appended to; ``file``: the map read.
    path: Path | None = None
    given: Mapping[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def password_for(self, domain: str, name: str) -> str | None:
        """The password a user about to be created gets (None: none), ``random`` ones not
        yet recorded: :meth:`record` them once the user exists."""
        if self.mode == "random":
            return secrets.token_urlsafe(RANDOM_LENGTH)[:RANDOM_LENGTH]
        if self.mode == "file":
            found = self.given.get(f"{domain}/{name}", self.given.get(name))
            if found is None:
                raise ConfigError(
                    f"--user-passwords file: {self.path} gives no password for user "
                    f"{domain}/{name}; add '{domain}/{name}: PASSWORD' or use random"
                )
            return found
        return None

    def record(self, domain: str, name: str, password: str | None) -> None:
        """Append a generated password to the 0600 file (``random`` only)."""
        if self.mode != "random" or password is None or self.path is None:
            return
        line = f"{json.dumps(f'{domain}/{name}')}: {json.dumps(password)}\n"
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.fchmod(fd, 0o600)  # an existing file too: it holds passwords
                os.write(fd, line.encode())
            finally:
                os.close(fd)


def default_file(journal: str) -> Path:
    """Where ``random`` writes when ``--user-passwords-file`` is not given: next to the
    journal file (the working directory for a journal that is a database URL)."""
    if "://" in journal:
        return Path("stackhop-user-passwords.yaml")
    return Path(journal).with_name(f"{Path(journal).name}.user-passwords.yaml")


def issuer_for(mode: str, path: str | None, journal: str) -> PasswordIssuer:
    """The issuer for ``--user-passwords MODE`` and ``--user-passwords-file PATH``."""
    if mode not in MODES:
        raise ConfigError(f"--user-passwords {mode!r}: use one of {', '.join(MODES)}")
    if mode == "none":
        return PasswordIssuer()
    if mode == "random":
        return PasswordIssuer("random", Path(path) if path else default_file(journal))
    if not path:
        raise ConfigError("--user-passwords file needs --user-passwords-file FILE (YAML map "
                          "name or domain/name: password)")
    given = read_mapping(Path(path), "user passwords")
    bad = [k for k, v in given.items() if not isinstance(v, str) or not v]
    if bad:
        raise ConfigError(f"user passwords {path}: {bad[0]!r} needs a non-empty string password")
    return PasswordIssuer("file", Path(path), {str(k): str(v) for k, v in given.items()})


_current = PasswordIssuer()
_current_lock = threading.Lock()


@contextmanager
def issuing(issuer: PasswordIssuer) -> Iterator[PasswordIssuer]:
    """Make ``issuer`` the one :func:`current` returns while a run applies its operations
    (kinds are stateless and the engine's ``create`` carries records only)."""
    global _current
    with _current_lock:
        previous, _current = _current, issuer
    try:
        yield issuer
    finally:
        with _current_lock:
            _current = previous


def current() -> PasswordIssuer:
    """The issuer of the run in progress (``none`` outside :func:`issuing`)."""
    return _current
