"""Settings: parsed once (CLI flags over ML_EXPERT_* environment over defaults), then passed explicitly.

The server builds its `Workspace` from them, and the job manager hands the same settings to every
worker process (as JSON), so a worker allows exactly the data roots and limits its server allows.
Every default is defined here once.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from ml_expert.memory import DEFAULT_MAX_VALUE_BYTES

DEFAULT_WAIT_SECONDS = 45.0
DEFAULT_MAX_JOBS = 1
DEFAULT_MAX_FILE_BYTES = 2 * 1024**3
MAX_WAIT_SECONDS = 600.0
SETTINGS_ENV = "ML_EXPERT_SETTINGS_JSON"  # how a worker process receives its server's settings
THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "TF_NUM_INTRAOP_THREADS",
)


class Settings(BaseModel):
    """Everything the server and its workers need to know, fixed at start."""

    model_config = ConfigDict(frozen=True)

    workspace: Path
    allow_paths: tuple[Path, ...] = ()
    max_jobs: int = Field(DEFAULT_MAX_JOBS, ge=1)
    wait_seconds: float = Field(DEFAULT_WAIT_SECONDS, ge=0, le=MAX_WAIT_SECONDS)
    max_value_bytes: int = Field(DEFAULT_MAX_VALUE_BYTES, ge=1)
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, ge=1, description="Largest dataset file a tool reads.")
    dask_scheduler: str | None = Field(
        None, description="A dask.distributed scheduler (tcp://HOST:8786) for the auto search's fold fits."
    )
    fit_helper: bool = Field(
        True,
        description="Whether the auto search may start a helper process to fit folds two at a time on 2+ cores "
        "(ML_EXPERT_FIT_HELPER=0 turns it off, e.g. on a machine shared with other jobs).",
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults <- environment (ML_EXPERT_*) <- explicit overrides (CLI flags)."""
        env = os.environ if env is None else env
        values: dict[str, object] = {
            "workspace": Path(env.get("ML_EXPERT_WORKSPACE") or "."),
            "allow_paths": tuple(Path(p) for p in env.get("ML_EXPERT_ALLOW_PATHS", "").split(os.pathsep) if p),
            "max_jobs": int(env.get("ML_EXPERT_MAX_JOBS") or DEFAULT_MAX_JOBS),
            "wait_seconds": float(env.get("ML_EXPERT_WAIT_SECONDS") or DEFAULT_WAIT_SECONDS),
            "max_file_bytes": int(env.get("ML_EXPERT_MAX_FILE_BYTES") or DEFAULT_MAX_FILE_BYTES),
            "dask_scheduler": env.get("ML_EXPERT_DASK_SCHEDULER") or None,
            "fit_helper": env.get("ML_EXPERT_FIT_HELPER", "1").strip().lower() not in ("0", "false", "no", "off"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        values["workspace"] = Path(values["workspace"]).expanduser().resolve()  # type: ignore[arg-type]
        values["allow_paths"] = tuple(Path(p).expanduser().resolve() for p in values["allow_paths"])  # type: ignore[attr-defined]
        return cls.model_validate(values)


def limit_native_threads(threads: int | None = None) -> int:
    """Cap OpenMP/BLAS/TensorFlow pools for this process and its children (unless the user set them).

    On 2 cores an unlimited OpenMP pool made a 0.15 s HistGradientBoosting fit take 6–65 s under load.
    """
    n = threads or max(1, (os.cpu_count() or 1))
    for var in THREAD_VARS:
        os.environ.setdefault(var, str(n))
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return n
