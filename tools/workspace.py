"""The workspace: where data may be read from, where runs keep their artifacts, the shared stores.

Every path a client names goes through `Workspace.resolve_path`, which resolves symlinks and
refuses anything outside the workspace or an explicitly allowed data root. A workspace is built
from `Settings`; the job manager passes the same settings to its workers.
"""

from __future__ import annotations

import json
import os
import re
import secrets
from pathlib import Path
from typing import Any

from ml_expert.memory import Database, DigestStore, JobStore, MemoryStore, RunStore
from ml_expert.memory.errors import InvalidInputError, NotFoundError, PathNotAllowedError
from ml_expert.tools.settings import Settings

STATE_DIR = ".ml-expert"
DEFAULT_SEED = 42
NAME_MAX_BYTES = 255  # the longest file or folder name of common file systems (ext4, APFS, NTFS in UTF-16 units)
# What the ids new_id makes look like (prefix, 8 hex digits; up to 32 accepted): the only ids that ever reach a path.
ID_KINDS = {
    "run": ("run_id", "analyze_data or prepare_data"),
    "mdl": ("model_id", "train"),
    "job": ("job_id", "train or another job tool"),
}
ID_PATTERN = re.compile(r"(run|mdl|job)_[0-9a-f]{8,32}")


def new_id(prefix: str) -> str:
    """A short readable id such as `run_5f2c9a1b`."""
    return f"{prefix}_{secrets.token_hex(4)}"


def is_id(value: object, prefix: str) -> bool:
    """Whether value is an id of the kind `prefix` (run, mdl, job) as new_id makes it."""
    found = ID_PATTERN.fullmatch(value) if isinstance(value, str) else None
    return found is not None and found.group(1) == prefix


def check_id(value: object, prefix: str) -> str:
    """An id of the kind `prefix` (run, mdl, job) as new_id makes it, or InvalidInputError. Every id a client passes
    is checked here before it names a folder or a file, so that no id can lead outside the workspace."""
    name, source = ID_KINDS[prefix]
    if not is_id(value, prefix):
        shown = repr(value[:80]) if isinstance(value, str) else type(value).__name__
        raise InvalidInputError(
            f"{name} must be an id like '{prefix}_5f2c9a1b' ('{prefix}_' and 8 to 32 lowercase hex digits, as "
            f"returned by {source}); received {shown}. Pass an id exactly as a tool returned it (list_runs and "
            "list_jobs show them)."
        )
    return str(value)


class Workspace:
    """A workspace root with its settings, the stores in `<root>/.ml-expert/memory.db`, and a job manager."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, settings: Settings | None = None, **kw: Any):
        """`Workspace(root, allow_paths=…)` or `Workspace(settings=…)`; keywords are Settings fields."""
        if settings is None:
            settings = Settings.from_env({}, workspace=root, **kw)
        self.settings = settings
        self.root.mkdir(parents=True, exist_ok=True)
        self.jobs: Any = None  # a JobManager, attached by the server or the CLI
        self._database: Database | None = None
        self._stores: dict[str, Any] = {}

    @property
    def root(self) -> Path:
        return self.settings.workspace

    @property
    def allowed_roots(self) -> tuple[Path, ...]:
        return self.settings.allow_paths

    @property
    def home(self) -> Path:
        return self.root / STATE_DIR

    @property
    def db_path(self) -> Path:
        return self.home / "memory.db"

    @property
    def database(self) -> Database:
        if self._database is None:
            self._database = Database(self.db_path)
        return self._database

    def _store(self, name: str, make: Any) -> Any:
        """One store object per workspace, sharing the one database."""
        if name not in self._stores:
            self._stores[name] = make(self.database)
        return self._stores[name]

    @property
    def store(self) -> MemoryStore:
        """The namespaced key-value memory."""
        return self._store("memory", lambda db: MemoryStore(db, max_value_bytes=self.settings.max_value_bytes))

    @property
    def runs(self) -> RunStore:
        return self._store("runs", RunStore)

    @property
    def job_store(self) -> JobStore:
        return self._store("jobs", JobStore)

    @property
    def digests(self) -> DigestStore:
        return self._store("digests", DigestStore)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()
            self._database = None
            self._stores.clear()

    def run_dir(self, run_id: str) -> Path:
        """The artifact folder of a run; the run id is checked first (InvalidInputError for anything else)."""
        return self.home / "runs" / check_id(run_id, "run")

    def resolve_path(self, path: str | os.PathLike[str], *, must_exist: bool = True, kind: str = "path") -> Path:
        """Resolve a client-named path (relative to the workspace) and check it is allowed."""
        raw = str(path).strip()
        if not raw or "\x00" in raw:
            raise InvalidInputError(f"{kind} must be a non-empty path; received {str(path)!r}.")
        candidate = Path(raw).expanduser()
        if not candidate.is_absolute():
            candidate = self.root / candidate
        resolved = candidate.resolve()
        roots = (self.root, *self.allowed_roots)
        if not any(resolved == r or r in resolved.parents for r in roots):
            raise PathNotAllowedError(
                f"{kind} {raw!r} resolves to {resolved}, which is outside the workspace {self.root}"
                + (f" and the allowed data roots {[str(r) for r in self.allowed_roots]}" if self.allowed_roots else "")
                + ". Copy the file into the workspace, or start the server with --allow-path DIR."
            )
        name = next((part for part in resolved.parts if len(os.fsencode(part)) > NAME_MAX_BYTES), None)
        if name is not None:  # the file system refuses it: exists() raised ENAMETOOLONG, an empty error for a client
            raise InvalidInputError(
                f"{kind} has a name of {len(os.fsencode(name))} bytes ({name[:60]!r}…); file systems allow at "
                f"most {NAME_MAX_BYTES} bytes per name. Use a shorter file or folder name."
            )
        if must_exist and not resolved.exists():
            raise NotFoundError(f"{kind} {raw!r} does not exist (looked at {resolved}). Check the name and the folder.")
        return resolved

    def relative(self, path: Path) -> str:
        """A path as the client should see it: relative to the workspace when inside it."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)

    def wait_for(self, wait_seconds: float | None) -> float:
        """A tool's wait: the call's value, else the server's --wait-seconds."""
        return self.settings.wait_seconds if wait_seconds is None else wait_seconds


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
