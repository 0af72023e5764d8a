"""Errors of the SDN migration, as members of stackhop's error hierarchy.

Each one is a subclass of a class of :mod:`stackhop.errors`, so it keeps that
class's exit code; the message says what to do.
"""

from __future__ import annotations

from stackhop.errors import (
    AuthError,
    ConfigError,
    ConflictError,
    IntegrityError,
    StackhopError,
    VerificationError,
)


class ZooKeeperUnreachableError(StackhopError):
    """ZooKeeper does not answer at the given address."""

    exit_code = 5
    template = (
        "cannot reach ZooKeeper at {hosts}: {detail} (is it running, and is --zk HOST:PORT right?)"
    )


class NeutronDatabaseError(ConfigError):
    """The Neutron database cannot be reached or read."""

    template = "Neutron database {url}: {detail}"


class NeutronPermissionError(AuthError):
    """The database user lacks a privilege a step needs."""

    template = (
        "database user {user!r} lacks {missing} on {database} (needed to {purpose}); "
        "GRANT it, or use neutron.conf's user; nothing was changed"
    )


class BackupMissingError(ConfigError):
    template = "no backup file at {path}; take one with `stackhop sdn midonet backup -o FILE`"


class BackupExistsError(ConfigError):
    template = "{path} already exists; pass --force to overwrite it, or choose another -o FILE"


class BackupIntegrityError(IntegrityError):
    """A backup file that is damaged, truncated or edited."""

    template = (
        "backup {path} is damaged or was modified ({detail}); nothing was changed: "
        "use an intact backup file"
    )


class ConfigEditedError(ConflictError):
    """A config file changed by someone else since stackhop switched it."""

    template = (
        "{path} was edited since `switch-endpoints` (it matches neither the original nor the "
        "switched content); merge by hand, or pass --force to {action} anyway"
    )


class HookFailedError(StackhopError):
    """A --pre-hook or --post-hook command failed."""

    exit_code = 12
    template = "{which} command {command!r} failed with exit code {code} at step {step}{state}"


class RollbackIncompleteError(VerificationError):
    """After a rollback, something differs from the backup."""

    template = (
        "rollback did not restore everything: {detail}; re-run the same rollback command "
        "(it resumes), then check `stackhop sdn midonet status`"
    )
