"""The error hierarchy: every failure an operator can meet, with what to do and an exit code.

Each class carries a one-line message template and its own exit code; the CLI
prints ``stackhop: <message>`` and exits with that code (a traceback only with
``-v``). The table of classes and codes is documented in ``docs/errors.md``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class StackhopError(Exception):
    """Base of every error stackhop reports to the operator.

    Subclasses set ``exit_code`` and may set ``template``, formatted with the
    keyword arguments given to the constructor. A positional message overrides
    the template.
    """

    exit_code: ClassVar[int] = 1
    template: ClassVar[str] = "{detail}"

    def __init__(self, message: str | None = None, **fields: Any) -> None:
        self.fields = fields
        if message is None:
            try:
                message = self.template.format(**fields)
            except (KeyError, IndexError):
                message = f"{self.template} {fields}"
        super().__init__(message)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class UsageError(StackhopError):
    """Bad command-line input: a wrong flag combination, a malformed value."""

    exit_code = 2


class ConfigError(StackhopError):
    """Configuration that cannot be used: an unknown cloud, a missing file."""

    exit_code = 3


class CloudUnknownError(ConfigError):
    template = (
        "cloud {cloud!r} is not configured; known clouds: {known} "
        "(check clouds.yaml, OS_CLIENT_CONFIG_FILE or OS_CLOUD)"
    )


class AuthError(StackhopError):
    """The cloud refused our credentials."""

    exit_code = 4
    template = (
        "cannot authenticate to cloud {cloud!r}: {detail} "
        "(check the user, password and project in clouds.yaml)"
    )


class CloudUnreachableError(StackhopError):
    """The cloud's endpoints do not answer."""

    exit_code = 5
    template = (
        "cannot reach cloud {cloud!r} at {url}: {detail} (is the cloud up and the URL right?)"
    )


class CapabilityError(StackhopError):
    """The cloud lacks an API feature the command needs."""

    exit_code = 6
    template = "cloud {cloud!r} lacks {feature}: {detail}"


class ArchiveError(StackhopError):
    """An archive that cannot be read or written safely."""

    exit_code = 7


class ArchiveFormatError(ArchiveError):
    template = (
        "archive {path} has format version {found}; this stackhop reads version {supported} "
        "({hint})"
    )


class IntegrityError(StackhopError):
    """Data does not match its checksum: a tampered or truncated archive, a bad copy."""

    exit_code = 8


class JournalError(StackhopError):
    """The journal cannot be opened, is from a newer stackhop, or is inconsistent."""

    exit_code = 9


class ConflictError(StackhopError):
    """The destination holds something that contradicts what we would write."""

    exit_code = 10


class TransientError(StackhopError):
    """A failure worth retrying: 5xx, 429, a dropped connection."""

    exit_code = 11

    def __init__(self, message: str | None = None, retry_after: float | None = None, **fields: Any):
        super().__init__(message, **fields)
        self.retry_after = retry_after


class ConnectionCutError(TransientError):
    """A connection that worked was cut mid-transfer (an ssh session killed, a link down):
    retried, and the retry resumes from what was confirmed."""


class OperationFailedError(StackhopError):
    """One or more operations of a run failed; the journal has each error."""

    exit_code = 12
    template = (
        "{failed} operation(s) failed; see `stackhop status --run {run}` "
        "and re-run the same command to resume"
    )


class VerificationError(StackhopError):
    """The destination differs from the source after a run."""

    exit_code = 13


class Interrupted(StackhopError):
    """The operator pressed Ctrl-C; in-flight work was finished or marked."""

    exit_code = 130
    template = "interrupted; re-run the same command to resume (run {run})"


class NotAnArchiveError(ArchiveError):
    """The file given as an archive is not one stackhop wrote."""

    template = (
        "{path} is not a stackhop archive ({reason}); pass a file written by `stackhop export`"
    )


class ArchiveUnsafeError(ArchiveError):
    """An archive member that could trick a reader: absolute path, '..', link, device."""

    template = (
        "archive {path} holds an unsafe member {member!r} ({reason}); refusing to read it, "
        "use an archive written by `stackhop export`"
    )


class ArchiveSecretError(ArchiveError):
    """A record about to be archived holds a password, token or private key."""

    template = (
        "refusing to archive a {kind} record: field {field!r} holds a secret; archives never "
        "carry passwords, tokens or private keys, so drop the field from the export"
    )


class ArchiveIntegrityError(IntegrityError):
    """An archive whose content does not match its manifest: damaged, truncated or edited."""

    template = (
        "archive {path} is damaged or was modified: {detail}; "
        "restore a good copy or export again"
    )


class UnmappedReferenceError(ConflictError):
    """A record refers to a source object with no known destination counterpart."""

    template = (
        "{kind} {identity!r}: field {field} refers to {target} {source_id!r}, which has no "
        "destination ID ({hint})"
    )
