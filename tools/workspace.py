"""The workspace: where data may be read from, where runs keep their artifacts, the shared store.

Every path a client names goes through `Workspace.resolve_path`, which resolves symlinks and
refuses anything outside the workspace or an explicitly allowed data root.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ml_expert.memory import MemoryStore
from ml_expert.tools.errors import InvalidInputError, NotFoundError, PathNotAllowedError

STATE_DIR = ".ml-expert"
DEFAULT_SEED = 42


def new_id(prefix: str) -> str:
    """A short readable id such as `run_5f2c9a1b`."""
    return f"{prefix}_{secrets.token_hex(4)}"


@dataclass
class Workspace:
    """A workspace root, the data roots a client may also read from, and the shared memory store."""

    root: Path
    allowed_roots: tuple[Path, ...] = ()
    max_value_bytes: int = 1024 * 1024
    db_path: Path | None = None
    jobs: Any = field(default=None, repr=False)  # a JobManager, attached by the server or the CLI
    _store: MemoryStore | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser().resolve()
        self.allowed_roots = tuple(Path(p).expanduser().resolve() for p in self.allowed_roots)
        self.root.mkdir(parents=True, exist_ok=True)
        if self.db_path is None:
            self.db_path = self.home / "memory.db"

    @property
    def home(self) -> Path:
        return self.root / STATE_DIR

    @property
    def store(self) -> MemoryStore:
        if self._store is None:
            self._store = MemoryStore(self.db_path, max_value_bytes=self.max_value_bytes)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    def run_dir(self, run_id: str) -> Path:
        return self.home / "runs" / run_id

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
        if must_exist and not resolved.exists():
            raise NotFoundError(f"{kind} {raw!r} does not exist (looked at {resolved}). Check the name and the folder.")
        return resolved

    def relative(self, path: Path) -> str:
        """A path as the client should see it: relative to the workspace when inside it."""
        try:
            return str(Path(path).relative_to(self.root))
        except ValueError:
            return str(path)


def write_json(path: Path, data: Any) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
