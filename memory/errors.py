"""The few exceptions ml-expert raises on purpose (memory, tools and server all use these).

Every message says what must hold, what was received, and what to do next. The server maps
`MLExpertError` to the protocol's `ToolError` in one place, so these messages reach the client.
"""

from __future__ import annotations


class MLExpertError(Exception):
    """Base class for every error ml-expert raises deliberately."""


class InvalidInputError(MLExpertError, ValueError):
    """An argument or a data file is not what the tool needs."""


class NotFoundError(MLExpertError, LookupError):
    """A key, run, model, job, file or column does not exist."""


class PathNotAllowedError(MLExpertError, PermissionError):
    """A path resolves outside the workspace and the allowed data roots."""


class ConflictError(MLExpertError, RuntimeError):
    """The request clashes with the current state (e.g. a phase that has not run yet)."""


class TrainingError(MLExpertError, RuntimeError):
    """Training failed in a way the user can act on (NaN loss, worker crash)."""


class IntegrityError(MLExpertError, PermissionError):
    """A file the server would load does not match the digest it recorded when it wrote it."""


class BusyError(MLExpertError, RuntimeError):
    """The database's write lock was held by another process for longer than a call may wait."""
